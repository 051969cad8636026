"""The reconcile's decisions, pure: what runs, what gpulab holds and what the hub knows in; what
to stop, free and close out."""

from __future__ import annotations

import datetime as dt

import pytest

from hub_plugins.reconcile.decide import Found, Known, OpenRecord, Row, decide
from hub_plugins.spawners.lifecycle import Phase

T0 = dt.datetime(2026, 11, 29, 12, 0)
OLD, NEW = T0 - dt.timedelta(minutes=5), T0 + dt.timedelta(seconds=1)


def row(spawn, uid=1, server="", at=OLD):
    return Row(spawn, uid, f"u{uid}", server, at)


def rec(spawn, uid=1, server="", at=OLD):
    return OpenRecord(spawn, uid, f"u{uid}", server, at)


def run(spawn, uid=1, server=""):
    return Found(spawn, f"u{uid}", server, f"pid-{spawn}")


def known(held=(), busy=(), checking=()):
    return Known(frozenset(held), frozenset(busy), frozenset(checking),
                 frozenset((f"u{u}", s) for u, s in checking))


NOBODY = known()


@pytest.mark.parametrize("case, found, rows, before, after, stop, free", [
    ("held and running: kept", [run("a")], [row("a")], known(held={"a"}), known(held={"a"}), [], []),
    ("running, held by nobody: orphan stopped, then freed", [run("a")], [row("a")], NOBODY, NOBODY, ["a"], ["a"]),
    ("running, no allocation at all: stopped", [run("x")], [], NOBODY, NOBODY, ["x"], []),
    ("hand-made, no spawn id: stopped", [run("")], [], NOBODY, NOBODY, [""], []),
    ("reserved between the two looks: kept", [run("a")], [row("a")], NOBODY, known(held={"a"}), [], []),
    ("released between the two looks: kept this round", [run("a")], [row("a")], known(held={"a"}), NOBODY, [], []),
    ("allocation newer than the cut-off: in flight, kept", [run("a")], [row("a", at=NEW)], NOBODY, NOBODY, [], []),
    ("owner still being checked by JupyterHub: left alone", [run("a")], [row("a")],
     known(checking={(1, "")}), NOBODY, [], []),
    ("an old spawn of an owner that spawns again: stopped", [run("old")], [row("old")],
     known(busy={(1, "")}), known(busy={(1, "")}), ["old"], ["old"]),
    ("gone, held by nobody: freed", [], [row("a")], NOBODY, NOBODY, [], ["a"]),
    ("gone but its spawner still holds it (the poll will see): kept", [], [row("a")],
     known(held={"a"}), known(held={"a"}), [], []),
    ("gone, owner reserving right now: kept", [], [row("a")], known(busy={(1, "")}), NOBODY, [], []),
    ("gone, owner holds another spawn: the stale one freed", [run("b")], [row("a"), row("b", at=NEW)],
     known(held={"b"}), known(held={"b"}), [], ["a"]),
    ("named servers are owners of their own", [run("a", server="x")], [row("a", server="x")],
     known(busy={(1, "")}), NOBODY, ["a"], ["a"]),
])
def test_servers_and_allocations(case, found, rows, before, after, stop, free):
    plan = decide(found, rows, [], before, after, T0)
    assert [f.spawn_id for f in plan.stop] == stop, case
    assert [r.spawn_id for r in plan.free] == free, case


@pytest.mark.parametrize("case, found, rows, records, before, close", [
    ("closed with its allocation, not twice", [], [row("a")], [rec("a")], NOBODY, []),
    ("no allocation, nothing running: closed", [], [], [rec("a")], NOBODY, ["a"]),
    ("no allocation but running and held: open", [run("a")], [], [rec("a")], known(held={"a"}), []),
    ("no allocation, running, held by nobody: stopped, then closed", [run("a")], [], [rec("a")], NOBODY, ["a"]),
    ("too new to judge", [], [], [rec("a", at=NEW)], NOBODY, []),
    ("owner reserving right now", [], [], [rec("a")], known(busy={(1, "")}), []),
])
def test_usage_records(case, found, rows, records, before, close):
    plan = decide(found, rows, records, before, before, T0)
    assert [r.spawn_id for r in plan.close] == close, case


def test_a_quiet_hub_plans_nothing():
    rows = [row(s, uid=i) for i, s in enumerate("abcd")]
    plan = decide([run(r.spawn_id, r.user_id) for r in rows], rows, [rec(r.spawn_id, r.user_id) for r in rows],
                  known(held=set("abcd")), known(held=set("abcd")), T0)
    assert plan.empty and plan.kept == 4


class FakeSpawner:
    """Just what the sweeper looks at: JupyterHub's view (ready, pending), gpulab's (started?),
    the backend's (poll) and JupyterHub's own way to stop (user.stop)."""

    def __init__(self, name, ready=False, pending=None, started=True, dead=True, checked=True, holds=True):
        self._log_name, self.name = name, ""
        self.ready, self.pending, self.dead = ready, pending, dead
        self._gpulab_checked = checked
        self.gpulab_phase = Phase.READY if started and holds else Phase.STARTING if holds else Phase.IDLE
        self.stops = self.releases = 0
        outer = self

        class User:
            async def stop(self, name):
                outer.stops += 1
                outer.ready, outer.pending = False, None  # stopped: nothing left of it

        self.user = User()

    async def poll(self):
        return 0 if self.dead else None

    async def gpulab_release(self):
        self.releases += 1
        self.gpulab_phase = Phase.IDLE


async def test_the_sweeper_stops_only_what_stays_wedged():
    import asyncio

    from hub_plugins.reconcile.wedged import Sweeper

    ghost = FakeSpawner("ghost", ready=True, started=False)  # a failed spawn JupyterHub never cleaned up
    running = FakeSpawner("running", ready=True, started=True, dead=False)
    dying = FakeSpawner("dying", ready=True, started=True)  # JupyterHub's own polling handles it
    stuck = FakeSpawner("stuck", pending="stop")  # a stop a database error cut short
    starting = FakeSpawner("starting", pending="spawn", started=False)
    sweeper = Sweeper()
    everyone = [ghost, running, dying, stuck, starting]
    assert await sweeper.run(everyone) == []  # once is not enough
    assert await sweeper.run(everyone) == ["ghost"]
    assert await sweeper.run(everyone) == ["stuck"]
    await asyncio.sleep(0)
    assert (ghost.stops, stuck.stops, running.stops, dying.stops, starting.stops) == (1, 1, 0, 0, 0)
    assert await sweeper.run(everyone) == []  # both cleaned up


async def test_a_server_that_dies_while_jupyterhub_checks_it_releases_its_gpus_without_a_stop():
    from hub_plugins.reconcile.wedged import Sweeper

    died = FakeSpawner("died", pending="check")  # polled alive by JupyterHub, then exited
    alive = FakeSpawner("alive", pending="check", dead=False)
    unpolled = FakeSpawner("unpolled", pending="check", checked=False)  # JupyterHub's poll (adoption) first
    no_gpus = FakeSpawner("no-gpus", pending="check", holds=False)
    sweeper = Sweeper()
    everyone = [died, alive, unpolled, no_gpus]
    assert await sweeper.run(everyone) == []
    assert await sweeper.run(everyone) == ["died"]
    assert [s.releases for s in everyone] == [1, 0, 0, 0]
    assert [s.stops for s in everyone] == [0, 0, 0, 0]  # JupyterHub's check still ends it, as usual
    assert died._gpulab_check_released
    assert await sweeper.run(everyone) == []  # released once
