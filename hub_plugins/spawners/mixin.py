"""The GPU logic every backend shares, written once.

``GPUSpawnerMixin`` goes first in a spawner's bases (``class X(GPUSpawnerMixin, SomeSpawner)``).
It validates the request, checks the quota, reserves devices, reports progress in words a person
reads, persists what it holds in the spawner state and frees it whenever the server ends. A
backend only says how to *apply* an allocation:

- ``gpulab_apply(allocation, profile)``: configure itself (command, image, limits, requests).
- ``gpulab_device_env(allocation)``: the environment that selects the devices.
- ``gpulab_profile_available(profile)``: whether it can run a profile at all, and why not.

Where JupyterHub calls us (6.x spawn path):

- ``run_pre_spawn_hook``: parse + quota + allocate + apply, before ``start`` and outside
  ``start_timeout``. A refusal raises ``SpawnException`` (400/403/409), which the REST API and
  the spawn page show verbatim.
- ``run_post_stop_hook``: JupyterHub runs it after every stop, including a failed start and a
  server found dead by polling or at hub start-up: the one place we release.
"""

from __future__ import annotations

import asyncio
import html

from jupyterhub.spawner import SpawnException
from jupyterhub.utils import maybe_future, url_path_join, wait_for_http_server
from sqlalchemy.exc import DBAPIError
from traitlets import Bool, HasTraits, default

from ..accounting import stops
from ..core import GPULab
from ..outage import MESSAGE as OUTAGE_MESSAGE
from ..outage import is_outage, mark_down
from ..pages.cleanup import RefusedServers
from ..reconcile import gate
from ..spawn.form import build_model, render
from ..gpu.devices import format_devices
from ..gpu.sharing import STARTUP_DIR, ShareCaps, caps_for, prepend_path, share_env
from ..spawn.request import STANDARD_EXTRAS, RequestError, SpawnRequest, from_form, parse
from ..accounting.keeper import BudgetRefused
from ..store.allocator import Allocation, NoCapacity, Owner, QuotaRefused
from ..store.models import utcnow
from ..validation import InputError, json_body
from .recovery import HeldGPUs, check_after_restart, heal_hub_session, stop_leftovers
from .waiting import wait_in_queue


class GPUSpawnerMixin(HasTraits):
    """Mix into any JupyterHub Spawner, first in the bases. (A HasTraits subclass, so that its
    ``@default`` handlers for Spawner traits are registered.)"""

    watch_start = Bool(
        True,
        config=True,
        help="""Watch the server while it starts: if it exits before answering, fail the spawn at
        once (and release its GPUs) instead of waiting for http_timeout.""",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gpulab_request: SpawnRequest | None = None
        self.gpulab_allocation: Allocation | None = None
        self.gpulab_held: HeldGPUs | None = None
        self._gpulab_events: list[dict] = []
        self._gpulab_wakeup = asyncio.Event()
        self._gpulab_starting = False
        self._gpulab_stop_requested = False
        # rows may exist for this server (reserving now, reserved, or restored from state): only
        # then does a stop cost a database round trip
        self._gpulab_may_hold = False
        self._gpulab_ready = False
        self._gpulab_last_alive = None
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
    def gpulab_apply(self, allocation: Allocation, profile):
        """Apply the allocation and profile to this spawner. May be async."""

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
        """JupyterHub's "did the last spawn fail" (a private property): False after gpulab refused a
        request, since nothing ran. JupyterHub 6.1 replaces a failed spawner on the next request
        (``User.get_spawner(replace_failed=True)``) without keeping the replacement, so a retry
        of a refused server (e.g. again with ``"queue": true``) spawned on a third object while
        the API looked at the second and answered 201 although the server was still pending.
        A refused spawner holds nothing, so it is fit to be used again as it is."""
        if getattr(self, "_gpulab_refused", False):
            return False
        return super()._failed

    @property
    def gpulab_owner(self) -> Owner:
        return Owner(self.user.id, self.user.name, self.name or "")

    @property
    def gpulab_groups(self) -> list[str]:
        return sorted(g.name for g in self.user.groups)

    def gpulab_event(self, message: str, progress: int | None = None) -> None:
        """Add a line to the spawn progress page (and the log)."""
        # the marked html_message is how the progress page tells gpulab's lines from the backend's
        event = {"message": message, "html_message": f'<span class="gpulab-status">{html.escape(message)}</span>'}
        if progress is not None:
            event["progress"] = progress
        self._gpulab_events.append(event)
        self._gpulab_wakeup.set()
        self.log.info("[gpulab] %s: %s", self._log_name, message)

    def gpulab_check_body(self) -> None:
        """A REST spawn's body as sent (JupyterHub has parsed it already, leniently): JSON or no
        content type, at most 64 KB, no NaN/Infinity. The form's POST is not an API call."""
        from jupyterhub.apihandlers.base import APIHandler

        handler = getattr(self, "handler", None)
        request = getattr(handler, "request", None)
        if request is None or not isinstance(handler, APIHandler):
            return
        try:
            json_body(request.body, request.headers.get("Content-Type"))
        except InputError as e:
            raise SpawnException(str(e), reason="invalid_options", status_code=e.status) from None

    def gpulab_parse(self, options) -> SpawnRequest:
        core = self.gpulab
        self.gpulab_check_body()
        try:
            req = parse(options, core.catalog, core.inventory().types, core.max_gpus_per_server,
                        self.gpulab_extra_options())
        except RequestError as e:
            raise SpawnException(str(e), reason="invalid_options", status_code=400) from None
        ok, why = self.gpulab_profile_available(req.profile)
        if not ok:
            raise SpawnException(f"Profile '{req.profile.name}' cannot start here: {why}",
                                 reason="profile_unavailable", status_code=400)
        return req

    def gpulab_extra_options(self) -> dict:
        """Further ``user_options`` keys and their validators (backends may add theirs)."""
        return dict(STANDARD_EXTRAS)

    # -- the spawn form --------------------------------------------------------------------
    @default("options_form")
    def _gpulab_default_options_form(self):
        return lambda spawner: spawner.gpulab_options_form()

    @default("options_from_form")
    def _gpulab_default_options_from_form(self):
        return from_form

    @default("apply_user_options")
    def _gpulab_default_apply_user_options(self):
        # gpulab applies user_options itself in run_pre_spawn_hook; this keeps JupyterHub from
        # warning that they are unhandled.
        return lambda spawner, user_options: None

    async def gpulab_options_form(self) -> str:
        await self.gpulab.wait_ready()
        model = await self.gpulab.run(
            build_model, self.gpulab, self.user.id, self.user.name, self.gpulab_groups, self.name or "",
            self.gpulab_profile_available, self.gpulab_profile_info, self.gpulab_prefill(),
        )
        enforced = self.gpulab_enforced_limits()
        for p in model.get("profiles", []):  # never promise a limit the host cannot keep
            if "cpu" not in enforced:
                p["cpu_limit"] = None
            if "memory" not in enforced:
                p["mem_limit"] = None
        return render(model)

    def gpulab_prefill(self) -> dict:
        """What the form shows chosen: the ``opt-`` query parameters of the spawn page (a shared
        link; JupyterHub 6 sets ``spawner.handler`` while it renders the form), else the choice
        gpulab just refused (a link's or the form's own), shown again with the refusal."""
        handler = getattr(self, "handler", None)
        request = getattr(handler, "request", None)
        if request is not None:
            link = {k[4:]: v[-1].decode("utf8", "replace") for k, v in request.query_arguments.items()
                    if k.startswith("opt-") and v}
            if link:
                return link
        return dict(getattr(self, "_gpulab_refused_options", None) or {})

    # -- lifecycle -------------------------------------------------------------------------
    def gpulab_heal_hub_session(self) -> None:
        heal_hub_session(self)

    async def run_pre_spawn_hook(self):
        self.gpulab_heal_hub_session()
        self._gpulab_events.clear()
        self._gpulab_starting = False
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
            await maybe_future(self.gpulab_apply(alloc, req.profile))
            await maybe_future(super().run_pre_spawn_hook())
        except BaseException:
            await self.gpulab_release()
            raise

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
        self._gpulab_may_hold = True
        try:
            try:
                alloc = await core.run(core.allocate, self.gpulab_owner, req, self.gpulab_groups)
            except NoCapacity as e:
                if not (req.extra("queue") and core.queue_enabled):
                    raise
                alloc = await wait_in_queue(self, req, e)
        except RequestError as e:
            self._gpulab_may_hold = False  # refused: nothing was reserved
            raise SpawnException(str(e), reason="invalid_options", status_code=400) from None
        except QuotaRefused as e:
            self._gpulab_may_hold = False
            await core.run(core.refused, "quota", self.user.name, self.name or "", e.decision.message)
            raise SpawnException(e.decision.message, reason="quota", status_code=403) from None
        except BudgetRefused as e:
            self._gpulab_may_hold = False
            await core.run(core.refused, "budget", self.user.name, self.name or "", str(e))
            raise SpawnException(str(e), reason="budget", status_code=403) from None
        except NoCapacity as e:
            self._gpulab_may_hold = False
            message = await core.run(core.refused, "capacity", self.user.name, self.name or "", "", e)
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

    async def gpulab_release(self) -> list[str]:
        """Free the GPUs and close the usage record, with why the server ended: a stop someone
        asked for ('user', unless a service noted culled/budget/runtime/admin first), a server
        found dead ('crashed', closed at the last moment it was seen alive) or one that never
        came up ('failed', not charged)."""
        if not self._gpulab_may_hold:
            # nothing was reserved (a refused request) and nothing restored from state (held
            # GPUs are not a test: clear_state may already have dropped them). A hub that died
            # mid-spawn leaves its rows to the reconcile.
            return []
        stopped_by = ""
        if self._gpulab_stop_requested:
            cullers = self.gpulab.live.current.culler["external_cullers"] if self.gpulab.live else ()
            reason, stopped_by = stops.cause(self._gpulab_requester, self.user.name, cullers)
        elif self._gpulab_ready:
            reason = "crashed"
        else:
            reason = "failed"
        core, owner = self.gpulab, self.gpulab_owner
        # never free a device something still uses: see recovery.py
        spawns, alive = await stop_leftovers(self)
        keys = await core.run(core.release, owner, None, reason, alive, stopped_by)
        for spawn_id in spawns:
            self.gpulab_runtime.forget(spawn_id)  # (spawns is empty without a runtime)
        if reason == "culled":  # by an external culler (gpulab's own counts its culls itself)
            await core.run(core.usage.event, "culled", "external", self.user.name,
                           self.name or "", f"stopped by {stopped_by}")
        if keys:
            self.gpulab.notify_released()  # wake requests waiting in the queue
        if keys:
            self.log.info("[gpulab] %s: released %s (%s)", self._log_name, ", ".join(keys), reason)
        self.gpulab_allocation = None
        self.gpulab_holding = None
        self._gpulab_may_hold = False
        self._gpulab_ready = False
        self._gpulab_stop_requested = False
        self._gpulab_requester = None
        return keys

    # -- liveness for accounting -----------------------------------------------------------
    async def stop(self, now=False):
        self._gpulab_stop_requested = True
        self._gpulab_requester = stops.requester(self.user.name)
        return await super().stop(now=now)

    async def poll(self):
        self.gpulab_heal_hub_session()  # JupyterHub commits right after polling (stop, checks)
        status = await super().poll()
        if self.pending == "check" and not self._gpulab_checked:
            self._gpulab_checked = True
            status = await self.gpulab_check_after_restart(status)
        if status is None and self._gpulab_ready:
            now = utcnow()
            self._gpulab_last_alive = now
            beat = self.gpulab.settings.billing.heartbeat_seconds
            held = self.gpulab_held
            if held and (self._gpulab_last_beat is None or (now - self._gpulab_last_beat).total_seconds() >= beat):
                self._gpulab_last_beat = now
                try:
                    await self.gpulab.run(self.gpulab.usage.heartbeat, [held.spawn_id], now)
                except Exception:
                    self.log.exception("[gpulab] heartbeat failed for %s", self._log_name)
        return status

    async def gpulab_check_after_restart(self, status):
        """Adopt a server the hub that died started but never recorded (see ``recovery.py``)."""
        return await check_after_restart(self, status)

    async def get_url(self):
        if self._gpulab_adopted_url:
            return self._gpulab_adopted_url
        return await super().get_url()

    async def gpulab_mark_ready(self) -> None:
        self._gpulab_ready = True
        self._gpulab_last_alive = self._gpulab_last_beat = utcnow()
        if self.gpulab_held:
            await self.gpulab.run(self.gpulab.usage.mark_ready, self.gpulab_held.spawn_id,
                                  self._gpulab_last_alive)

    async def start(self):
        profile = self.gpulab_request.profile if self.gpulab_request else None
        what = f"profile '{profile.display_name}'" if profile else "server"
        self._gpulab_starting = True
        self.gpulab_event(f"Starting JupyterLab ({what}) ...", progress=40)
        url = await super().start()
        await self.gpulab_wait_started(url)
        await self.gpulab_mark_ready()
        return url

    async def gpulab_wait_started(self, url) -> None:
        """Wait until the server answers, failing at once if it dies first.

        JupyterHub itself only polls the server's URL until ``http_timeout``, so a server that
        crashes at start-up would hold its GPUs (and keep its user waiting) for that long."""
        if not self.watch_start or getattr(self, "internal_ssl", False) or self.server is None:
            return
        if isinstance(url, (tuple, list)):
            ip, port = url
            url = f"http://{'127.0.0.1' if ip in ('', '0.0.0.0') else ip}:{int(port)}"
        probe = url.rstrip("/") + url_path_join(self.server.base_url, "api")

        async def died():
            while True:
                status = await self.poll()
                if status is not None:
                    return status
                await asyncio.sleep(0.25)

        up = asyncio.ensure_future(wait_for_http_server(probe, timeout=self.http_timeout))
        dead = asyncio.ensure_future(died())
        done, pending = await asyncio.wait({up, dead}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if dead in done:
            raise SpawnException(
                f"The server exited while starting (exit status {dead.result()}). "
                "Its output is in the hub's log; ask an admin if it keeps happening.",
                reason="exited",
                status_code=500,
            )
        up.result()  # a timeout is JupyterHub's to report, as usual
        self.gpulab_event("JupyterLab is up", progress=90)

    async def run_post_stop_hook(self):
        self.gpulab_heal_hub_session()
        try:
            await maybe_future(super().run_post_stop_hook())
        finally:
            await self.gpulab_release()

    # -- environment and state -------------------------------------------------------------
    def gpulab_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        req, alloc = self.gpulab_request, self.gpulab_allocation
        if req is not None:
            env.update(req.profile.env)
            env["GPULAB_PROFILE"] = req.profile.name
        env.update(getattr(self, "_gpulab_provided_env", {}))
        env["GPULAB_HUB_ID"] = self.gpulab.hub_id  # how the reconcile finds this hub's servers
        if alloc is not None:
            env.update(self.gpulab_device_env(alloc))
            env["GPULAB_GPUS"] = ",".join(alloc.visible_ids)
            env["GPULAB_GPU_COUNT"] = str(alloc.count)
            env["GPULAB_GPU_TYPE"] = alloc.gpu_type
            env["GPULAB_SPAWN_ID"] = alloc.spawn_id
        return env

    def get_env(self):
        env = super().get_env()
        env.update(self.gpulab_env())
        caps = self.gpulab_share_caps()
        if caps is not None:
            env.update(self.gpulab_share_env(caps, env))
        return env

    # -- shares of a shared GPU (docs/sharing.md) ---------------------------------------------
    def gpulab_share_caps(self) -> ShareCaps | None:
        """What this server's share of a shared GPU promises (None: it holds no share)."""
        alloc = self.gpulab_allocation
        if alloc is None:
            return None
        return caps_for(alloc.gpu_type, alloc.count, alloc.devices,
                        lambda: self.gpulab.inventory().of_type(alloc.gpu_type))

    def gpulab_share_env(self, caps: ShareCaps, env: dict) -> dict[str, str]:
        """The variables holding a sharer to its share, cooperatively: frameworks' memory caps
        and the startup hook applying them. Backends with stronger means add theirs."""
        out = share_env(caps)
        hook = self.gpulab_share_hook_dir()
        if hook:
            out["PYTHONPATH"] = prepend_path(env.get("PYTHONPATH", ""), hook)
        return out

    def gpulab_share_hook_dir(self) -> str | None:
        """Where the server finds gpulab's startup hook (None: it cannot)."""
        return str(STARTUP_DIR)

    def get_state(self):
        state = super().get_state()
        held = self.gpulab_held
        if held is not None:
            state.update(
                gpus=list(held.gpus), gpu_type=held.gpu_type, profile=held.profile,
                spawn_id=held.spawn_id, gpu_devices=list(held.devices),
            )
        return state

    def load_state(self, state):
        super().load_state(state)
        if state.get("spawn_id"):
            # a server whose state was saved had started: if it is still alive it is charged
            self._gpulab_ready = True
            self._gpulab_may_hold = True
            self.gpulab_held = HeldGPUs(
                state["spawn_id"], tuple(state.get("gpus", ())), state.get("gpu_type", ""),
                state.get("profile", ""), tuple(state.get("gpu_devices", ())),
            )
            self.gpulab_holding = state["spawn_id"]

    def clear_state(self):
        super().clear_state()
        # The rows in our tables are released by run_post_stop_hook, not here: LocalProcessSpawner
        # clears state from poll() too, before JupyterHub has decided the server is gone.
        self.gpulab_held = None
        self._gpulab_adopted_url = ""

    # -- progress --------------------------------------------------------------------------
    async def progress(self):
        """Our events as they happen, then the backend's own. JupyterHub stops iterating when
        the spawn finishes."""
        sent = 0
        backend_done = False
        while True:
            while sent < len(self._gpulab_events):
                yield self._gpulab_events[sent]
                sent += 1
            if not backend_done and self._gpulab_starting:
                backend_done = True
                async for event in super().progress():
                    yield event
                continue
            self._gpulab_wakeup.clear()
            try:
                await asyncio.wait_for(self._gpulab_wakeup.wait(), timeout=1)
            except asyncio.TimeoutError:
                pass
