"""The culler's reclaim step (services/culler/reclaim.py) on a real database, with the hub's API
stood in for: it warns once, stops when the grace has passed, and calls a reclaim off when nobody
within quota waits any more."""

import asyncio
import datetime as dt
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from hub_plugins.spawn.request import SpawnRequest
from hub_plugins.store.allocator import Owner
from hub_plugins.store.models import Event, UsageRecord
from services.culler.reclaim import reclaim_round
from tests.support.gpulab import gpulab_core

GPU = "A100-80GB"
UTC = dt.timezone.utc


@pytest.fixture
def core(tmp_path):
    with gpulab_core(tmp_path, f"4x{GPU}",
                     quotas={"default": {"max_gpus": 2, "max_servers": 4}},
                     queue_settings={"lost_after_seconds": 86400, "borrowing": {
        "enabled": True, "groups": ["borrowers"], "grace_minutes": 5, "reclaim_after_minutes": 0}}) as c:
        yield c


class FakeCuller:
    """What reclaim_round uses of the Culler: its core, the running settings, webhooks, _act."""

    def __init__(self, core):
        self.core = core
        self.live = SimpleNamespace(current=SimpleNamespace(core=core.settings))
        self.hooks, self.stopped = [], []

    async def _webhook(self, a, users):
        self.hooks.append((a.kind, a.reason, a.user, a.server))

    async def _act(self, a, users):
        self.stopped.append((a.user, a.server, a.reason))


def ask(core, gpus, **extras):
    return SpawnRequest(core.catalog.get("minimal"), gpus, GPU, tuple(extras.items()))


def setup(core):
    core.allocate(Owner(1, "ann", ""), ask(core, 1), ["borrowers"])
    for name in ("b1", "b2", "b3"):
        core.allocate(Owner(1, "ann", name), ask(core, 1, preemptible=True), ["borrowers"])
    bob = Owner(2, "bob", "")
    entry, _ = core.queue.enqueue(bob, {"gpus": 2}, [GPU], 2)
    assert core.queue_try_start(entry, bob, ask(core, 2), [], 0).state == "waiting"


def test_warn_then_stop_after_the_grace(core):
    setup(core)
    culler, now = FakeCuller(core), dt.datetime.now(UTC)
    warned = asyncio.run(reclaim_round(culler, [], now))
    # two of her three borrowed servers, the youngest first; never her server within quota
    assert [(a.kind, a.server) for a in warned] == [("warn", "b3"), ("warn", "b2")]
    assert "will be stopped in 5 min" in warned[0].message and culler.stopped == []
    assert asyncio.run(reclaim_round(culler, [], now + dt.timedelta(minutes=1))) == []  # warned once
    with core.db.read() as s:
        events = [(e.kind, e.reason, e.server_name) for e in s.scalars(sa.select(Event))]
        pending = {r.server_name: r.pending_reason for r in s.scalars(sa.select(UsageRecord))}
    assert events.count(("warned", "reclaim", "b3")) == 1 and pending["b3"].startswith("reclaimed: ")
    assert pending[""] == "" and pending["b1"] == ""
    asyncio.run(reclaim_round(culler, [], now + dt.timedelta(minutes=5, seconds=1)))
    assert sorted(culler.stopped) == [("ann", "b2", "reclaim"), ("ann", "b3", "reclaim")]


def test_called_off_when_nobody_waits_any_more(core):
    setup(core)
    culler, now = FakeCuller(core), dt.datetime.now(UTC)
    assert len(asyncio.run(reclaim_round(culler, [], now))) == 2
    core.queue.remove(core.queue.entries()[0].id)  # bob gave up
    asyncio.run(reclaim_round(culler, [], now + dt.timedelta(minutes=1)))
    assert asyncio.run(reclaim_round(culler, [], now + dt.timedelta(minutes=6))) == [] and culler.stopped == []
    with core.db.read() as s:
        assert all(r.reclaim_at is None and r.pending_reason == "" for r in s.scalars(sa.select(UsageRecord)))
