"""Reclaim's database side on a real database: the choice reads the real queue and servers,
never picks a server within quota, does not pick one being reclaimed twice, and is called off
when nobody within quota waits any more."""

import datetime as dt

import pytest
import sqlalchemy as sa

from hub_plugins.queue.reclaim_store import Reclaim, ReclaimStore
from hub_plugins.spawn.request import SpawnRequest
from hub_plugins.store.allocator import Owner
from hub_plugins.store.models import UsageRecord, utcnow
from tests.support.gpulab import gpulab_core

GPU = "A100-80GB"
LATER = dt.timedelta(minutes=11)  # past the default reclaim_after (10 min)


@pytest.fixture
def core(tmp_path):
    # the tests look ahead in time: the waiting request must not count as lost meanwhile
    with gpulab_core(tmp_path, f"4x{GPU}",
                     quotas={"default": {"max_gpus": 1, "max_servers": 4}, "groups": {"big": {"max_gpus": 4}}},
                     queue_settings={"borrowing": {"enabled": True, "groups": ["borrowers"]},
                                     "lost_after_seconds": 86400}) as c:
        yield c


def ask(core, gpus: int, **extras) -> SpawnRequest:
    return SpawnRequest(core.catalog.get("minimal"), gpus, GPU, tuple(extras.items()))


def start(core, user_id, user, server, borrowed):
    core.allocate(Owner(user_id, user, server), ask(core, 1, preemptible=borrowed), ["borrowers"])


def bob_waits(core, gpus: int) -> None:
    bob = Owner(9, "bob", "")
    entry, _ = core.queue.enqueue(bob, {"gpus": gpus}, [GPU], gpus)
    assert core.queue_try_start(entry, bob, ask(core, gpus), ["big"], 0).state == "waiting"


def test_within_quota_servers_are_never_reclaimed(core):
    start(core, 1, "ann", "", False)
    start(core, 2, "cal", "", False)
    start(core, 1, "ann", "b1", True)
    start(core, 3, "dan", "", False)
    bob_waits(core, 4)
    store = ReclaimStore(core.queue)
    now = utcnow()
    assert store.choose(core.inventory(), now, LATER) == ([], True)  # he has not waited long enough
    # taking back every borrowed server would not make 4 GPUs: nobody's work stops for nothing
    assert store.choose(core.inventory(), now + LATER, LATER / 2) == ([], True)


def test_the_youngest_borrowed_server_is_warned_once_and_called_off_when_nobody_waits(core):
    start(core, 1, "ann", "", False)
    start(core, 1, "ann", "b1", True)
    start(core, 1, "ann", "b2", True)
    bob_waits(core, 2)
    store = ReclaimStore(core.queue)
    later = utcnow() + LATER
    chosen, wanted = store.choose(core.inventory(), later, LATER / 2)
    assert wanted and [(r.label, r.for_user) for r in chosen] == [("ann:b2", "bob")]
    assert store.warn(chosen[0], later + dt.timedelta(minutes=5), "reclaimed: warned")
    assert not store.warn(chosen[0], later, "reclaimed: again")  # marked already
    # b2 is being reclaimed: counted as room for bob, nothing more is chosen
    assert store.choose(core.inventory(), later, LATER / 2) == ([], True)
    assert store.due(later) == [] and [r.label for r in store.due(later + dt.timedelta(minutes=5))] == ["ann:b2"]
    # bob gives up: the reclaim not yet due is called off
    core.queue.cancel("bob")
    core.queue.remove(core.queue.entries()[0].id)
    assert store.choose(core.inventory(), later, LATER / 2) == ([], False)
    assert store.call_off(later) == 1 and store.due(later + dt.timedelta(hours=1)) == []
    with core.db.read() as s:
        b2 = s.scalars(sa.select(UsageRecord).where(UsageRecord.server_name == "b2")).one()
        assert (b2.reclaim_at, b2.pending_reason) == (None, "")


def test_a_server_within_quota_is_not_marked_even_if_asked(core):
    start(core, 1, "ann", "", False)
    bob_waits(core, 4)
    rec = core.usage.records(open_only=True)[0]
    assert not ReclaimStore(core.queue).warn(Reclaim(rec.spawn_id, "ann", "", 1), utcnow(), "reclaimed: no")
