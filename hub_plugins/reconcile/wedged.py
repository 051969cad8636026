"""Servers JupyterHub left half-done because a database error interrupted it.

JupyterHub's spawn and stop paths write to its database several times; when one of those writes
fails (a database restart, an outage), the path is cut short and a server can stay *ready*
with nothing running (a failed spawn never cleaned up, never polled: the mixin knows its start
never completed) or *pending stop* for good.
Nothing in JupyterHub looks at them again until it restarts. Each reconcile round asks those
servers' backends whether they still run; one found dead in consecutive rounds (so not one that
JupyterHub's own polling is about to handle) is stopped again through JupyterHub's own
``User.stop``, which cleans it up as any stop does (and releases its GPUs).

A third kind: after a restart JupyterHub checks every server it knows by polling it once and then
waiting for its URL, up to ``http_timeout``, without polling again. A server that dies in that
window (a server that started while the hub was down exits when it cannot reach the hub for
30 s) would hold its GPUs, unbilled but unusable, until that timeout. Its GPUs are released as
soon as it is found dead twice; JupyterHub's check ends with its own stop, which finds nothing
left to release.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("gpulab.reconcile")

ROUNDS = {"ready": 2, "stop": 3, "check": 2}  # consecutive rounds found dead before acting


class Sweeper:
    def __init__(self):
        self.seen: dict[int, tuple[str, int]] = {}
        self.swept = 0

    async def run(self, spawners, log=log) -> list[str]:
        suspects: dict[int, tuple[str, int]] = {}
        acted = []
        for s in spawners:
            phase = getattr(s, "gpulab_phase", None)  # spawners/lifecycle.py (None: not gpulab's)
            if s.pending == "check":
                # only once JupyterHub's own poll has run (it adopts what the dead hub started)
                if not getattr(s, "_gpulab_checked", False) or phase is None or not phase.holds:
                    continue
                kind = "check"
            elif s.ready and phase is not None and not phase.up:
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
                if kind == "check":
                    await _release(s, log)
                    continue
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


async def _release(spawner, log) -> None:
    log.warning("gpulab: %s died while JupyterHub was still checking it after a restart; releasing "
                "its GPUs now rather than when that check times out", spawner._log_name)
    try:
        await spawner.gpulab_release()
        spawner._gpulab_check_released = True  # nothing left for the start-up reconcile to wait on
    except Exception:
        log.exception("gpulab: releasing %s failed; trying again next round", spawner._log_name)
