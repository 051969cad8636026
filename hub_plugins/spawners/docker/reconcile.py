"""What really runs on the Docker engine, for the reconcile (``reconcile/runtime.py``).

This hub's server containers carry its id (label ``gpulab.hub``) and their spawn id
(``gpulab.spawn_id``): listed by label, whatever the hub remembers. Stopping one removes it.
Containers of a crashed server keep their end time (``State.FinishedAt``), which is when their
usage record is closed. :func:`from_api` is the pure part.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from ...reconcile.decide import Found
from ...reconcile.runtime import Runtime
from . import spec


def from_api(c: dict) -> Found | None:
    """A server container from the engine's list answer (volumes and other kinds: None)."""
    labels = dict(c.get("Labels") or {})
    if labels.get(spec.LABEL_KIND, "server") != "server":
        return None
    names = c.get("Names") or [""]
    return Found(labels.get(spec.LABEL_SPAWN_ID, ""), labels.get(spec.LABEL_USER, ""),
                 labels.get(spec.LABEL_SERVER, ""), c["Id"], names[0].lstrip("/"))


def finished_at(state: dict) -> dt.datetime | None:
    """``State.FinishedAt`` (RFC 3339 with nanoseconds) as naive UTC; None while it runs."""
    raw = (state or {}).get("FinishedAt") or ""
    if not raw or raw.startswith("0001-") or state.get("Running"):
        return None
    try:
        return dt.datetime.fromisoformat(raw[:26].rstrip("Z").split("+")[0])
    except ValueError:
        return None


class DockerRuntime(Runtime):
    name = "docker"

    def __init__(self, docker_call: Callable, hub_id: str, remove: bool = True, grace: float = 0,
                 log: logging.Logger | logging.LoggerAdapter | None = None):
        self.docker = docker_call  # async (method, *args, **kw) -> result, as DockerSpawner.docker
        self.hub_id = hub_id
        self.remove = remove
        self.grace = grace
        self.log = log or logging.getLogger("gpulab.docker")
        self.finished: dict[str, dt.datetime] = {}  # spawn id -> when its container died

    async def _containers(self, running_only: bool = True, **labels) -> list[dict]:
        filters = [f"{spec.LABEL_HUB}={self.hub_id}", *(f"{k}={v}" for k, v in labels.items())]
        return await self.docker("containers", all=not running_only, filters={"label": filters})

    async def list(self) -> list[Found]:
        return [f for f in map(from_api, await self._containers()) if f is not None]

    async def find(self, user_name: str, server_name: str) -> list[Found]:
        listed = await self._containers(**{spec.LABEL_USER: user_name, spec.LABEL_SERVER: server_name})
        return [f for f in map(from_api, listed) if f is not None]

    async def stop(self, found: Found) -> bool:
        if not self.remove:
            self.log.warning("[gpulab] docker: container %s runs but no server holds it; "
                             "docker.remove_orphans is off, so it and its GPUs stay", found.describe())
            return False
        try:
            info = await self.docker("inspect_container", found.handle)
            created = dt.datetime.fromisoformat(info.get("Created", "")[:26].rstrip("Z"))
            if self.grace and (dt.datetime.utcnow() - created).total_seconds() < self.grace:
                return False  # docker.orphan_grace_seconds: maybe still being set up
        except Exception:
            pass
        try:
            await self.docker("remove_container", found.handle, force=True)
        except Exception as e:  # already gone, or being removed
            self.log.info("[gpulab] docker: could not remove %s: %s", found.handle[:12], e)
        return True

    async def stop_spawn(self, spawn_id: str) -> int:
        n = 0
        for c in await self._containers(running_only=False, **{spec.LABEL_SPAWN_ID: spawn_id}):
            try:
                info = await self.docker("inspect_container", c["Id"])
                ended = finished_at(info.get("State") or {})
                if ended:
                    self.note_finished(spawn_id, ended)
                await self.docker("remove_container", c["Id"], force=True)
                n += 1 if (info.get("State") or {}).get("Running") else 0
            except Exception as e:
                self.log.info("[gpulab] docker: could not remove %s: %s", c["Id"][:12], e)
        return n

    def note_finished(self, spawn_id: str, when: dt.datetime) -> None:
        self.finished[spawn_id] = when

    async def last_alive(self, spawn_id: str) -> dt.datetime | None:
        return self.finished.get(spawn_id)

    def forget(self, spawn_id: str) -> None:
        self.finished.pop(spawn_id, None)

