"""How the Docker backend holds the sharers of a shared GPU (docs/sharing.md).

Always: the sharer's container gets the GPU's device (the same one for every sharer), gpulab's
memory-cap variables and its startup hook, mounted read-only at ``/opt/gpulab/startup``
(cooperative caps on PyTorch and TensorFlow). With ``docker.mps.enabled`` also NVIDIA MPS: the
container joins its GPU's MPS control daemon (``mps.py``, ``mpsd.py``), runs as the one UID MPS
allows per server, and is held by the driver to its SMs (``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``)
and memory (``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT``). Without MPS the GPU is time-sliced.
"""

from __future__ import annotations

import asyncio

from traitlets import Bool, HasTraits, Integer, List, Unicode

from ...gpu.sharing import STARTUP_DIR, ShareCaps, shares_of
from ...settings.schema import DEFAULTS
from . import mps
from .mpsd import MPSDaemons
from .reconcile import DockerRuntime

HOOK_MOUNT = "/opt/gpulab/startup"
_MPS = DEFAULTS["docker"]["mps"]


class DockerSharing(HasTraits):
    """Mixed into DockerGPUSpawner before GPUSpawnerMixin (it refines the share hooks)."""

    mps_enabled = Bool(
        _MPS["enabled"], config=True,
        help="""Run the sharers of each shared GPU under NVIDIA MPS: one control daemon per shared
        GPU in use (a container gpulab starts and removes), each sharer held by the driver to its
        part of the SMs and memory. False: the GPU is time-sliced.""",
    )
    mps_uid = Integer(
        _MPS["uid"], config=True,
        help="""The one UID every MPS sharer and daemon runs as (an MPS server serves one Unix
        user at a time). gpulab's images run as jovyan, 1000.""",
    )
    mps_image = Unicode(
        _MPS["image"] or "", config=True,
        help="The MPS daemon's container image ('': the first sharer's image; the NVIDIA toolkit adds the daemon).",
    )
    mps_control_command = List(
        Unicode(), list(_MPS["control_command"]), config=True,
        help="""The control daemon's command in its container, in the foreground (the NVIDIA
        container toolkit mounts nvidia-cuda-mps-control into containers with GPU devices).""",
    )

    _mps_daemons: MPSDaemons | None = None

    # -- the share hooks of GPUSpawnerMixin ---------------------------------------------------------
    def gpulab_share_hook_dir(self):
        return HOOK_MOUNT  # mounted from the hub's machine (the engine runs there: host networking)

    def gpulab_share_env(self, caps: ShareCaps, env: dict) -> dict[str, str]:
        out = super().gpulab_share_env(caps, env)
        if self.mps_enabled:
            out.update(mps.client_env(caps.thread_percentage, caps.memory_mib))
        return out

    # -- the container ---------------------------------------------------------------------------
    @property
    def mps_settings(self) -> mps.MPSSettings:
        return mps.MPSSettings(self.mps_enabled, self.mps_uid, self.mps_image, tuple(self.mps_control_command))

    def gpulab_mps_daemon(self) -> mps.Daemon | None:
        """The MPS daemon this server's share needs (None: no share, or MPS is off)."""
        alloc = self.gpulab_allocation
        if not self.mps_enabled or alloc is None or not alloc.devices or alloc.devices[0].kind != "shared":
            return None
        d = alloc.devices[0]
        return mps.daemon_for(self.prefix, self.hub_id, d.uuid, d.visible_id, shares_of(d))

    def gpulab_share_container(self, create: dict, host: dict, daemon: mps.Daemon | None) -> tuple[dict, dict]:
        """A sharer's create arguments and host config: the startup hook, and MPS' parts."""
        if self.gpulab_share_caps() is None:
            return create, host
        host = {**host, "binds": {**host.get("binds", {}), str(STARTUP_DIR): {"bind": HOOK_MOUNT, "mode": "ro"}}}
        if daemon is not None:
            host = mps.client_host_config(daemon, host)
            create = {**create, "user": str(self.mps_uid)}
            create["labels"] = {**(create.get("labels") or {}), mps.LABEL_MPS: daemon.gpu_uuid}
        create["volumes"] = sorted({b["bind"] for b in host["binds"].values()})
        return create, host

    async def gpulab_create_container(self, create: dict, host: dict):
        """Create the server's container; a sharer's under MPS while its daemon is sure to run
        (the daemons' lock is held until the container exists, so no sweep removes it first)."""
        daemon = self.gpulab_mps_daemon()
        if daemon is None:
            return await self._gpulab_create(*self.gpulab_share_container(create, host, None))
        async with self.mps_daemons.lock:
            daemon = await self.mps_daemons.ensure(daemon, self.image)
            return await self._gpulab_create(*self.gpulab_share_container(create, host, daemon))

    async def _gpulab_create(self, create: dict, host: dict):
        self.log.debug("[gpulab] %s: host config %s", self._log_name, host)
        create["host_config"] = self.client.create_host_config(**host)
        return await self.docker("create_container", **create)

    @property
    def mps_daemons(self) -> MPSDaemons:
        cls = type(self)
        if cls._mps_daemons is None:
            executor, client = self.executor, self.client  # class-wide, as the reconciler's

            async def call(method, *args, **kwargs):
                return await asyncio.wrap_future(executor.submit(getattr(client, method), *args, **kwargs))

            cls._mps_daemons = MPSDaemons(call, client.create_host_config, self.hub_id, self.mps_settings)
        return cls._mps_daemons


class MPSSweepingRuntime(DockerRuntime):
    """The Docker runtime of a hub with MPS on: every reconcile round (the first at start-up)
    first removes the MPS daemons no sharer uses, such as those a hub that died left behind.
    A sharer's last stop removes its daemon itself (``run_post_stop_hook``); this is the rest."""

    def __init__(self, daemons: MPSDaemons, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.daemons = daemons

    async def list(self):
        try:
            await self.daemons.sweep()  # under the daemons' lock: never races a sharer's creation
        except Exception as e:  # the engine busy or gone: the round's own listing says so
            self.log.warning("[gpulab] docker: sweeping MPS daemons failed: %s", e)
        return await super().list()
