"""The hub's garbage-collector pacing (hub_plugins/gcpace.py), on this process's real collector:
survivors of a full collection leave the collector's walks, younger collections freeze nothing,
and a sweep frees a reference cycle that became garbage while frozen."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from hub_plugins.gcpace import HubCollector, freeze_after


@pytest.mark.parametrize("generation, sweep_s, freeze", [
    (2, 3600, True),    # a full collection: its survivors are long-lived
    (1, 3600, False),   # a younger one: survivors only promoted, a request's objects among them
    (0, 3600, False),
    (2, 0, False),      # pacing off: Python's collector as it is
    (2, 0.5, True),
])
def test_what_is_frozen_after_a_collection(generation, sweep_s, freeze):
    assert freeze_after(generation, sweep_s) is freeze


class Cycle:
    def __init__(self):
        self.me = self


@pytest.fixture
def paced():
    """A started HubCollector in a running loop, the automatic collections off (so that none runs
    at a moment the test does not choose); everything restored afterwards."""
    loop = asyncio.new_event_loop()
    collectors = []

    def start(minutes=60.0):
        async def go():
            c = HubCollector(sweep_minutes=minutes)
            c.start()
            return c
        c = loop.run_until_complete(go())
        collectors.append(c)
        return c

    gc.disable()
    gc.unfreeze()
    try:
        yield start, loop
    finally:
        for c in collectors:
            c.stop()
        gc.enable()
        loop.close()


def test_the_start_freezes_what_exists_and_a_full_collection_freezes_its_survivors(paced):
    start, _ = paced
    c = start()
    at_start = gc.get_freeze_count()
    assert at_start > 1000 and c.sweeps == 1  # this process's modules, classes, functions
    kept = [[i] for i in range(20000)]  # tracked containers, long-lived from here on
    gc.collect(1)
    assert gc.get_freeze_count() == at_start  # a younger collection freezes nothing
    gc.collect(2)
    assert gc.get_freeze_count() >= at_start + 20000
    walked = {id(o) for g in range(3) for o in gc.get_objects(generation=g)}
    assert not any(id(x) in walked for x in kept)
    del kept


def test_a_cycle_that_dies_while_frozen_is_freed_by_the_next_sweep(paced):
    start, _ = paced
    c = start()
    obj = Cycle()
    gc.collect()  # survives a full collection: frozen
    alive = weakref.ref(obj)
    del obj
    gc.collect()
    assert alive() is not None  # garbage now, but out of the collector's walks
    c.sweep()
    assert alive() is None
    assert c.sweeps == 2


def test_a_cycle_that_dies_young_is_freed_as_always(paced):
    start, _ = paced
    start()
    obj = Cycle()
    alive = weakref.ref(obj)
    del obj
    gc.collect(0)
    assert alive() is None


def test_the_next_sweep_is_timed_by_sweep_minutes(paced):
    start, loop = paced
    c = start(minutes=0.5)
    assert c._timer is not None and 29 <= c._timer.when() - loop.time() <= 30


def test_zero_minutes_leaves_the_collector_alone(paced):
    start, _ = paced
    c = start(minutes=0)
    assert gc.get_freeze_count() == 0 and c.sweeps == 0 and c._on_collection not in gc.callbacks
    gc.collect()
    assert gc.get_freeze_count() == 0
