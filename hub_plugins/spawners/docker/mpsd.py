"""The MPS control daemons of shared GPUs on the Docker backend (an adapter; ``mps.py`` builds).

One daemon per shared GPU in use: created before the first sharer's container, removed with its
pipe volume once no sharer's container is left (after every stop, and at start-up for what a
crashed hub left). Every step runs under one lock, held from making sure the daemon runs until
the sharer's container exists, so a sweep can never remove a daemon a sharer is about to join.
A daemon found dead (a fatal fault ends the MPS server, and the control daemon may follow) is
replaced before the next sharer starts.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import docker

from . import mps
from .spec import LABEL_HUB, LABEL_KIND
from ..errors import SpawnException

log = logging.getLogger("gpulab.docker.mps")


class MPSDaemons:
    def __init__(self, docker_call, host_config, hub_id: str, settings: mps.MPSSettings):
        self.call = docker_call  # async (method name, *args, **kwargs) on a docker.APIClient
        self.host_config = host_config  # APIClient.create_host_config (builds, no I/O)
        self.hub_id = hub_id
        self.settings = settings
        self.lock = asyncio.Lock()

    async def ensure(self, d: mps.Daemon, image: str) -> mps.Daemon:
        """Make sure ``d`` runs; it, with its pipe volume. Call with ``self.lock`` held until the
        sharer's container exists."""
        try:
            obj = await self.call("inspect_container", d.name)
        except docker.errors.NotFound:
            obj = None
        if obj is not None:
            labels = obj.get("Config", {}).get("Labels") or {}
            if labels.get(LABEL_HUB) != self.hub_id:
                raise SpawnException(f"A container named {d.name} exists but is not this hub's MPS daemon. "
                                     "Remove it, or give each hub its own docker.name_prefix.",
                                     reason="name_conflict", status_code=409)
            if obj.get("State", {}).get("Running") and labels.get(mps.LABEL_PIPE):
                return mps.with_pipe(d, labels[mps.LABEL_PIPE].rsplit("-", 1)[-1])
            log.warning("MPS daemon %s for GPU %s was found stopped (%s): replacing it", d.name, d.gpu_uuid,
                        obj.get("State", {}).get("Status"))
            await self.call("remove_container", d.name, force=True)
        d = mps.with_pipe(d, secrets.token_hex(4))
        await self.call("create_volume", **mps.pipe_volume(d, self.settings))
        create = mps.daemon_create(d, self.settings, image)
        create["host_config"] = self.host_config(**create["host_config"])
        await self.call("create_container", **create)
        await self.call("start", d.name)
        await self._wait_running(d)
        log.info("MPS daemon %s started for GPU %s (%d shares)", d.name, d.gpu_uuid, d.shares)
        return d

    async def _wait_running(self, d: mps.Daemon, polls: int = 4) -> None:
        """A daemon that exits at once (no driver, no nvidia-cuda-mps-control) fails the spawn
        with its own words instead of leaving the sharer to hang."""
        for _ in range(polls):
            obj = await self.call("inspect_container", d.name)
            if not obj.get("State", {}).get("Running"):
                tail = (await self.call("logs", d.name, tail=5)).decode(errors="replace").strip()
                await self.call("remove_container", d.name, force=True)
                raise SpawnException(
                    f"The MPS control daemon for this shared GPU did not start ({tail or 'no output'}). "
                    "An admin must check docker.mps (the NVIDIA driver's nvidia-cuda-mps-control).",
                    reason="mps", status_code=500)
            await asyncio.sleep(0.25)

    async def sweep(self) -> list[str]:
        """Remove this hub's daemons (and pipe volumes) that no sharer's container uses."""
        async with self.lock:
            daemons = await self.call("containers", all=True,
                                      filters={"label": [f"{LABEL_HUB}={self.hub_id}", f"{LABEL_KIND}=mps"]})
            if not daemons:
                await self._sweep_pipes()
                return []
            sharers = await self.call("containers", all=True,
                                      filters={"label": [f"{LABEL_HUB}={self.hub_id}", f"{LABEL_KIND}=server",
                                                         mps.LABEL_MPS]})
            used = {(c.get("Labels") or {}).get(mps.LABEL_MPS) for c in sharers}
            removed = []
            for c in daemons:
                uuid = (c.get("Labels") or {}).get(mps.LABEL_MPS)
                if uuid in used:
                    continue
                name = c["Names"][0].lstrip("/")
                try:
                    await self.call("remove_container", c["Id"], force=True)
                except docker.errors.APIError as e:
                    log.warning("removing MPS daemon %s: %s", name, e)
                    continue
                log.info("MPS daemon %s removed: GPU %s has no sharer left", name, uuid)
                removed.append(name)
            await self._sweep_pipes()
            return removed

    async def _sweep_pipes(self) -> None:
        """Pipe volumes no container mounts any more (a daemon's, once it and its sharers are
        gone); one still in use is refused by the engine and kept."""
        found = await self.call("volumes", filters={"label": [f"{LABEL_HUB}={self.hub_id}", f"{LABEL_KIND}=mps"]})
        for v in (found or {}).get("Volumes") or []:
            try:
                await self.call("remove_volume", v["Name"])
            except docker.errors.APIError:
                continue  # in use
