"""Containers that belong to this hub but to no running server (left by a crash, a hub killed
mid-spawn, a renamed or hand-made container): found, reported and removed, so the GPUs they hold
can be given out again. The decision is pure (:func:`orphans`); :class:`Reconciler` does the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import spec


@dataclass(frozen=True)
class Found:
    id: str
    name: str
    labels: dict
    state: str
    created: float

    @classmethod
    def from_api(cls, c: dict) -> Found:
        names = c.get("Names") or [""]
        return cls(c["Id"], names[0].lstrip("/"), dict(c.get("Labels") or {}), c.get("State", ""),
                   float(c.get("Created", 0)))

    @property
    def owner(self) -> tuple[str, str]:
        return self.labels.get(spec.LABEL_USER_ID, ""), self.labels.get(spec.LABEL_SERVER, "")

    def describe(self) -> str:
        lab = self.labels
        who = lab.get(spec.LABEL_USER, "?") + (f":{lab[spec.LABEL_SERVER]}" if lab.get(spec.LABEL_SERVER) else "")
        gpus = lab.get(spec.LABEL_GPUS) or "none"
        return f"container {self.name} ({self.id[:12]}, {self.state}) of {who}, GPUs {gpus}"


def orphans(found: list[Found], live: dict[tuple[str, str], str | None], now: float,
            grace: float) -> list[tuple[Found, str]]:
    """The containers no live server claims, each with the reason.

    ``live``: (user id, server name) -> the spawn id that server holds (None while unknown, e.g.
    a spawn that has not reserved yet). A container is kept when its owner is live and, where
    both are known, its spawn id is the live one; containers younger than ``grace`` are kept."""
    out = []
    for f in found:
        if f.labels.get(spec.LABEL_KIND, "server") != "server" or now - f.created < grace:
            continue
        if f.owner not in live:
            out.append((f, "no running server claims it"))
            continue
        held, mine = live[f.owner], f.labels.get(spec.LABEL_SPAWN_ID, "")
        if held and mine and held != mine:
            out.append((f, f"left by an earlier start (spawn {mine}; the server now runs spawn {held})"))
    return out


class Reconciler:
    def __init__(self, docker_call: Callable, hub_id: str, live: Callable[[], dict], remove: bool = True,
                 grace: float = 10, log: logging.Logger | logging.LoggerAdapter | None = None):
        self.docker = docker_call  # async (method, *args, **kw) -> result, as DockerSpawner.docker
        self.hub_id = hub_id
        self.live = live
        self.remove = remove
        self.grace = grace
        self.log = log or logging.getLogger("gpulab.docker")
        self._lock = asyncio.Lock()
        self.last: list[tuple[Found, str]] = []

    async def run(self) -> list[tuple[Found, str]]:
        async with self._lock:
            listed = await self.docker("containers", all=True, filters={"label": f"{spec.LABEL_HUB}={self.hub_id}"})
            # Created is the engine's clock, the same host's as ours (host-local engine)
            bad = orphans([Found.from_api(c) for c in listed], self.live(), time.time(), self.grace)
            for f, why in bad:
                if self.remove:
                    self.log.warning("[gpulab] docker: removing %s: %s", f.describe(), why)
                    try:
                        await self.docker("remove_container", f.id, force=True)
                    except Exception as e:  # already gone, or being removed
                        self.log.info("[gpulab] docker: could not remove %s: %s", f.name, e)
                else:
                    self.log.warning("[gpulab] docker: orphan %s: %s (docker.remove_orphans is off)", f.describe(), why)
            if not bad:
                self.log.info("[gpulab] docker: %d container(s) of this hub, none orphaned", len(listed))
            self.last = bad
            return bad
