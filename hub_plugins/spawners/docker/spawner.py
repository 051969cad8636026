"""Docker backend: each server is a container with exactly its GPUs, on DockerSpawner.

Applying an allocation = a Docker device request with the allocated device ids (GPU indices or
MIG UUIDs, ``capabilities=[["gpu"]]``) and ``NVIDIA_VISIBLE_DEVICES``; CPU and memory limits from
the profile capped by the user's quota; the user's persistent home volume; the profile's image;
labels ``gpulab.user``, ``gpulab.server``, ``gpulab.gpus`` (and a few more). Containers use host
networking and listen on 127.0.0.1:<port picked here and kept in the state>, and are removed when
they stop: the next start gets a new allocation, and a container's devices cannot change.

What DockerSpawner does as usual: start/stop/poll by container name, state, pulling (per
``pull_policy``). What changes: object names and all create arguments are built by
:mod:`.spec` (never through DockerSpawner's ``str.format`` templates, which would interpret
braces in user names), and a missing image is a message that says to run ``make images``.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import docker
from dockerspawner import DockerSpawner
from jupyterhub.utils import maybe_future, random_port
from traitlets import Bool, Float, Integer, Unicode, default

from ...settings.schema import DEFAULTS
from ..mixin import GPUSpawnerMixin
from . import spec
from .images import ImageCache, missing_image_message
from .mps import FAULT_NOTE
from .reconcile import DockerRuntime, finished_at
from .sharing import DockerSharing, MPSSweepingRuntime
from ..errors import SpawnException


class DockerGPUSpawner(DockerSharing, GPUSpawnerMixin, DockerSpawner):
    """GPU-aware Docker containers (``backend: docker``)."""

    hub_id = Unicode(
        config=True,
        help="""Identifies this hub's containers and volumes on a shared engine (label
        'gpulab.hub'): reconciliation only ever touches objects with this hub's id. Default: a
        hash of gpulab's database URL, stable across restarts.""",
    )
    home_mount = Unicode(
        DEFAULTS["docker"]["home_mount"],
        config=True,
        help="Where the user's persistent home volume is mounted (the image user's home).",
    )
    shm_size = Integer(
        0,
        config=True,
        help="""Size of /dev/shm in bytes. 0: half the server's memory limit, at most 8 GiB (1 GiB
        without a limit); Docker's own 64 MiB breaks PyTorch DataLoader workers.""",
    )
    pids_limit = Integer(
        DEFAULTS["docker"]["pids_limit"], config=True, help="Most processes/threads one container may run (0: unlimited)."
    )
    no_new_privileges = Bool(
        True, config=True, help="Run containers with no-new-privileges (no setuid escalation)."
    )
    remove_orphans = Bool(
        True,
        config=True,
        help="""Remove this hub's containers that no server holds (left by a hub that died while
        starting them), at start-up and at every reconcile, so their GPUs can be given out
        again. False: only report them (their GPUs stay allocated).""",
    )
    orphan_grace_seconds = Float(
        DEFAULTS["docker"]["orphan_grace_seconds"],
        config=True,
        help="Containers younger than this are never removed as orphans.",
    )
    docker_threads = Integer(
        8,
        config=True,
        help="""Threads for Docker API calls, shared by all servers (DockerSpawner uses one, which
        serialises every spawn, stop and poll of the hub).""",
    )
    image_cache_seconds = Float(
        10, config=True, help="How long the engine's image list is reused for the spawn form."
    )

    _image_cache: ImageCache | None = None

    # -- defaults for DockerSpawner ----------------------------------------------------------
    @default("hub_id")
    def _default_hub_id(self):
        return self.gpulab.hub_id

    @default("network_name")
    def _default_network_name(self):
        return "host"

    @default("ip")
    def _default_ip(self):
        return "127.0.0.1"

    @default("remove")
    def _default_remove(self):
        return True

    @default("prefix")
    def _default_prefix(self):
        return "gpulab"

    @default("pull_policy")
    def _default_pull_policy(self):
        return "never"

    @default("exit_poll_interval")
    def _default_exit_poll_interval(self):
        return 0.5  # each a container inspect: at most two a second

    def _object_name_default(self):
        # also what DockerSpawner calls when the image changes; never a format template
        return spec.container_name(self.prefix, self.user.name, self.name or "")

    @default("object_name")
    def _default_object_name(self):
        return self._object_name_default()

    @property
    def volume(self) -> str:
        return spec.volume_name(self.prefix, self.user.name)

    @property
    def executor(self):
        cls = type(self)
        if cls._executor is None:
            cls._executor = ThreadPoolExecutor(self.docker_threads, thread_name_prefix="gpulab-docker")
        return cls._executor

    # -- the seam --------------------------------------------------------------------------
    @property
    def images(self) -> ImageCache:
        cls = type(self)
        if cls._image_cache is None:
            cls._image_cache = ImageCache(self._quick_client, self.image_cache_seconds)
        return cls._image_cache

    def _quick_client(self):
        """A client with a short timeout for the image list: it may be asked on the event loop
        (request parsing), where a dead engine must not stall the hub for a minute."""
        cls = type(self)
        if getattr(cls, "_quick", None) is None:
            kwargs = {"version": "auto", **docker.utils.kwargs_from_env(), **self.client_kwargs, "timeout": 3}
            if self.tls_config:
                kwargs["tls"] = docker.tls.TLSConfig(**self.tls_config)
            cls._quick = docker.APIClient(**kwargs)
        return cls._quick

    def gpulab_profile_available(self, profile):
        if not profile.image:
            return False, "it has no image for the Docker backend (no 'image' in its profile)"
        if self.pull_policy in ("always", "ifnotpresent"):
            return True, ""  # a registry provides it
        present, problem = self.images.present(profile.image)
        if problem:
            return False, problem
        if not present:
            return False, missing_image_message(profile.image)
        return True, ""

    def gpulab_device_env(self, allocation):
        return spec.device_env(allocation.visible_ids)

    async def gpulab_apply(self, allocation, server):
        if any(not d.addressable for d in allocation.devices):
            raise SpawnException(
                "The Docker backend places GPUs itself and needs an inventory of addressable "
                "devices; this hub's inventory comes from a cluster scheduler. Ask an admin.",
                reason="config", status_code=500,
            )
        self.image = server.image
        self.default_url = server.default_url
        res = spec.resources(server, self.shm_size or None)
        self._gpulab_resources = res
        # Spawner traits too: JupyterHub exports them as MEM_LIMIT/CPU_LIMIT (resource displays)
        self.mem_limit = res.mem_limit
        self.cpu_limit = res.cpu_limit
        self.mem_guarantee = res.mem_guarantee
        self.cpu_guarantee = res.cpu_guarantee
        if self.gpulab_mps_daemon() is not None:
            self.gpulab_event(FAULT_NOTE)

    # -- DockerSpawner steps ---------------------------------------------------------------
    async def start(self):
        # host networking: the port is ours to pick (`docker port` says nothing); kept in state
        self.port = random_port()
        return await super().start()

    async def get_ip_and_port(self):
        return self.ip, self.port

    async def gpulab_exited_message(self, status) -> str:
        last = await self._log_tail()
        return (f"The server exited while starting ({status})"
                + (f": {last[-1]}" if last else "") + ". Ask an admin if it keeps happening.")

    async def pull_image(self, image):
        try:
            await super().pull_image(image)
        except docker.errors.NotFound:
            raise SpawnException(missing_image_message(image), reason="image_missing", status_code=400) from None
        except docker.errors.APIError as e:
            raise SpawnException(
                f"{missing_image_message(image)} (pulling it failed: {e.explanation or e})",
                reason="image_missing", status_code=400,
            ) from None

    async def get_object(self):
        obj = await super().get_object()
        if obj is not None:
            owner = (obj.get("Config", {}).get("Labels") or {}).get(spec.LABEL_HUB)
            if owner != self.hub_id:
                # Same name, another hub (or made by hand): never adopt, stop or remove it
                raise SpawnException(
                    f"A container named {self.object_name} exists but does not belong to this hub "
                    f"(label {spec.LABEL_HUB}={owner!r}). Remove it, or give each hub sharing an "
                    "engine its own docker.name_prefix.",
                    reason="name_conflict", status_code=409,
                )
        return obj

    async def create_object(self):
        held = self.gpulab_held
        gpu_ids = list(held.gpu_ids) if held else []
        await self.docker(
            "create_volume", name=self.volume, labels=spec.volume_labels(self.hub_id, self.user.name, self.user.id)
        )
        res = getattr(self, "_gpulab_resources", None) or spec.Resources(shm_size=spec.default_shm(None))
        host = spec.host_config(
            volume=self.volume, home=self.home_mount, gpus=gpu_ids, res=res,
            extra_binds=self.volume_binds, no_new_privileges=self.no_new_privileges,
            pids_limit=self.pids_limit or None,
        )
        labels = spec.labels(
            self.hub_id, self.user.name, self.user.id, self.name or "",
            profile=held.profile if held else "", gpus=gpu_ids,
            gpu_type=held.gpu_type if held else "", spawn_id=held.spawn_id if held else "",
        )
        create = {
            "image": self.image,
            "name": self.object_name,
            "command": await self.get_command(),
            "environment": self.get_env(),
            "volumes": sorted({b["bind"] for b in host["binds"].values()}),
        }
        # admin config (trusted) may add to both, never replace gpulab's labels
        extra_create = self._render_templates(await self._resolve(self.extra_create_kwargs))
        extra_host = self._render_templates(await self._resolve(self.extra_host_config))
        create = spec.merge(create, extra_create)
        create["labels"] = {**(create.get("labels") or {}), **labels}
        host = spec.merge(host, extra_host)
        return await self.gpulab_create_container(create, host)  # a sharer's: see sharing.py

    async def _resolve(self, value):
        value = self._eval_if_callable(value)
        return (await maybe_future(value)) or {}

    async def run_post_stop_hook(self):
        # JupyterHub stops (and so removes) only containers that still run; a container that
        # died (killed, OOM, exited while starting) is removed here, before its GPUs are freed.
        try:
            await self._remove_dead_container()
            if self.mps_enabled:  # the last sharer of a GPU takes its MPS daemon with it
                await self.mps_daemons.sweep()
        finally:
            await super().run_post_stop_hook()

    async def _remove_dead_container(self) -> None:
        try:
            obj = await self.docker("inspect_container", self.object_name)
        except docker.errors.NotFound:
            return
        labels = obj.get("Config", {}).get("Labels") or {}
        if labels.get(spec.LABEL_HUB) != self.hub_id or obj.get("State", {}).get("Running"):
            return
        ended, runtime = finished_at(obj.get("State") or {}), self.gpulab_runtime
        if ended and labels.get(spec.LABEL_SPAWN_ID) and runtime is not None:
            runtime.note_finished(labels[spec.LABEL_SPAWN_ID], ended)  # its usage ends there
        try:
            await self.docker("remove_container", obj["Id"], v=True)
        except docker.errors.APIError as e:  # being removed already
            self.log.debug("[gpulab] %s: removing %s: %s", self._log_name, self.object_name, e)

    async def _log_tail(self, lines: int = 20) -> list[str]:
        """The end of a dead container's output, into the hub's log (the container is removed
        when JupyterHub stops the server)."""
        out: list[str] = []
        for streams in ({"stdout": False, "stderr": True}, {"stdout": True, "stderr": False}):
            # stderr first: that is where a crash says why (the two streams are not interleaved)
            try:
                raw = await self.docker("logs", self.object_name, tail=lines, **streams)
            except docker.errors.APIError:
                return []
            out = raw.decode(errors="replace").strip().splitlines()
            if out:
                break
        if out:
            self.log.warning("[gpulab] %s: container %s exited while starting:\n%s",
                             self._log_name, self.object_name, "\n".join(out))
        return out

    # -- state -----------------------------------------------------------------------------
    def get_state(self):
        state = super().get_state()
        if self.object_id:
            state["port"] = self.port
        return state

    def load_state(self, state):
        super().load_state(state)
        if state.get("port"):
            self.port = state["port"]

    # -- reconciliation (reconcile.py; the loop is reconcile/supervisor.py) ----------------
    @classmethod
    def gpulab_make_runtime(cls, core, config):
        probe = cls(config=config)  # no user: only to read the configured client and settings
        executor, client = probe.executor, probe.client  # class-wide; the runtime outlives spawners

        async def call(method, *args, **kwargs):
            return await asyncio.wrap_future(executor.submit(getattr(client, method), *args, **kwargs))

        args = (call, probe.hub_id, probe.remove_orphans, probe.orphan_grace_seconds, probe.log)
        if probe.mps_enabled:  # each round also removes MPS daemons left without sharers (a crash)
            return MPSSweepingRuntime(probe.mps_daemons, *args)
        return DockerRuntime(*args)

    async def gpulab_adopt(self, found) -> bool:
        """A container whose start the hub that died never recorded: its port is in its
        environment (host networking, 127.0.0.1), so JupyterHub checks it where it listens."""
        try:
            info = await self.docker("inspect_container", found.handle)
        except docker.errors.NotFound:
            return False
        env = dict(e.split("=", 1) for e in (info.get("Config", {}).get("Env") or []) if "=" in e)
        port = urlparse(env.get("JUPYTERHUB_SERVICE_URL", "")).port
        if not port or not (info.get("State") or {}).get("Running"):
            return False
        self.port = port
        self.object_id = info["Id"]
        self._gpulab_adopted_url = self.gpulab_listen_url((self.ip, port)) + self.server.base_url
        return True
