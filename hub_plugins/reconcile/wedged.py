"""Servers JupyterHub left half-done because a database error interrupted it.

JupyterHub's spawn and stop paths write to its database several times; when one of those writes
fails (a database restart, an outage), the path is cut short and a server can stay *ready*
with nothing running (a failed spawn never cleaned up, never polled: the mixin knows its start
never completed) or *pending stop* for good.
Nothing in JupyterHub looks at them again until it restarts. Each reconcile round asks those
servers' backends whether they still run; one found dead in consecutive rounds (so not one that
JupyterHub's own polling is about to handle) is stopped again through JupyterHub's own
``User.stop``, which cleans it up as any stop does (and releases its GPUs).
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("gpulab.reconcile")

ROUNDS = {"ready": 2, "stop": 3}  # consecutive rounds found dead before acting


class Sweeper:
    def __init__(self):
        self.seen: dict[int, tuple[str, int]] = {}
        self.swept = 0

    async def run(self, spawners, log=log) -> list[str]:
        suspects: dict[int, tuple[str, int]] = {}
        acted = []
        for s in spawners:
            if s.ready and not getattr(s, "_gpulab_ready", True):
                kind = "ready"  # JupyterHub says ready, but its start never completed
            elif s.pending == "stop":
                kind = "stop"
            else:
                continue
            try:
                status = await s.poll()
            except Exception:
                continue
            if status is None:
                continue
            was_kind, n = self.seen.get(id(s), (kind, 0))
            n = n + 1 if was_kind == kind else 1
            suspects[id(s)] = (kind, n)
            if n >= ROUNDS[kind]:
                del suspects[id(s)]
                self.swept += 1
                acted.append(s._log_name)
                log.warning("gpulab: %s is %s but its server is gone and nothing finishes it (a database "
                            "error cut JupyterHub short); stopping it cleanly", s._log_name,
                            "ready" if kind == "ready" else "pending stop")
                asyncio.ensure_future(_stop(s, log))
        self.seen = suspects
        return acted


async def _stop(spawner, log) -> None:
    try:
        await spawner.user.stop(spawner.name)
    except Exception:
        log.exception("gpulab: stopping %s failed; trying again next round", spawner._log_name)
