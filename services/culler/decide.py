"""Cull decisions (pure): which servers to warn and which to stop, given what each server holds,
its activity, its GPU samples, the policy and the time. No I/O; tested with tables.

Signals, each with its own timeout in the server's policy:

- ``gpu_idle_minutes``: every GPU of the server below ``gpu_idle_threshold`` % utilisation over
  consecutive samples for that long (``idle_since`` is when the current idle stretch began);
- ``inactive_minutes``: no JupyterHub activity (browser, kernels) *and* an idle CPU for that long;
- ``max_age_hours``: running that long, whatever it does;
- the runtime the user chose at spawn (``runtime_limit``), and a spent budget when budgets are
  enforced on running servers (after ``budget_grace``).

No server is culled for idleness during its start-up grace, or while a ``.keep-alive`` file the
user placed is fresh (honoured for at most ``keep_alive_max_hours``). When GPUs are scarce (more
than ``scarcity.above`` of them allocated) idle timeouts are multiplied by ``scarcity.factor``.
Users are warned at 80% and 95% of a timeout (``warn_at``) before the cull.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from hub_plugins.accounting.budgets import BudgetConfig
from hub_plugins.settings.defaults import cull_policy, section
from hub_plugins.notify.compose import in_minutes
from hub_plugins.settings.schema import CULL_POLICY_DEFAULTS as _POLICY
from hub_plugins.settings.schema import DEFAULTS

MIN = dt.timedelta(minutes=1)
# what a cull is recorded as (the usage record's stop reason)
STOP_CATEGORY = {"gpu_idle": "culled", "inactive": "culled", "max_age": "culled", "runtime": "runtime",
                 "budget": "budget", "reclaim": "reclaimed"}  # reclaim: services/culler/reclaim.py
_CULLER = DEFAULTS["culler"]


@dataclass(frozen=True)
class Policy:
    name: str = _POLICY["name"]
    gpu_idle_minutes: float | None = _POLICY["gpu_idle_minutes"]
    inactive_minutes: float | None = _POLICY["inactive_minutes"]
    max_age_hours: float | None = _POLICY["max_age_hours"]
    startup_grace_minutes: float = _POLICY["startup_grace_minutes"]
    match_profiles: frozenset[str] | None = None
    match_groups: frozenset[str] | None = None
    match_gpu: bool | None = None  # True: servers with GPUs; False: CPU-only; None: any

    def matches(self, s: Server) -> bool:
        if self.match_profiles is not None and s.profile not in self.match_profiles:
            return False
        if self.match_groups is not None and not (self.match_groups & set(s.groups)):
            return False
        if self.match_gpu is not None and (s.gpu_count > 0) != self.match_gpu:
            return False
        return True


@dataclass(frozen=True)
class Settings:
    policies: tuple[Policy, ...] = (Policy(),)
    gpu_idle_threshold: float = _CULLER["gpu_idle_threshold"]  # percent
    cpu_idle_threshold: float = _CULLER["cpu_idle_threshold"]  # percent of one core
    scarcity_above: float = _CULLER["scarcity"]["above"]
    scarcity_factor: float = _CULLER["scarcity"]["factor"]
    warn_at: tuple[float, ...] = tuple(_CULLER["warn_at"])
    keep_alive_max: dt.timedelta = dt.timedelta(hours=_CULLER["keep_alive_max_hours"])
    budget_grace: dt.timedelta | None = None  # None: budgets are not enforced on running servers

    @classmethod
    def from_config(cls, c: dict, budgets: dict | None = None) -> Settings:
        """From the ``culler`` and ``budgets`` sections (each completed from DEFAULTS)."""
        c, budgets = section("culler", c), BudgetConfig.from_config(budgets)
        pols = []
        for p in map(cull_policy, c["policies"]):
            m = p["match"]
            pols.append(Policy(
                name=p["name"], gpu_idle_minutes=p["gpu_idle_minutes"], inactive_minutes=p["inactive_minutes"],
                max_age_hours=p["max_age_hours"], startup_grace_minutes=p["startup_grace_minutes"],
                match_profiles=frozenset(m["profiles"]) if "profiles" in m else None,
                match_groups=frozenset(m["groups"]) if "groups" in m else None,
                match_gpu=m.get("gpu"),
            ))
        return cls(
            policies=tuple(pols), gpu_idle_threshold=float(c["gpu_idle_threshold"]),
            cpu_idle_threshold=float(c["cpu_idle_threshold"]),
            scarcity_above=float(c["scarcity"]["above"]), scarcity_factor=float(c["scarcity"]["factor"]),
            warn_at=tuple(c["warn_at"]),
            keep_alive_max=dt.timedelta(hours=float(c["keep_alive_max_hours"])),
            budget_grace=dt.timedelta(minutes=budgets.grace_minutes) if budgets.enforce_running else None,
        )

    def policy_for(self, s: Server) -> Policy | None:
        return next((p for p in self.policies if p.matches(s)), None)


@dataclass(frozen=True)
class Server:
    user: str
    name: str
    profile: str = ""
    groups: tuple[str, ...] = ()
    gpu_count: int = 0
    ready_at: dt.datetime | None = None
    last_activity: dt.datetime | None = None
    cpu_busy_at: dt.datetime | None = None  # last time the CPU was above the threshold
    gpu_idle_since: dt.datetime | None = None  # None: a GPU is busy now (or no samples)
    gpu_samples: bool = False  # utilisation can be measured for this server's GPUs
    keep_alive_at: dt.datetime | None = None  # mtime of the user's keep-alive file
    # the last round a keep-alive held it off: its idle clocks start no earlier, so a keep-alive
    # that ends (removed, or past keep_alive_max_hours) leaves the warnings their time
    kept_until: dt.datetime | None = None
    runtime_limit: dt.timedelta | None = None
    budget_spent_since: dt.datetime | None = None
    warned: str = ""  # the last warning sent, "<reason>:<fraction>"


@dataclass(frozen=True)
class Action:
    user: str
    server: str
    kind: str  # warn | cull
    reason: str  # gpu_idle | inactive | max_age | runtime | budget
    message: str
    fraction: float = 1.0
    minutes_left: float = 0.0

    @property
    def tag(self) -> str:
        return f"{self.reason}:{self.fraction:g}"


@dataclass
class Clock:
    """One signal's progress: when it started counting and how long it may run."""

    reason: str
    since: dt.datetime
    limit: dt.timedelta
    why: str = field(default="")

    def elapsed(self, now):
        return now - self.since


def _text(reason: str, limit: dt.timedelta) -> str:
    m = limit / MIN
    span = f"{m:g} min" if m < 120 else f"{m / 60:g} h"
    return {
        "gpu_idle": f"its GPUs were idle for {span}",
        "inactive": f"it was inactive for {span}",
        "max_age": f"it reached the maximum age of {span}",
        "runtime": f"it reached the runtime of {span} chosen at start",
        "budget": "its budget is spent",
    }[reason]


def kept_alive(s: Server, settings: Settings, now: dt.datetime) -> bool:
    """Whether the user's keep-alive file holds the server off idle stops this round."""
    return s.keep_alive_at is not None and now - s.keep_alive_at < settings.keep_alive_max


def decide(servers: list[Server], settings: Settings, now: dt.datetime, allocated_fraction: float) -> list[Action]:
    scarce = allocated_fraction > settings.scarcity_above
    out = []
    for s in servers:
        if s.ready_at is None:
            continue  # still starting
        clocks: list[Clock] = []
        if s.runtime_limit is not None:
            clocks.append(Clock("runtime", s.ready_at, s.runtime_limit))
        if s.budget_spent_since is not None and settings.budget_grace is not None:
            clocks.append(Clock("budget", s.budget_spent_since, settings.budget_grace))
        p = settings.policy_for(s)
        if p is not None:
            if p.max_age_hours is not None:
                clocks.append(Clock("max_age", s.ready_at, dt.timedelta(hours=p.max_age_hours)))
            in_grace = now - s.ready_at < dt.timedelta(minutes=p.startup_grace_minutes)
            factor = settings.scarcity_factor if scarce else 1.0
            if not in_grace and not kept_alive(s, settings, now):
                if p.gpu_idle_minutes is not None and s.gpu_count and s.gpu_samples and s.gpu_idle_since:
                    start = max(t for t in (s.gpu_idle_since, s.ready_at, s.kept_until) if t is not None)
                    clocks.append(Clock("gpu_idle", start, dt.timedelta(minutes=p.gpu_idle_minutes * factor)))
                if p.inactive_minutes is not None:
                    last = max(t for t in (s.last_activity, s.cpu_busy_at, s.ready_at, s.kept_until) if t is not None)
                    clocks.append(Clock("inactive", last, dt.timedelta(minutes=p.inactive_minutes * factor)))
        if not clocks:
            continue
        # the signal closest to its limit decides
        c = max(clocks, key=lambda k: k.elapsed(now) / k.limit if k.limit.total_seconds() else float("inf"))
        frac = c.elapsed(now) / c.limit if c.limit.total_seconds() else 1.0
        left = max(0.0, (c.limit - c.elapsed(now)) / MIN)
        label = f"{s.user}:{s.name}" if s.name else s.user
        if frac >= 1.0:
            out.append(Action(s.user, s.name, "cull", c.reason, f"Stopped {label}: {_text(c.reason, c.limit)}."))
            continue
        due = [w for w in settings.warn_at if frac >= w]
        if due and s.warned != f"{c.reason}:{max(due):g}":
            out.append(Action(s.user, s.name, "warn", c.reason,
                              f"{label} will be stopped {in_minutes(left)}: {_text(c.reason, c.limit)}. "
                              + ("Use your GPUs or stop the server to free them." if c.reason == "gpu_idle"
                                 else "Save your work."),
                              max(due), left))
    return out


# -- what one round measured, decided before ``decide`` (pure, tested with tables) -------------
def gpu_idle(utils: list[float | None], threshold: float, previous: dt.datetime | None,
             now: dt.datetime) -> tuple[bool, dt.datetime | None]:
    """(measured, idle since) for one server's GPUs this round: measured when every one of them
    has a sample; idle since ``previous`` (or now) while all are below ``threshold`` percent,
    None as soon as one is busy. Unmeasured, the stretch so far is kept."""
    if not utils or any(u is None for u in utils):
        return False, previous
    if any(u >= threshold for u in utils):
        return True, None
    return True, previous or now


def energy_wh(powers: list[float | None], seconds: float) -> float:
    """Energy of a server's GPUs over the round (0 when a device reports no power)."""
    if not powers or any(p is None for p in powers):
        return 0.0
    return sum(powers) * seconds / 3600


def spent_since(previous: dt.datetime | None, spent: bool, now: dt.datetime) -> dt.datetime | None:
    """Since when a budget has been spent: the first round that saw it spent, until it is not."""
    return (previous or now) if spent else None


def allocated_fraction(avail) -> float:
    """The share of the hub's GPUs allocated now (``TypeAvailability`` rows), for scarcity, in
    GPU-equivalents: four free quarter shares are one free GPU, not four."""
    total = sum(a.total * a.weight for a in avail)
    return float(1 - sum(a.free * a.weight for a in avail) / total) if total else 0.0
