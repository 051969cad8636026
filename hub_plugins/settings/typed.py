"""gpulab.yaml as typed, frozen values: what the hub's GPU core and every service read.

Built once per process: the hub's core builds :class:`CoreSettings` from its ``c.GPULab.*``
sections when they are set (``update_gpulab`` copies them from gpulab.yaml), and every service
builds :class:`Settings` from the file ``GPULAB_CONFIG`` names, the one way services are told their
configuration. Each section is completed from ``schema.DEFAULTS`` (``defaults.section``), so a
missing key has one default, the schema's; nothing downstream re-parses or falls back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ..accounting.budgets import BudgetConfig
from ..accounting.pricing import Pricing
from ..queue.borrowing import Borrowing
from ..queue.store import QueuePolicy
from ..quota.limits import QuotaConfig
from .defaults import section
from .loader import ENV_VAR, gpulab_db_url, load


def _frozen(value):
    """A read-only deep copy of a plain section (mappings and lists)."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def plain(value):
    """A frozen section as plain dicts and lists again (JSON, traitlets Dict traits)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    return value


@dataclass(frozen=True)
class BillingSettings:
    pricing: Pricing
    port: int
    heartbeat_seconds: int
    on_accounting_failure: str  # open | closed
    grid_intensity_g_per_kwh: float
    nominal_power_watts: Mapping[str, float]

    @classmethod
    def from_config(cls, data: Mapping | None) -> BillingSettings:
        data = section("billing", data)
        return cls(Pricing.from_config(data), int(data["port"]), int(data["heartbeat_seconds"]),
                   data["on_accounting_failure"], float(data["grid_intensity_g_per_kwh"]),
                   _frozen(data["nominal_power_watts"]))


@dataclass(frozen=True)
class QueueSettings:
    enabled: bool
    default: bool  # the form's "wait in the queue" checkbox
    max_wait_seconds: float
    policy: QueuePolicy
    borrowing: Borrowing = Borrowing()  # queue.borrowing: servers beyond quota, reclaimed when needed

    @classmethod
    def from_config(cls, data: Mapping | None) -> QueueSettings:
        data = section("queue", data)
        return cls(bool(data["enabled"]), bool(data["default"]), float(data["max_wait_hours"]) * 3600,
                   QueuePolicy.from_config(data), Borrowing.from_config(data))


@dataclass(frozen=True)
class CoreSettings:
    """The sections the GPU core decides with."""

    quotas: QuotaConfig
    billing: BillingSettings
    budgets: BudgetConfig
    queue: QueueSettings

    @classmethod
    def from_sections(cls, quotas: Mapping | None, billing: Mapping | None, budgets: Mapping | None,
                      queue: Mapping | None) -> CoreSettings:
        return cls(QuotaConfig.from_config(quotas or {}), BillingSettings.from_config(billing),
                   BudgetConfig.from_config(budgets), QueueSettings.from_config(queue))


@dataclass(frozen=True)
class LocalSettings:
    """The local backend's accounts and homes (``local``; homes under state_dir when not root)."""

    system_users: str  # auto | never
    system_user_prefix: str
    home_root: str
    shared_home_root: str

    @classmethod
    def from_config(cls, data: Mapping | None, state_dir: str) -> LocalSettings:
        data = section("local", data)
        return cls(data["system_users"], data["system_user_prefix"], data["home_root"],
                   os.path.join(state_dir, "homes"))

    def isolated(self, euid: int | None = None) -> bool:
        """Servers run as per-user system accounts: only when the hub is root."""
        return self.system_users == "auto" and (os.geteuid() if euid is None else euid) == 0

    def shared_home(self, system_user: str) -> str:
        """The working directory of a server that runs as the hub's own user."""
        return os.path.join(self.shared_home_root, system_user)

    def home(self, system_user: str, euid: int | None = None) -> str:
        """Where a user's server keeps ``~/.keep-alive``: the account's home (``useradd`` makes
        it under home_root) when isolated, else the shared one."""
        return os.path.join(self.home_root, system_user) if self.isolated(euid) else self.shared_home(system_user)


@dataclass(frozen=True)
class Settings:
    """The whole of gpulab.yaml, as a service reads it."""

    path: str
    backend: str
    state_dir: str
    db_url: str  # gpulab's tables
    inventory: str
    inventory_refresh_seconds: int
    max_gpus_per_server: int
    profiles_dir: str
    default_profile: str
    core: CoreSettings
    local: LocalSettings
    culler: Mapping
    mlflow: Mapping
    raw: Mapping  # the validated file with its defaults (the update_* functions' input)
    sharing: tuple = ()  # gpus.sharing, as in the file

    @classmethod
    def from_config(cls, cfg: Mapping) -> Settings:
        state, gpus = cfg["hub"]["state_dir"], cfg["gpus"]
        return cls(
            path=cfg["_path"], backend=cfg["backend"], state_dir=state, db_url=gpulab_db_url(cfg),
            inventory=gpus["inventory"], inventory_refresh_seconds=gpus["refresh_seconds"],
            max_gpus_per_server=gpus["max_per_server"], profiles_dir=cfg["profiles_dir"],
            default_profile=cfg["default_profile"],
            core=CoreSettings.from_sections(cfg["quotas"], cfg["billing"], cfg["budgets"], cfg["queue"]),
            local=LocalSettings.from_config(cfg["local"], state),
            culler=_frozen(cfg["culler"]), mlflow=_frozen(cfg["mlflow"]),
            raw=_frozen({k: v for k, v in cfg.items() if not k.startswith("_")}),
            sharing=tuple(plain(_frozen(gpus["sharing"]))),
        )


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """A service's settings: the gpulab.yaml ``GPULAB_CONFIG`` names. Secrets stay unread: they
    are the hub's (a service's environment does not carry them)."""
    return Settings.from_config(load(path or os.environ[ENV_VAR], secrets=False))
