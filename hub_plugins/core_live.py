"""What the GPU core knows of the hub's live spawners, and the reconcile built on it.

A base of ``GPULab`` (``core.py``), split from it by responsibility: spawners register
themselves, and reconciliation asks which servers are alive. The registry itself
(``_spawners``) is created by ``GPULab.__init__``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import weakref

from .store.models import utcnow
from .reconcile import gate
from .reconcile.decide import Known

log = logging.getLogger("gpulab.core")


class LiveSpawners:
    """The live spawners and reconciliation (a base of ``GPULab``)."""

    def register(self, spawner) -> None:
        """Spawners register themselves so reconciliation knows which servers are alive."""
        key = (spawner.user.id, spawner.name)
        self._spawners.setdefault(key, weakref.WeakSet()).add(spawner)

    def spawners(self) -> list:
        """The spawners JupyterHub uses now. A spawner a failed spawn left behind is replaced by a
        new object for the same server, and shares its database row: it would look ready."""
        out = []
        for ws in list(self._spawners.values()):
            for s in list(ws):
                current = getattr(s.user, "spawners", None)
                if current is None or current.get(s.name) is s:
                    out.append(s)
        return out

    def live_owners(self) -> set[tuple[int, str]]:
        """Owners with an active spawner (running, or a start/stop/check pending).

        Must be called on the hub's event-loop thread, where spawner state changes."""
        return {(s.user.id, s.name) for s in self.spawners() if s.active}

    def known(self):
        """What the hub's spawners hold right now (``reconcile.decide.Known``). On the loop."""
        held, busy, checking, names = set(), set(), set(), set()
        for s in self.spawners():
            if not s.active:
                continue
            uid, name = s.user.id, s.name
            # what it holds until its release, even once its state was cleared (a stop in progress)
            spawn_id = getattr(s, "gpulab_holding", None)
            if s.pending == "check":
                checking.add((uid, name))
                names.add((s.user.name, name))
            if spawn_id:
                held.add(spawn_id)
            else:
                busy.add((uid, name))  # reserving, being checked or stopped: its rows are its own
        return Known(frozenset(held), frozenset(busy), frozenset(checking), frozenset(names))

    def reconcile(self, live: set[tuple[int, str]] | None = None, before: dt.datetime | None = None):
        """Free allocations whose owner has no active spawner, from the hub's knowledge alone
        (backends without a runtime adapter; the supervisor does the full reconcile)."""
        live = self.live_owners() if live is None else live
        before = before or utcnow()
        gone = self.allocator.reconcile(lambda r: (r.user_id, r.server_name) in live, before)
        closed = self.usage.close_orphans(live, before)
        for r in closed:
            log.warning("reconcile: closed the usage record of %s:%s at %s (last seen alive)",
                        r.user_name, r.server_name, r.stopped_at)
        self._reconciled_at = time.monotonic()
        return gone

    async def wait_ready(self) -> None:
        """Until the start-up reconcile is done (at once where no supervisor runs, e.g. tests
        that drive a spawner directly)."""
        await gate.wait_open()
