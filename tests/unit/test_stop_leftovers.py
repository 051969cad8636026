"""What a release looks for before it frees a server's devices (``recovery.release_stopped`` and
``stop_leftovers``): every spawn the owner holds is looked for on the backend, except the one
whose cgroups the stop emptied and removed (nothing of it can run anywhere); and when that one is
all there is, the clean-up, the look and the release take one trip to the worker threads (and
one transaction: ``test_allocator.py``)."""

from __future__ import annotations

import datetime as dt
import logging
from types import SimpleNamespace

import pytest

from hub_plugins.batching import GroupCommit
from hub_plugins.spawners.recovery import release_stopped, release_stopped_now, stop_leftovers

SEEN = dt.datetime(2026, 12, 2, 6, 0, 0)
RECORDED = dt.datetime(2026, 12, 2, 6, 0, 5)


class _Runtime:
    def __init__(self, running: dict[str, int], knows_here: bool = True):
        self.running, self.looked, self.knows_here = running, [], knows_here
        self.read_in_trip: list[bool] = []  # for each read of a lifeline record: in a worker trip?
        self.core = None

    async def stop_spawn(self, spawn_id: str) -> int:
        self.looked.append(spawn_id)
        return self.running.get(spawn_id, 0)

    async def last_alive(self, spawn_id: str):
        return RECORDED

    def last_alive_here(self, spawn_id: str):
        self.read_in_trip.append(bool(self.core and self.core.in_trip))
        return RECORDED if self.knows_here else NotImplemented


class _Core:
    def __init__(self):
        self.trips, self.in_trip = 0, False

    async def run(self, fn, *args):
        self.trips += 1
        self.in_trip = True
        try:
            return fn(*args)
        finally:
            self.in_trip = False


def _spawner(runtime, contained=None):
    core = _Core()
    if runtime is not None:
        runtime.core = core
    return SimpleNamespace(gpulab=core, gpulab_runtime=runtime, gpulab_owner=("u", ""),
                           _gpulab_last_alive=SEEN, _gpulab_contained=contained, _log_name="u",
                           log=logging.getLogger("test"))


def _release(got, spawns=()):
    """``Allocator.release_checked`` over an owner holding ``spawns``: what it was told to close
    with goes to ``got``; False keeps them."""
    def release(alive_for):
        alive = alive_for(list(spawns))
        if alive is False:
            return list(spawns), None
        got.append(alive)
        return list(spawns), ["key"]
    return release


async def test_the_contained_spawn_is_not_looked_for_and_the_others_are():
    rt = _Runtime({"old": 2})
    sp = _spawner(rt)
    alive = await stop_leftovers(sp, ["old", "cur"], "cur")
    assert rt.looked == ["old"] and alive == {"old": RECORDED, "cur": RECORDED}


async def test_without_cgroups_every_spawn_is_looked_for():
    rt = _Runtime({})
    await stop_leftovers(_spawner(rt), ["cur"])
    assert rt.looked == ["cur"]


async def test_a_contained_stop_is_cleaned_looked_at_and_released_in_one_trip():
    rt, got = _Runtime({}), []
    sp = _spawner(rt)

    def cleanup():  # what the local backend's does once the cgroups are gone
        sp._gpulab_contained = "cur"

    spawns, keys = await release_stopped(sp, cleanup, _release(got, ["cur"]))
    assert (spawns, keys, got) == (["cur"], ["key"], [{"cur": RECORDED}])
    assert sp.gpulab.trips == 1 and rt.looked == []
    assert sp._gpulab_contained is None  # used once: the next release looks again


async def test_cgroups_removed_on_the_loop_leave_the_trip_nothing_but_the_release():
    """The local backend removed the empty cgroups on the loop (no clean-up for the trip): the
    lifeline's record is read on the loop too, and the one trip is the transaction."""
    rt, got = _Runtime({}), []
    sp = _spawner(rt, contained="cur")
    spawns, keys = await release_stopped(sp, None, _release(got, ["cur"]))
    assert (spawns, keys, got) == (["cur"], ["key"], [{"cur": RECORDED}])
    assert sp.gpulab.trips == 1 and rt.looked == [] and rt.read_in_trip == [False]
    assert sp._gpulab_contained is None


async def test_a_spawn_left_beside_the_one_removed_on_the_loop_is_still_looked_for():
    rt, got = _Runtime({"old": 1}), []
    sp = _spawner(rt, contained="cur")
    out_spawns, keys = await release_stopped(sp, None, _release(got, ["old", "cur"]))
    assert keys == ["key"] and rt.looked == ["old"] and sp.gpulab.trips == 2
    assert got == [{"old": RECORDED, "cur": RECORDED}]


@pytest.mark.parametrize("spawns, contained, runtime, looked", [
    (["old", "cur"], "cur", _Runtime({"old": 1}), ["old"]),  # a hub that died left one behind
    (["cur"], None, _Runtime({}), ["cur"]),  # no cgroups: looked for in /proc
    (["cur"], "cur", _Runtime({}, knows_here=False), []),  # a backend that must ask its engine
])
async def test_anything_that_may_be_left_is_looked_for_before_the_release(spawns, contained, runtime, looked):
    got = []
    sp = _spawner(runtime)

    def cleanup():
        sp._gpulab_contained = contained

    out_spawns, keys = await release_stopped(sp, cleanup, _release(got, spawns))
    assert out_spawns == spawns and keys == ["key"]
    assert runtime.looked == looked and sp.gpulab.trips == 2
    assert got == [{s: RECORDED for s in spawns}]


async def test_without_a_runtime_it_is_released_as_last_seen():
    got = []
    sp = _spawner(None)
    assert await release_stopped(sp, None, _release(got)) == ([], ["key"])
    assert got == [SEEN] and sp.gpulab.trips == 1


async def test_a_clean_up_that_fails_never_keeps_the_devices():
    got = []
    sp = _spawner(_Runtime({}))

    def cleanup():
        raise OSError("cgroupfs went away")

    assert (await release_stopped(sp, cleanup, _release(got, ["cur"])))[1] == ["key"]
    assert got == [{"cur": RECORDED}]  # and it was looked for, since nothing says it is contained


def _now(got, spawns, free=True):
    """``GroupCommit.try_now`` over an owner holding ``spawns``: ``free`` whether SQLite's write
    lock is free this moment; each write's requests go to ``got``."""
    def write_now(requests):
        if not free:
            return None
        got.append(len(requests))
        return [_release(got, spawns)(r.alive_for) for r in requests]

    async def never(requests):
        raise AssertionError("a release written at once takes no trip")
    return GroupCommit(never, write_now)


@pytest.mark.parametrize("free, spawns, contained, written", [
    (True, ["cur"], "cur", True),  # the usual stop: written at once, on the loop
    (False, ["cur"], "cur", False),  # the write lock is taken this moment: the long way
    (True, ["old", "cur"], "cur", False),  # a spawn left behind must be looked for first
    (True, ["cur"], None, False),  # no cgroups removed: what is left is looked for first
])
def test_a_stop_is_released_at_once_only_when_nothing_can_be_left(free, spawns, contained, written):
    rt, got = _Runtime({}), []
    sp = _spawner(rt, contained=contained)
    sp.gpulab.releases = _now(got, spawns, free)
    out = release_stopped_now(sp, lambda alive_for: SimpleNamespace(alive_for=alive_for))
    if written:
        assert out == (["cur"], ["key"]) and got == [1, {"cur": RECORDED}]
        assert sp._gpulab_contained is None  # used once
    else:
        assert out is None and sp._gpulab_contained == contained  # nothing changed, nothing used
        assert {"cur": RECORDED} not in got
    assert sp.gpulab.trips == 0 and rt.read_in_trip in ([], [False])
