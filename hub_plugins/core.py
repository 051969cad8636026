"""The GPU core: one per hub process, shared by every spawner whatever the backend.

It owns the inventory, the profile catalogue, the quota configuration and the allocator, and
answers the questions spawners and the form ask: what may this user have, what is free, reserve
it, free it. Everything here is synchronous; spawners call it from a worker thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import importlib
import logging
import os
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

from traitlets import Any, Dict, Enum, Integer, List, Unicode, default, observe, validate
from traitlets.config import SingletonConfigurable

from . import outage
from .batching import GroupCommit
from .gpu.availability import TypeAvailability, availability
from .gpu.devices import Inventory
from .gpu.nvml import discover
from .gpu.sharing import apply_sharing, rules_from_config
from .gpu.simulated import SpecError, parse_spec
from .spawn.profiles import Catalog, load_dir
from .quota import Effective, Override, QuotaConfig, resolve
from .quota.view import QuotaView
from .spawn.request import RequestError
from .spawn.messages import capacity_message, reclaim_hint
from .settings.errors import ConfigError
from .settings.schema import DEFAULTS
from .settings.live import LiveSettings
from .settings.typed import CoreSettings
from .accounting.pricing import Pricing
from .accounting.keeper import Budgets
from .store.allocator import Allocator, NoCapacity, Owner, QuotaRefused, Snapshot
from .store.db import Database
from .store.overrides import OverrideStore
from .store.usage import UsageStore
from .core_alloc import Allocating
from .core_live import LiveSpawners

log = logging.getLogger("gpulab.core")


@functools.lru_cache(maxsize=8)
def _hub_id(db_url: str) -> str:
    # read at every spawn and stop (environment, cgroup names): hashed once per URL
    return hashlib.sha256(db_url.encode()).hexdigest()[:12]


class GPULab(Allocating, LiveSpawners, SingletonConfigurable):
    """Configuration and state of gpulab's GPU core (``c.GPULab.*``). Reserving and the queue
    are in ``core_alloc.py``, the live spawners and the reconcile in ``core_live.py``; the
    traits stay here, so that ``c.GPULab.*`` configures them all."""

    inventory_spec = Unicode(
        "auto",
        config=True,
        help="""GPUs to manage: 'auto' scans this host with NVML; otherwise a simulated inventory
        such as '4xA100-80GB' or '1xA100-80GB+mig(3g.40gb,4*1g.10gb)' (see gpu/simulated.py).""",
    )
    sharing = List(
        config=True,
        help="""GPUs shared by several servers, as `gpus.sharing` in gpulab.yaml: items
        {gpus: <type> | '*' | [indices and UUIDs], shares: N}, first match wins. Applied to the
        NVML scan and to simulated inventories alike (gpu/sharing.py); MIG GPUs are never shared.""",
    )
    inventory_refresh_seconds = Integer(
        DEFAULTS["gpus"]["refresh_seconds"], config=True,
        help="How long an NVML scan is reused before scanning again (MIG changes).",
    )
    db_url = Unicode(
        "sqlite:///gpulab.sqlite",
        config=True,
        help="Database for gpulab's own tables (sqlite:/// or postgresql://). May be JupyterHub's.",
    )
    profiles_dir = Unicode(config=True, help="Directory of profile YAML files (one per profile).")
    default_profile = Unicode(
        "", config=True, help="Profile used when a request names none ('' = the first marked default)."
    )
    max_gpus_per_server = Integer(
        DEFAULTS["gpus"]["max_per_server"], config=True, help="No server may ask for more GPUs than this."
    )
    quotas = Dict(
        config=True,
        help="""Quota settings, as the `quotas` section of gpulab.yaml: resolve, enforcement,
        default, groups, overrides.""",
    )
    reconcile_interval = Integer(
        10,
        config=True,
        help="""Seconds between reconciles: every allocation checked against what really runs on
        the backend, orphans stopped (gpulab.yaml: hub.poll_interval).""",
    )
    state_dir = Unicode(
        config=True,
        help="""The hub's private state directory (gpulab.yaml: hub.state_dir): the local servers'
        lifeline files and the services' pid files live there.""",
    )
    placement = Enum(
        ["gpulab", "engine"],
        "gpulab",
        config=True,
        help="""'gpulab': gpulab picks the devices of every server (local, Docker). 'engine': the
        backend's scheduler places them (SLURM gres, the Kubernetes device plugin) and queues
        requests when the cluster is full; gpulab still checks quotas and accounts the GPUs.""",
    )
    env_providers = List(
        config=True,
        help="""Callables (or 'module:function' strings) run before each server starts, as
        ``provider(spawner, allocation, profile)``, each returning (or awaiting to) a dict of
        environment variables for the server (e.g. MLflow credentials).""",
    )
    billing = Dict(
        config=True,
        help="""Pricing and accounting, as the `billing` section of gpulab.yaml: currency, rates
        (per device-hour by GPU type, '*' for the rest), cpu_rate, minimum_charge_seconds,
        heartbeat_seconds, on_accounting_failure (open | closed), grid_intensity_g_per_kwh,
        nominal_power_watts.""",
    )
    budgets = Dict(
        config=True,
        help="""Budget settings, as the `budgets` section of gpulab.yaml: unit (gpu_hours |
        money), period (week | month | rolling:<N>d | credits), refill_per_day, enforce_running,
        grace_minutes, projects. The limits themselves are `budget` in quotas.""",
    )
    queue_settings = Dict(
        config=True,
        help="""The queue, as the `queue` section of gpulab.yaml: enabled, default (the form's
        checkbox), max_wait_hours, fair_share_days, backfill, age_after_hours.""",
    )
    settings_file = Unicode(
        "",
        config=True,
        help="""gpulab.yaml. When set, the quotas, billing, budgets and queue sections are read from
        it (instead of the traits above) and reloaded while the hub runs, whenever the file
        changes (see settings/live.py).""",
    )
    threads = Integer(
        16,
        config=True,
        help="""Worker threads for gpulab's database work. Its own pool, so that a burst of spawns
        never waits behind (or starves) JupyterHub's default executor.""",
    )
    capacity_reader = Any(
        None,
        allow_none=True,
        config=True,
        help="""Callable returning an Inventory, for backends that read capacity from a cluster
        (SLURM, Kubernetes). None: use inventory_spec.""",
    )

    @default("profiles_dir")
    def _default_profiles_dir(self):
        return os.path.join(os.getcwd(), "profiles")

    @default("state_dir")
    def _default_state_dir(self):
        return os.path.join(os.getcwd(), "state")

    @validate("inventory_spec")
    def _validate_inventory(self, proposal):
        if proposal.value != "auto":
            try:
                parse_spec(proposal.value)
            except SpecError as e:
                raise ConfigError(f"gpus.inventory: {e}") from None
        return proposal.value

    @classmethod
    def from_settings(cls, settings) -> GPULab:
        """A core for a service, from its typed settings (``settings/typed.py``): the same core
        the hub runs, for reading (services never allocate)."""
        core = cls(db_url=settings.db_url, inventory_spec=settings.inventory, sharing=list(settings.sharing),
                   inventory_refresh_seconds=settings.inventory_refresh_seconds,
                   max_gpus_per_server=settings.max_gpus_per_server, profiles_dir=settings.profiles_dir,
                   default_profile=settings.default_profile)
        core._settings = settings.core  # typed once, at load
        return core

    @classmethod
    def from_live(cls, live: LiveSettings) -> GPULab:
        """A service's core that follows its running settings as they reload."""
        core = cls.from_settings(live.current)
        core._live = live
        return core

    def __init__(self, **kw):
        super().__init__(**kw)
        self._lock = threading.Lock()
        self._inventory: Inventory | None = None
        self._inventory_at = 0.0
        self._db: Database | None = None
        self._catalog: Catalog | None = None
        self._settings: CoreSettings | None = None
        self._live: LiveSettings | None = None
        self._spawners: dict[tuple[int, str], weakref.WeakSet] = {}
        self._reconciled_at = 0.0
        self.fail_open_count = 0
        self._executor = None
        self._waiters: set = set()
        # stops' releases: written on the loop where SQLite's lock is free this moment, else in a
        # worker thread, with those that arrive meanwhile in the next transaction (store/release.py)
        self.releases = GroupCommit(self._write_releases, lambda requests: self.allocator.release_many_now(requests))
        self.runtime = None  # the backend adapter (reconcile/runtime.py), set by the supervisor

    async def run(self, fn, *args):
        """Run blocking work (database, NVML) on gpulab's own thread pool."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="gpulab")
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args))

    async def _write_releases(self, requests):
        written = self.allocator.release_many_now(requests)
        return written if written is not None else await self.run(self.allocator.release_many, requests)

    def refused(self, reason: str, user_name: str, server_name: str, message: str = "", err=None,
                within_quota: bool = True) -> str:
        """Count a refusal (metrics, admin pages) and return what the person is told. A capacity
        refusal's message says what is free now, and to a request within quota whether waiting
        would take borrowed GPUs back. Counting never blocks the answer."""
        if err is not None:
            message = capacity_message(err, self.availability(), self.reclaim_hint(err.gpu_type) if within_quota else "")
        try:
            self.usage.event("refused", reason, user_name, server_name, message)
        except Exception:
            log.exception("could not record a refusal")
        return message

    def reclaim_hint(self, gpu_type: str) -> str:
        """The refusal's sentence on GPUs of ``gpu_type`` lent to borrowers, if any."""
        b = self.borrowing
        if not (b.enabled and self.queue_enabled):
            return ""
        lent = sum(s.gpu_count for s in self.allocator.snapshot().servers if s.borrowed and s.gpu_type == gpu_type)
        return reclaim_hint(lent, b.reclaim_after.total_seconds() / 60)

    # -- lazily built parts --------------------------------------------------------------
    @property
    def db(self) -> Database:
        with self._lock:
            if self._db is None:
                db = Database(self.db_url)
                outage.watch(db.engine)
                db.upgrade()
                self._db = db
            return self._db

    @property
    def hub_id(self) -> str:
        """Names this hub's servers, containers and jobs on shared machines: a hash of gpulab's
        database URL, so stable across restarts and different for hubs with their own tables."""
        return _hub_id(self.db_url)

    @property
    def heartbeat_seconds(self) -> int:
        return self.settings.billing.heartbeat_seconds

    @property
    def allocator(self) -> Allocator:
        return Allocator(self.db)

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = load_dir(self.profiles_dir, self.default_profile or None, self.max_gpus_per_server)
        return self._catalog

    @property
    def usage(self) -> UsageStore:
        return UsageStore(self.db)

    @property
    def live(self) -> LiveSettings | None:
        """The running settings when they come from a file (``settings_file``), else None."""
        if self._live is None and self.settings_file:
            with self._lock:
                if self._live is None:
                    self._live = LiveSettings(self.settings_file)
        return self._live

    @property
    def settings(self) -> CoreSettings:
        """The ``quotas``, ``billing``, ``budgets`` and ``queue_settings`` sections, typed: the
        running settings' when they come from a file (reloaded as it changes), else built once
        from the traits, again only when one of them is set anew."""
        live = self.live
        if live is not None:
            return live.current.core
        if self._settings is None:
            self._settings = CoreSettings.from_sections(self.quotas, self.billing, self.budgets, self.queue_settings)
        return self._settings

    @observe("quotas", "billing", "budgets", "queue_settings")
    def _sections_changed(self, _change):
        self._settings = None

    @property
    def pricing(self) -> Pricing:
        return self.settings.billing.pricing

    @property
    def budget_keeper(self) -> Budgets:
        return Budgets(self.usage, self.settings.budgets, self.pricing)

    @property
    def quota_config(self) -> QuotaConfig:
        return self.settings.quotas

    @validate("sharing")
    def _validate_sharing(self, proposal):
        try:
            rules_from_config(proposal.value)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return proposal.value

    def inventory(self) -> Inventory:
        """What gpulab allocates: a cluster's capacity (the scheduler shares its own GPUs), or
        this host's GPUs, scanned or simulated, with the ``sharing`` rules applied to them."""
        if self.capacity_reader is not None:
            return self.capacity_reader()
        if self.inventory_spec != "auto":
            if self._inventory is None:
                self._inventory = self._shared(parse_spec(self.inventory_spec))
            return self._inventory
        now = time.monotonic()
        if self._inventory is None or now - self._inventory_at > self.inventory_refresh_seconds:
            inv = self._shared(discover())
            if inv.note and (self._inventory is None or self._inventory.note != inv.note):
                log.warning("%s: %s", "No GPUs" if not inv.devices else "GPUs", inv.note)
            self._inventory, self._inventory_at = inv, now
        return self._inventory

    def _shared(self, inv: Inventory) -> Inventory:
        return apply_sharing(inv, rules_from_config(self.sharing))

    @observe("sharing", "inventory_spec")
    def _inventory_changed(self, _change):
        self._inventory = None

    # -- quotas ----------------------------------------------------------------------------
    def db_overrides(self, user_name: str) -> tuple[Override, ...]:
        """Unexpired overrides admins added through the quotas service (read at every spawn and
        form, so a change takes effect at the next spawn)."""
        return OverrideStore(self.db).for_user(user_name)

    def effective(self, user_name: str, groups, now: dt.datetime | None = None) -> Effective:
        now = now or dt.datetime.now(dt.timezone.utc)
        return resolve(self.quota_config, user_name, list(groups), now, self.db_overrides(user_name))

    def quota_view(self, user_name: str, groups, usage, now: dt.datetime | None = None) -> QuotaView:
        """The user's quota as every page shows it (``quota/view.py``), over ``usage`` (the
        servers that count)."""
        return QuotaView.of(self.effective(user_name, groups, now), usage, self.quota_config.enforcement)

    # -- availability ----------------------------------------------------------------------
    def availability(self, snapshot: Snapshot | None = None) -> list[TypeAvailability]:
        snapshot = snapshot or self.allocator.snapshot()
        return availability(self.inventory(), snapshot.taken)

    def env_provider_functions(self) -> list:
        """``env_providers`` resolved to callables ('module:function' strings imported)."""
        out = []
        for p in self.env_providers:
            if isinstance(p, str):
                module, _, name = p.partition(":")
                p = getattr(importlib.import_module(module), name)
            out.append(p)
        return out


__all__ = ["GPULab", "NoCapacity", "QuotaRefused", "Owner", "RequestError", "TypeAvailability"]
