"""Fresh spawns go through the queue's discipline while anyone waits (issue 12): on a real
database, through the core's own allocate and try_start, the same calls the spawner makes."""

import datetime as dt

import pytest
import sqlalchemy as sa

from hub_plugins.queue.store import QueueAhead
from hub_plugins.spawn.request import SpawnRequest
from hub_plugins.spawn.messages import capacity_message
from hub_plugins.store.allocator import Owner, QuotaRefused
from hub_plugins.store.models import QueueEntry, utcnow
from tests.support.gpulab import gpulab_core

GPU = "A100-80GB"


@pytest.fixture
def core(tmp_path):
    with gpulab_core(tmp_path, f"4x{GPU}",
                     quotas={"default": {"max_gpus": 4, "max_servers": 2}}) as c:
        yield c


def ask(core, gpus: int, **extras) -> SpawnRequest:
    return SpawnRequest(core.catalog.get("minimal"), gpus, GPU, tuple(extras.items()))


def owner(i: int, name: str) -> Owner:
    return Owner(i, name, "")


def test_a_newcomer_waits_behind_the_head_and_the_head_starts_when_the_others_stop(core):
    for i in range(4):
        core.allocate(owner(i + 1, f"u{i}"), ask(core, 1), [])
    big = owner(10, "big")
    entry, _ = core.queue.enqueue(big, {}, [GPU], 4)
    waiting = core.queue_try_start(entry, big, ask(core, 4), [], 0)
    assert (waiting.state, waiting.position, waiting.reason) == ("waiting", 1, "reserved")
    assert waiting.estimate is not None  # the head's reservation says when
    core.release(owner(1, "u0"))  # one GPU frees up: it is held for the head

    with pytest.raises(QueueAhead) as refused:
        core.allocate(owner(20, "late"), ask(core, 1), [])
    assert refused.value.waiting == 1 and refused.value.free == 1
    message = capacity_message(refused.value, core.availability())
    assert "1 request(s) are waiting for GPUs before yours" in message and "Wait in the queue" in message
    # a request that ends before the head could start anyway may use the held GPU (backfill)
    short = core.allocate(owner(21, "short"), ask(core, 1, runtime=600), [])
    assert short.count == 1
    core.release(owner(21, "short"))

    for i in (2, 3):
        core.release(owner(i, f"u{i - 1}"))
        assert core.queue_try_start(entry, big, ask(core, 4), [], 0).state == "waiting"
    core.release(owner(4, "u3"))
    started = core.queue_try_start(entry, big, ask(core, 4), [], 0)
    assert started.state == "started" and len(started.allocation.devices) == 4
    assert core.queue.ordered() == []  # it left the queue in the same transaction


def test_with_nobody_waiting_a_fresh_spawn_is_placed_directly(core):
    a = core.allocate(owner(1, "ann"), ask(core, 2), [])
    assert len(a.devices) == 2
    # a request nobody waits on any more (its hub died) holds nothing back
    stale, _ = core.queue.enqueue(owner(2, "gone"), {}, [GPU], 4)
    q = QueueEntry.__table__
    with core.db.engine.begin() as conn:  # not looked at for longer than lost_after_seconds
        conn.execute(sa.update(q).where(q.c.id == stale).values(heartbeat_at=utcnow() - dt.timedelta(hours=1)))
    assert len(core.allocate(owner(3, "bob"), ask(core, 2), []).devices) == 2


def test_a_request_over_quota_is_refused_at_once_while_others_wait(core):
    """As when nobody waits: before, the queue's discipline answered first, so the request waited
    its turn (REST: 202, queued) and was refused only once GPUs freed up for it."""
    core.allocate(owner(1, "ann"), ask(core, 2), [])  # ann holds 2 of her quota's 4
    core.allocate(owner(2, "u0"), ask(core, 2), [])  # and the hub is full
    big = owner(10, "big")
    entry, _ = core.queue.enqueue(big, {}, [GPU], 4)
    assert core.queue_try_start(entry, big, ask(core, 4), [], 0).state == "waiting"
    second = Owner(1, "ann", "second")
    with pytest.raises(QuotaRefused) as while_waiting:
        core.allocate(second, ask(core, 3), [])
    with pytest.raises(QueueAhead):  # within her quota she waits her turn, as before
        core.allocate(second, ask(core, 2), [])
    core.queue.remove(entry)
    with pytest.raises(QuotaRefused) as nobody_waiting:
        core.allocate(second, ask(core, 3), [])
    assert while_waiting.value.decision.message == nobody_waiting.value.decision.message
    assert "You asked for 3 GPUs" in while_waiting.value.decision.message

