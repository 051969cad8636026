"""Keeps Python's cyclic garbage collector from pausing the hub for long.

The hub is one process holding everything a lab's hub knows: a hub of 500 servers held about
360,000 objects the collector tracks (200,000 of them from its start: modules, classes, config).
CPython's full (generation 2) collection walks all of them while holding the GIL, so every
request of the hub, in any thread, stood still for it: 170 ms here at 500 servers, every few
tens of seconds while the hub grew (the scale benchmark's one slow spawn form a run;
docs/benchmarks.md). Objects that have survived a full collection are nearly all the hub's long-lived
state: servers, spawners, users, caches. Here they are *frozen* after each full collection
(``gc.freeze``: moved to a generation the collector no longer walks), so the next full
collection walks only what was created since; and every ``sweep_minutes`` the frozen objects go
back to the collector for one full collection, which frees any reference cycle that became
garbage while frozen (a frozen object freed by its reference count is freed at once, as
always). So garbage in reference cycles is held at most a sweep interval, and the one long
pause comes once a sweep interval, on a timer, instead of whenever the hub's growth crosses the
collector's threshold (measured: docs/benchmarks.md, "A lab's scale").

:func:`freeze_after` is the policy (pure, tested with a table); :class:`HubCollector` applies it
to the process's ``gc`` module."""

from __future__ import annotations

import asyncio
import gc
import time

from traitlets import Float
from traitlets.config import LoggingConfigurable


def freeze_after(generation: int, sweep_s: float) -> bool:
    """Whether to freeze what survived a finished collection of ``generation`` (0-2), with
    ``sweep_s`` seconds between sweeps (0: no pacing, Python's collector as it is). Only a full
    collection says what is long-lived: a younger one merely promotes its survivors a generation,
    and freezing those would keep short-lived objects (a request's) out of the collector until
    the next sweep."""
    return sweep_s > 0 and generation >= 2


class HubCollector(LoggingConfigurable):
    """Paces the hub process's garbage collector (see the module's docstring): :meth:`start` once
    the hub is up, in its event loop; with ``parent=`` the hub, it logs to the hub's log."""

    sweep_minutes = Float(
        60.0,
        min=0.0,
        config=True,
        help="""Minutes between the hub's full garbage-collection sweeps (gpulab.yaml:
        hub.gc_sweep_minutes). Between sweeps, objects that survive a full collection are frozen,
        so that the collector's pauses stay short however many servers the hub holds; a sweep
        frees any reference cycle that became garbage meanwhile (one longer pause each time).
        0 leaves Python's collector as it is.""",
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.sweeps = 0

    def start(self) -> None:
        """Collect what the start left behind, freeze the rest, and pace from now on."""
        if self.sweep_minutes <= 0:
            return
        self._loop = asyncio.get_running_loop()
        gc.callbacks.append(self._on_collection)
        self.sweep()

    def stop(self) -> None:
        """Back to Python's own collector (tests; a hub never needs it)."""
        if self._on_collection in gc.callbacks:
            gc.callbacks.remove(self._on_collection)
        if self._timer is not None:
            self._timer.cancel()
        gc.unfreeze()

    def _on_collection(self, phase: str, info: dict) -> None:
        # called by the collector in whichever thread allocated, holding the GIL, after its lists
        # are consistent again ("stop"); freezing only moves those lists. (A gc.collect() here
        # would do nothing: the collector does not re-enter itself, hence the sweep's timer.)
        if phase == "stop" and freeze_after(info["generation"], self.sweep_minutes * 60):
            gc.freeze()

    def sweep(self) -> None:
        """One full collection of everything, frozen or not, then freeze what is left; the next
        one in ``sweep_minutes``."""
        t0 = time.perf_counter()
        gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        self.sweeps += 1
        self.log.info("gpulab: full garbage collection: %d objects kept, %d freed, %.0f ms; the next in %g min",
                      gc.get_freeze_count(), freed, (time.perf_counter() - t0) * 1000, self.sweep_minutes)
        if self._timer is not None:  # a sweep out of turn (tests) replaces the timed one
            self._timer.cancel()
        self._timer = self._loop.call_later(self.sweep_minutes * 60, self.sweep)
