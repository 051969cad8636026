"""The GPU logic every backend shares, written once.

``GPUSpawnerMixin`` goes first in a spawner's bases (``class X(GPUSpawnerMixin, SomeSpawner)``).
It validates the request, checks the quota, reserves devices, reports progress in words a person
reads, persists what it holds in the spawner state and frees it whenever the server ends. A
backend only says how to *apply* an allocation:

- ``gpulab_apply(allocation, spec)``: configure itself (command, image, limits, requests) from the
  server's :class:`~hub_plugins.spawn.spec.ServerSpec`, resolved once here (the profile, the user's
  effective limits, CPU and memory capped by them): backends do no quota work of their own.
- ``gpulab_device_env(allocation)``: the environment that selects the devices.
- ``gpulab_profile_available(profile)``: whether it can run a profile at all, and why not.
- ``gpulab_stop_cleanup()`` (optional): its clean-up once a server stopped, before the release.

Where JupyterHub calls us (6.x spawn path):

- ``run_pre_spawn_hook``: parse + quota + allocate + apply, before ``start`` and outside
  ``start_timeout``. A refusal raises ``SpawnException`` (400/403/409), which the REST API and
  the spawn page show verbatim.
- ``run_post_stop_hook``: JupyterHub runs it after every stop, including a failed start and a
  server found dead by polling or at hub start-up: the one place we release.

The other parts live in sibling modules (the class's docstring says which).
"""

from __future__ import annotations

import asyncio

from jupyterhub.utils import maybe_future, url_path_join
from sqlalchemy.exc import DBAPIError
from traitlets import Bool, Float

from ..core import GPULab
from ..quota import Effective
from ..outage import MESSAGE as OUTAGE_MESSAGE, is_outage, mark_down
from ..pages.cleanup import RefusedServers
from ..reconcile import gate
from ..gpu.devices import format_devices
from ..spawn.request import RequestError, SpawnRequest
from ..spawn.spec import ServerSpec
from ..cluster.fit import never_fits
from ..gpu.choice import pick_type
from ..accounting.keeper import BudgetRefused
from ..queue.borrowing import BORROWED_NOTE, BorrowRefused
from ..store.allocator import Allocation, NoCapacity, Owner, QuotaRefused
from .environment import GPUEnvironmentMixin
from .lifecycle import Event, Phase
from .liveness import GPULivenessMixin
from .options import GPUOptionsMixin
from .progress import GPUProgressMixin
from .readiness import STARTING, probe_interval, wait_answering
from .recovery import HeldGPUs, heal_hub_session
from .waiting import wait_in_queue
from .errors import SpawnException


class GPUSpawnerMixin(GPUOptionsMixin, GPUProgressMixin, GPULivenessMixin, GPUEnvironmentMixin):
    """Mix into any JupyterHub Spawner, first in the bases. (A HasTraits subclass, so that its
    ``@default`` handlers for Spawner traits are registered.) Its parts, by responsibility:
    ``options.py`` (request and form), ``progress.py``, ``liveness.py`` (stop, poll, release)
    and ``environment.py`` (environment and state); the spawn itself stays here."""

    watch_start = Bool(
        True, config=True,
        help="""Watch the server while it starts: if it exits before answering, fail the spawn at
        once (and release its GPUs) instead of waiting for http_timeout.""",
    )
    ready_probe_interval = Float(
        0.1, config=True,
        help="""The longest wait, in seconds, between probes of a starting server (is it answering
        yet?). With few servers starting it is probed more often: see ready_probes_per_second.""",
    )
    ready_probes_per_second = Float(
        200.0, config=True,
        help="""Probes a second the hub spends on all the servers starting at once, shared among
        them: one server alone is probed every 10 ms, 20 or more every ready_probe_interval.
        0: every server every ready_probe_interval.""",
    )
    exit_poll_interval = Float(
        0.25, config=True,
        help="""Seconds between asking the backend whether a starting server died (a process check
        locally, an API call on Docker and the clusters).""",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gpulab_request: SpawnRequest | None = None
        self.gpulab_spec: ServerSpec | None = None  # resolved once per spawn, before reserving
        self.gpulab_allocation: Allocation | None = None
        self.gpulab_held: HeldGPUs | None = None
        self._gpulab_events: list[dict] = []
        self._gpulab_wakeup = asyncio.Event()
        # the one lifecycle state (lifecycle.py): moved only by gpulab_lifecycle(event)
        self.gpulab_phase = Phase.IDLE
        self._gpulab_last_alive = None
        self._gpulab_ready_note = None  # (task, spawn id, when): gpulab_mark_ready
        self._gpulab_last_beat = None
        self._gpulab_requester = None  # who asked for the current stop, where the hub said
        self._gpulab_checked = False  # the start-up check (adoption) ran
        # the spawn id this server holds until released (gpulab_held is cleared with the state,
        # which LocalProcessSpawner does as soon as its process is seen dead)
        self.gpulab_holding: str | None = None
        self._gpulab_adopted_url = ""
        if self.user is not None:
            self.gpulab.register(self)

    @property
    def gpulab(self) -> GPULab:
        return GPULab.instance(config=self.config)

    # A spawn is pending until JupyterHub's own spawn future is done. JupyterHub clears the flag
    # at the start of the cleanup that follows a failed start (User.stop); if its slow-spawn
    # timeout fires inside that window (a busy hub: 200 refusals at once took >10 s), the
    # handler polls, finds no process and reads the still-running future's exception, which
    # raises InvalidStateError: a 500 instead of our 409. Pending until done gives a 202 there.
    @property
    def _spawn_pending(self) -> bool:
        future = self._spawn_future
        return self.__dict__.get("_gpulab_spawn_pending", False) or (future is not None and not future.done())

    @_spawn_pending.setter
    def _spawn_pending(self, value: bool) -> None:
        self.__dict__["_gpulab_spawn_pending"] = value

    # -- backend seam (override in backends) -----------------------------------------------
    def gpulab_apply(self, allocation: Allocation, spec: ServerSpec):
        """Apply the allocation and the resolved spec to this spawner. May be async."""

    def gpulab_device_env(self, allocation: Allocation) -> dict[str, str]:
        ids = ",".join(allocation.visible_ids)
        return {"CUDA_VISIBLE_DEVICES": ids, "NVIDIA_VISIBLE_DEVICES": ids}

    def gpulab_profile_available(self, profile) -> tuple[bool, str]:
        return True, ""

    def gpulab_enforced_limits(self) -> set[str]:
        """Which of a profile's limits this backend holds servers to ('cpu', 'memory'): the form
        promises only those."""
        return {"cpu", "memory"}

    def gpulab_profile_info(self, profile) -> dict | None:
        """Optional words about the profile's environment for the form: ``installing``
        ({percent, text}: a progress bar while it is built) and ``admin`` (a note for admins)."""
        return None

    @classmethod
    def gpulab_make_runtime(cls, core, config):
        """The backend's adapter for what really runs (``reconcile/runtime.py``), or None: then
        allocations are reconciled from the hub's own knowledge only."""
        return None

    async def gpulab_adopt(self, found) -> bool:
        """Take over a server this backend runs for this spawner but whose handle or spawn id the
        spawner's state lacks (a hub died between starting it and recording it): take its
        handle, and set ``_gpulab_adopted_url`` to where it listens. Return whether it was taken."""
        return False

    @property
    def gpulab_runtime(self):
        core = self.gpulab
        if core.runtime is None:
            core.runtime = type(self).gpulab_make_runtime(core, self.config)
        return core.runtime

    # -- helpers ---------------------------------------------------------------------------
    @property
    def _failed(self):
        """JupyterHub's "did the last spawn fail": False after gpulab refused a request (nothing
        ran, nothing is held). JupyterHub 6.1 replaces a failed spawner on the next request
        without keeping the replacement, so a retry of a refused server spawned on a third object
        while the API looked at the second (201 for a server still pending)."""
        if getattr(self, "_gpulab_refused", False):
            return False
        return super()._failed

    @property
    def gpulab_owner(self) -> Owner:
        return Owner(self.user.id, self.user.name, self.name or "")

    @property
    def gpulab_groups(self) -> list[str]:
        return sorted(g.name for g in self.user.groups)

    # -- lifecycle -------------------------------------------------------------------------
    def gpulab_heal_hub_session(self) -> None:
        heal_hub_session(self)

    async def run_pre_spawn_hook(self):
        self.gpulab_heal_hub_session()
        self._gpulab_events.clear()
        self._gpulab_refused = False
        try:
            req = self.gpulab_parse(self.user_options)
            self.gpulab_request = req
            await self.gpulab_wait_for_startup()
            alloc = await self.gpulab_reserve(req)
        except SpawnException as e:
            # refused before anything ran (not a queued request that timed out or was cancelled)
            self._gpulab_refused = getattr(e, "reason", "") not in ("cancelled", "queue_timeout")
            self._gpulab_refused_options = dict(self.user_options or {})  # the form shows them again
            if self.name:  # a refused named server that never ran leaves no row behind
                RefusedServers.instance(config=self.config).forget_later(self)
            raise
        try:
            self._gpulab_provided_env = {}
            for provider in self.gpulab.env_provider_functions():
                self._gpulab_provided_env.update(await maybe_future(provider(self, alloc, req.profile)) or {})
            await maybe_future(self.gpulab_apply(alloc, self.gpulab_spec))
            await maybe_future(super().run_pre_spawn_hook())
        except BaseException:
            await self.gpulab_release()
            raise

    def gpulab_resolve(self, req: SpawnRequest) -> tuple[ServerSpec, Effective, str | None]:
        """(The server's spec, the quota it was resolved with, which the reservation checks too;
        where a cluster's scheduler places the GPUs, why no node could ever hold the request),
        once, in the worker thread that reserves, before anything is written."""
        core = self.gpulab
        eff = core.effective(self.user.name, self.gpulab_groups)
        why = None
        if req.gpus and core.placement != "gpulab":
            inv = core.inventory()
            # the type the allocation would pick, counting every device: ever, not now
            gpu_type, _fits = pick_type(core.candidate_types(req, eff, inv), inv.devices, req.gpus)
            why = never_fits(inv, gpu_type, req.gpus)
        return ServerSpec.resolve(req.profile, eff.limits), eff, why

    async def gpulab_resolve_and_allocate(self, req: SpawnRequest) -> Allocation:
        """Resolve the spec (``self.gpulab_spec``) and reserve in one trip to the worker threads
        (at 50 spawns at once each trip waited ~0.1 s for the hub's loop to take it back)."""
        core = self.gpulab
        resolved: list = []

        def reserve():
            spec, eff, why = self.gpulab_resolve(req)
            resolved.append(spec)
            if why:
                return why
            return core.allocate(self.gpulab_owner, req, self.gpulab_groups, eff=eff)

        try:
            got = await core.run(reserve)
        finally:
            self.gpulab_spec = resolved[0] if resolved else None  # also when it waits in the queue
        if isinstance(got, str):
            self.gpulab_lifecycle(Event.REFUSED)
            raise SpawnException(got, reason="never_fits", status_code=409)
        return got

    async def gpulab_wait_for_startup(self) -> None:
        """A restarted hub first reconciles what the old one left running (see
        ``reconcile/supervisor.py``): no GPU is handed out before that."""
        if not gate.is_open():
            self.gpulab_event("The hub has just restarted and is checking which servers run; "
                              "your request goes ahead in a moment ...")
            await self.gpulab.wait_ready()

    async def gpulab_reserve(self, req: SpawnRequest) -> Allocation:
        """Reserve what ``req`` asks for, or raise a SpawnException that says why not."""
        core = self.gpulab
        self.gpulab_lifecycle(Event.RESERVE)
        try:
            try:
                alloc = await self.gpulab_resolve_and_allocate(req)
            except NoCapacity as e:
                if not (req.extra("queue") and core.queue_enabled):
                    raise
                alloc = await wait_in_queue(self, req, e)
        except RequestError as e:
            self.gpulab_lifecycle(Event.REFUSED)  # nothing was reserved
            raise SpawnException(str(e), reason="invalid_options", status_code=400) from None
        except BorrowRefused as e:
            self.gpulab_lifecycle(Event.REFUSED)
            await core.run(core.refused, "borrow", self.user.name, self.name or "", str(e))
            raise SpawnException(str(e), reason="borrow", status_code=403) from None
        except QuotaRefused as e:
            self.gpulab_lifecycle(Event.REFUSED)
            await core.run(core.refused, "quota", self.user.name, self.name or "", e.decision.message)
            raise SpawnException(e.decision.message, reason="quota", status_code=403) from None
        except BudgetRefused as e:
            self.gpulab_lifecycle(Event.REFUSED)
            await core.run(core.refused, "budget", self.user.name, self.name or "", str(e))
            raise SpawnException(str(e), reason="budget", status_code=403) from None
        except NoCapacity as e:
            self.gpulab_lifecycle(Event.REFUSED)
            message = await core.run(core.refused, "capacity", self.user.name, self.name or "", "", e,
                                     not req.extra("preemptible"))
            raise SpawnException(message, reason="capacity", status_code=409) from None
        except DBAPIError as e:
            if not is_outage(str(e), bool(getattr(e, "connection_invalidated", False))):
                raise
            mark_down(str(e))  # whether a reservation committed is unknown: the reconcile settles it
            raise SpawnException(OUTAGE_MESSAGE, reason="database", status_code=503) from None
        self.gpulab_allocation = alloc
        self.gpulab_held = HeldGPUs.of(alloc)
        self._gpulab_refused_options = None
        self.gpulab_holding = alloc.spawn_id
        for w in alloc.warnings:
            self.gpulab_event(w)
        if alloc.borrowed:
            self.gpulab_event(BORROWED_NOTE)
        caps = self.gpulab_share_caps()
        if alloc.devices and caps is not None:
            d = alloc.devices[0]
            self.gpulab_event(
                f"Reserved {format_devices(alloc.gpu_type, alloc.count)} on GPU {d.visible_id}: "
                f"{caps.fraction} of the GPU, up to {caps.memory_mib / 1024:.1f} GB of its memory, "
                f"compute time-shared with up to {caps.shares - caps.held} other server(s)",
                progress=20,
            )
        elif alloc.devices:
            self.gpulab_event(
                f"Reserved GPUs {','.join(alloc.visible_ids)} ({format_devices(alloc.gpu_type, len(alloc.devices))})",
                progress=20,
            )
        elif alloc.count:  # engine placement: the scheduler picks the devices
            self.gpulab_event(
                f"Quota checked: asking the scheduler for {format_devices(alloc.gpu_type, alloc.count)}",
                progress=20,
            )
        else:
            self.gpulab_event("No GPUs requested: this server is CPU-only", progress=20)
        return alloc

    async def get_url(self):
        if self._gpulab_adopted_url:
            return self._gpulab_adopted_url
        return await super().get_url()

    async def start(self):
        profile = self.gpulab_request.profile if self.gpulab_request else None
        what = f"profile '{profile.display_name}'" if profile else "server"
        self.gpulab_lifecycle(Event.START)
        self.gpulab_event(f"Starting JupyterLab ({what}) ...", progress=40)
        url = await super().start()
        await self.gpulab_wait_started(url)
        await self.gpulab_mark_ready()
        return url

    def gpulab_listen_url(self, url) -> str:
        """Where a server listens, ``http://host:port`` without a path, from what ``start``
        returned (a URL, or ``(ip, port)``): the readiness probe and adoption both ask here."""
        if isinstance(url, (tuple, list)):
            ip, port = url
            return f"http://{'127.0.0.1' if ip in ('', '0.0.0.0') else ip}:{int(port)}"
        return url.rstrip("/")

    async def gpulab_exited_message(self, status) -> str:
        """What a person reads when the server exited while starting (backends with its output
        at hand add its last line)."""
        return (f"The server exited while starting (exit status {status}). "
                "Its output is in the hub's log; ask an admin if it keeps happening.")

    # Whether what listens on the server's port is the server itself: then the wait below looks
    # for its socket in the kernel's table and ends when it listens, with no request of its own
    # (JupyterHub's check follows). Not where a proxy may accept first (Docker's) or the port is
    # another host's: those connect and wait for an HTTP answer. A fact, not an option.
    gpulab_listening_is_up = False

    async def gpulab_wait_started(self, url) -> None:
        """Wait until the server answers (or, where ``gpulab_listening_is_up``, listens), failing at
        once if it dies first.

        JupyterHub itself only polls the server's URL until ``http_timeout``, so a server that
        crashes at start-up would hold its GPUs (and keep its user waiting) for that long. It
        probes at short, steady intervals (``readiness.probe_interval``), not with JupyterHub's
        exponential back-off (up to a second late for a server up after ~2 s), and asks the
        backend whether the server died every ``exit_poll_interval`` s."""
        if not self.watch_start or getattr(self, "internal_ssl", False) or self.server is None:
            return
        listen = self.gpulab_listen_url(url)
        probe = listen + url_path_join(self.server.base_url, "api")
        with STARTING.one():
            status = await wait_answering(
                probe, self.http_timeout, self.exit_poll_interval, self.poll,
                lambda: probe_interval(STARTING.count, self.ready_probes_per_second, self.ready_probe_interval),
                http=not self.gpulab_listening_is_up)
        if status is not None:
            raise SpawnException(await self.gpulab_exited_message(status), reason="exited", status_code=500)
        self.gpulab_event("JupyterLab is up", progress=90)

    def gpulab_stop_cleanup(self):
        """The backend's clean-up once its server stopped (a function for a worker thread), or
        None: run in the release's trip, or before a configured ``post_stop_hook`` in its own."""
        return None

    async def run_post_stop_hook(self):  # the local backend's skips the await where it can
        self.gpulab_heal_hub_session()
        await self.gpulab_post_stop(self.gpulab_stop_cleanup())

    async def gpulab_post_stop(self, cleanup):  # the configured hook, then the release
        try:
            if cleanup is not None and self.post_stop_hook is not None:
                await self.gpulab.run(cleanup)
                cleanup = None
            await maybe_future(super().run_post_stop_hook())
        finally:
            await self.gpulab_release(cleanup)

