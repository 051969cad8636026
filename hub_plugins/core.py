"""The GPU core: one per hub process, shared by every spawner whatever the backend.

It owns the inventory, the profile catalogue, the quota configuration and the allocator, and
answers the questions spawners and the form ask: what may this user have, what is free, reserve
it, free it. Everything here is synchronous; spawners call it from a worker thread.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from fractions import Fraction

from traitlets import Any, Dict, Enum, Integer, List, Unicode, default, observe, validate
from traitlets.config import SingletonConfigurable

from .gpu.choice import auto_candidates
from .gpu.devices import Inventory, kind_of
from .gpu.nvml import discover
from .gpu.placement import most_on_one_host
from .gpu.simulated import SpecError, parse_spec
from .profiles import Catalog, load_dir
from .quota import Ask, Effective, Override, QuotaConfig, check, resolve
from .request import RequestError, SpawnRequest
from .settings.errors import ConfigError
from .settings.schema import GPULAB_SCHEMA
from .settings.validate import validate as validate_schema
from .store.allocator import Allocation, Allocator, NoCapacity, Owner, QuotaRefused, Snapshot
from .store.db import Database
from .store.models import utcnow

log = logging.getLogger("gpulab.core")


@dataclass(frozen=True)
class TypeAvailability:
    gpu_type: str
    kind: str  # gpu | mig | shared
    total: int
    free: int
    largest: int  # the most one server can get right now (devices on one host)
    weight: Fraction
    memory_mib: int

    def as_dict(self) -> dict:
        return {
            "gpu_type": self.gpu_type,
            "kind": self.kind,
            "total": self.total,
            "free": self.free,
            "largest": self.largest,
            "gpu_equivalents_each": float(self.weight),
            "memory_gb": round(self.memory_mib / 1024, 1),
        }


class GPULab(SingletonConfigurable):
    """Configuration and state of gpulab's GPU core (``c.GPULab.*``)."""

    inventory_spec = Unicode(
        "auto",
        config=True,
        help="""GPUs to manage: 'auto' scans this host with NVML; otherwise a simulated inventory
        such as '4xA100-80GB' or '1xA100-80GB+mig(3g.40gb,4*1g.10gb)' (see gpu/simulated.py).""",
    )
    inventory_refresh_seconds = Integer(
        30, config=True, help="How long an NVML scan is reused before scanning again (MIG changes)."
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
    max_gpus_per_server = Integer(4, config=True, help="No server may ask for more GPUs than this.")
    quotas = Dict(
        config=True,
        help="""Quota settings, as the `quotas` section of gpulab.yaml: resolve, enforcement,
        default, groups, overrides.""",
    )
    reconcile_interval = Integer(
        300, config=True, help="Seconds between checks that every allocation belongs to a live server."
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

    @validate("quotas")
    def _validate_quotas(self, proposal):
        validate_schema({"quotas": proposal.value}, GPULAB_SCHEMA, "c.GPULab.quotas")
        return proposal.value

    @validate("inventory_spec")
    def _validate_inventory(self, proposal):
        if proposal.value != "auto":
            try:
                parse_spec(proposal.value)
            except SpecError as e:
                raise ConfigError(f"gpus.inventory: {e}") from None
        return proposal.value

    def __init__(self, **kw):
        super().__init__(**kw)
        self._lock = threading.Lock()
        self._inventory: Inventory | None = None
        self._inventory_at = 0.0
        self._db: Database | None = None
        self._catalog: Catalog | None = None
        self._quota_config: QuotaConfig | None = None
        self._spawners: dict[tuple[int, str], weakref.WeakSet] = {}
        self._reconciled_at = 0.0
        self.started_at = utcnow()

    # -- lazily built parts --------------------------------------------------------------
    @property
    def db(self) -> Database:
        with self._lock:
            if self._db is None:
                db = Database(self.db_url)
                db.upgrade()
                self._db = db
            return self._db

    @property
    def allocator(self) -> Allocator:
        return Allocator(self.db)

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = load_dir(self.profiles_dir, self.default_profile or None, self.max_gpus_per_server)
        return self._catalog

    @property
    def quota_config(self) -> QuotaConfig:
        if self._quota_config is None:
            self._quota_config = QuotaConfig.from_config(self.quotas or {})
        return self._quota_config

    @observe("quotas")
    def _quotas_changed(self, _change):
        self._quota_config = None

    def inventory(self) -> Inventory:
        if self.capacity_reader is not None:
            return self.capacity_reader()
        if self.inventory_spec != "auto":
            if self._inventory is None:
                self._inventory = parse_spec(self.inventory_spec)
            return self._inventory
        now = time.monotonic()
        if self._inventory is None or now - self._inventory_at > self.inventory_refresh_seconds:
            inv = discover()
            if not inv.devices and inv.note and (self._inventory is None or self._inventory.note != inv.note):
                log.warning("No GPUs: %s", inv.note)
            self._inventory, self._inventory_at = inv, now
        return self._inventory

    # -- quotas ----------------------------------------------------------------------------
    def db_overrides(self, user_name: str) -> tuple[Override, ...]:
        """Unexpired overrides admins added through the quotas service (read at every spawn and
        form, so a change takes effect at the next spawn)."""
        from .store.overrides import OverrideStore

        return OverrideStore(self.db).for_user(user_name)

    def effective(self, user_name: str, groups, now: dt.datetime | None = None) -> Effective:
        now = now or dt.datetime.now(dt.timezone.utc)
        return resolve(self.quota_config, user_name, list(groups), now, self.db_overrides(user_name))

    # -- availability ----------------------------------------------------------------------
    def availability(self, snapshot: Snapshot | None = None) -> list[TypeAvailability]:
        inv = self.inventory()
        snapshot = snapshot or self.allocator.snapshot()
        free = inv.free(set(snapshot.taken))
        out = []
        for t in inv.types:
            devs = inv.of_type(t)
            out.append(
                TypeAvailability(
                    gpu_type=t,
                    kind=kind_of(t),
                    total=len(devs),
                    free=sum(1 for d in free if d.gpu_type == t),
                    largest=most_on_one_host(free, t),
                    weight=devs[0].weight,
                    memory_mib=devs[0].memory_mib,
                )
            )
        return out

    def candidate_types(self, req: SpawnRequest, eff: Effective, inv: Inventory) -> list[str]:
        """The GPU types this request may get, in order of preference (see ``gpu/choice.py``)."""
        if req.gpu_type:
            return [req.gpu_type]
        weights = {t: inv.of_type(t)[0].weight for t in inv.types}
        types = auto_candidates(inv.types, weights, req.profile.allows_type, eff.limits.gpu_types)
        if not types:
            raise RequestError(
                f"Profile '{req.profile.name}' runs on none of the GPU types you may use on this hub; "
                "ask for 0 GPUs or name a 'gpu_type'."
            )
        return types

    # -- allocation ------------------------------------------------------------------------
    def allocate(self, owner: Owner, req: SpawnRequest, groups) -> Allocation:
        """Type choice + quota check + placement + persistence, one serialised transaction.

        Raises RequestError, QuotaRefused or NoCapacity (see ``messages`` for their wording)."""
        inv = self.inventory()
        eff = self.effective(owner.user_name, groups)
        types = self.candidate_types(req, eff, inv) if req.gpus else []
        enforcement = self.quota_config.enforcement

        def quota_check(usage, gpu_type):
            weight = inv.of_type(gpu_type)[0].weight if gpu_type else Fraction(0)
            ask = Ask(owner.server_name, req.profile.name, gpu_type, req.gpus, weight * req.gpus)
            return check(ask, eff, usage, enforcement)

        return self.allocator.allocate(owner, req.profile.name, types, req.gpus, inv, quota_check,
                                       reserve=self.placement == "gpulab")

    def release(self, owner: Owner, spawn_id: str | None = None) -> list[str]:
        return self.allocator.release(owner, spawn_id)

    def env_provider_functions(self) -> list:
        """``env_providers`` resolved to callables ('module:function' strings imported)."""
        import importlib

        out = []
        for p in self.env_providers:
            if isinstance(p, str):
                module, _, name = p.partition(":")
                p = getattr(importlib.import_module(module), name)
            out.append(p)
        return out

    # -- reconciliation --------------------------------------------------------------------
    def register(self, spawner) -> None:
        """Spawners register themselves so reconciliation knows which servers are alive."""
        key = (spawner.user.id, spawner.name)
        self._spawners.setdefault(key, weakref.WeakSet()).add(spawner)

    def live_owners(self) -> set[tuple[int, str]]:
        """Owners with an active spawner (running, or a start/stop/check pending).

        Must be called on the hub's event-loop thread, where spawner state changes."""
        return {k for k, ws in list(self._spawners.items()) if any(s.active for s in list(ws))}

    def reconcile(self, live: set[tuple[int, str]] | None = None, before: dt.datetime | None = None):
        """Free allocations whose server is gone (e.g. after a hub crash)."""
        live = self.live_owners() if live is None else live
        before = before or utcnow()
        gone = self.allocator.reconcile(lambda r: (r.user_id, r.server_name) in live, before)
        self._reconciled_at = time.monotonic()
        return gone

    def due_for_reconcile(self) -> bool:
        """First use after start-up, then every ``reconcile_interval`` seconds."""
        return not self._reconciled_at or time.monotonic() - self._reconciled_at > self.reconcile_interval


__all__ = ["GPULab", "NoCapacity", "QuotaRefused", "Owner", "RequestError", "TypeAvailability"]
