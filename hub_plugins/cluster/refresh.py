"""A capacity reader for ``c.GPULab.capacity_reader``: the latest inventory read from a cluster,
refreshed in a background thread.

The core asks for the inventory on the hub's event loop (request validation) and in worker
threads (allocation, the form), many times per spawn. Asking SLURM or the Kubernetes API each
time would block the loop and load the controller, so one thread reads every ``interval``
seconds and callers get the last good read at once. Only the very first call waits (bounded).
A failed read keeps the previous inventory and says why in its ``note``; with no previous read
the inventory is empty, which the form shows as "no GPUs right now: <why>".
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from ..gpu.devices import Inventory

log = logging.getLogger("gpulab.capacity")


class PeriodicInventory:
    """Callable returning the latest :class:`Inventory` that ``fetch()`` produced."""

    def __init__(self, fetch: Callable[[], Inventory], interval: float, name: str,
                 first_wait: float = 20.0):
        self.fetch = fetch
        self.interval = interval
        self.name = name
        self.first_wait = first_wait
        self._latest: Inventory | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def __deepcopy__(self, memo):
        # traitlets deep-copies config values; a reader is one shared object with its thread
        return self

    def __call__(self) -> Inventory:
        self._ensure_thread()
        if not self._ready.wait(self.first_wait):
            return Inventory((), source=self.name, note=f"{self.name} did not answer within {self.first_wait:.0f} s")
        with self._lock:
            return self._latest  # type: ignore[return-value]

    def poke(self) -> None:
        """Read again soon (after our own submission or cancellation changed the cluster)."""
        self._wake.set()

    def refresh_now(self) -> Inventory:
        """Read synchronously (tests, admin tools)."""
        self._read_once()
        return self()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    @property
    def age(self) -> float:
        return time.monotonic() - self._read_at if self._read_at else float("inf")

    # -- internals -------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=f"gpulab-{self.name}", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while not self._stopped:
            self._read_once()
            self._wake.wait(self.interval)
            self._wake.clear()

    def _read_once(self) -> None:
        try:
            inv = self.fetch()
        except Exception as e:  # the cluster is an external system: never let it kill the thread
            with self._lock:
                prev = self._latest
            why = f"cannot read capacity from {self.name}: {e}"
            if prev is None or prev.note != why:
                log.warning("%s", why)
            inv = dataclasses.replace(prev, note=why) if prev is not None and prev.devices else Inventory(
                (), source=self.name, note=why)
        with self._lock:
            self._latest = inv
            self._read_at = time.monotonic()
        self._ready.set()
