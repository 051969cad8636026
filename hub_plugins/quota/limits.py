"""A user's effective limits: default, groups and overrides resolved into one set (pure).

Every limit remembers where it came from ("group 'student'", "the default quota", "your override
until 2026-12-01"), so a refusal can tell a person which rule stopped them.

Resolution:

- Each listed group's limits are ``quotas.default`` with the group's own keys on top.
- A user in no listed group gets ``quotas.default``.
- A user in several listed groups gets, per limit, the most generous value (``resolve:
  most_generous``, the default), the least generous (``least_generous``) or the first listed
  group's (``first_match``, in the order of ``quotas.groups``).
- Unexpired overrides for the user then replace the limits they name (several: most generous).
  An override with ``expires: 2026-12-01`` applies until 2026-12-01 00:00 UTC.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields, replace
from fractions import Fraction
from typing import Any

from ..settings.schema import DEFAULTS

_QUOTAS = DEFAULTS["quotas"]
UNLIMITED = None
FIELDS = ("max_gpus", "max_gpus_per_server", "max_servers", "profiles", "gpu_types", "cpu_limit", "mem_limit",
          "budget", "max_runtime_hours")
RESOLVE_POLICIES = ("most_generous", "least_generous", "first_match")


def as_fraction(value) -> Fraction | None:
    if value is None:
        return None
    return Fraction(str(value)).limit_denominator(10000)


@dataclass(frozen=True)
class Limits:
    """None means unlimited (or, for ``profiles``/``gpu_types``, all)."""

    max_gpus: Fraction | None = Fraction(1)
    max_gpus_per_server: Fraction | None = None
    max_servers: int | None = None
    profiles: frozenset[str] | None = None
    gpu_types: frozenset[str] | None = None
    cpu_limit: float | None = None  # cap on a server's CPU limit
    mem_limit: int | None = None  # cap on a server's memory limit, bytes
    budget: float | None = None  # per budget period, in the budgets' unit (GPU-hours or money)
    max_runtime_hours: float | None = None  # longest runtime a user may choose at spawn

    @classmethod
    def from_config(cls, data: dict[str, Any], base: Limits | None = None) -> Limits:
        """Limits from a validated config mapping; keys it lacks come from ``base``."""
        out = base or cls()
        kw: dict[str, Any] = {}
        for key in FIELDS:
            if key not in data:
                continue
            v = data[key]
            if key in ("max_gpus", "max_gpus_per_server"):
                kw[key] = as_fraction(v)
            elif key in ("profiles", "gpu_types"):
                kw[key] = None if v in (None, "*") or "*" in v else frozenset(v)
            elif key == "mem_limit":
                kw[key] = None if v is None else parse_bytes(v)
            elif key in ("cpu_limit", "budget", "max_runtime_hours"):
                kw[key] = None if v is None else float(v)
            else:
                kw[key] = v
        return replace(out, **kw)


def parse_bytes(value) -> int:
    """'16G' -> 17179869184; plain numbers are bytes. Suffixes K, M, G, T (binary)."""
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    if text and text[-1] in mult:
        return int(float(text[:-1]) * mult[text[-1]])
    return int(float(text))


def format_bytes(n: int) -> str:
    for unit, size in (("T", 2**40), ("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


@dataclass(frozen=True)
class Override:
    user: str
    limits: dict[str, Any]  # the limit keys it replaces, config form
    expires: dt.date | None = None
    reason: str = ""
    approved_by: str = ""
    id: str = ""  # "config:3" or a database id

    def active(self, now: dt.datetime) -> bool:
        if self.expires is None:
            return True
        end = dt.datetime.combine(self.expires, dt.time(), tzinfo=dt.timezone.utc)
        return now < end

    def describe(self) -> str:
        until = f" until {self.expires.isoformat()}" if self.expires else ""
        return f"your override{until}"


@dataclass(frozen=True)
class Effective:
    limits: Limits
    sources: dict[str, str] = field(default_factory=dict)  # field -> where it came from
    groups: tuple[str, ...] = ()  # the listed groups the user is in
    overrides: tuple[Override, ...] = ()  # the active overrides applied

    def source(self, name: str) -> str:
        return self.sources.get(name, "the default quota")


def _generosity(name: str, value) -> tuple:
    """Sort key: larger is more generous. None (unlimited/all) is the most generous."""
    if value is None:
        return (1, 0)
    if name in ("profiles", "gpu_types"):
        return (0, len(value))
    return (0, value)


def _combine(name: str, values: list, most: bool):
    if name in ("profiles", "gpu_types"):
        if most:
            if any(v is None for v in values):
                return None
            return frozenset().union(*values)
        concrete = [v for v in values if v is not None]
        if not concrete:
            return None
        return frozenset.intersection(*concrete)
    pick = max if most else min
    return pick(values, key=lambda v: _generosity(name, v))


@dataclass(frozen=True)
class QuotaConfig:
    default: Limits = Limits()
    groups: dict[str, Limits] = field(default_factory=dict)  # in config order
    resolve: str = _QUOTAS["resolve"]
    enforcement: str = _QUOTAS["enforcement"]  # or "soft": allow, but warn and flag
    overrides: tuple[Override, ...] = ()

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> QuotaConfig:
        default = Limits.from_config(data.get("default") or {})
        groups = {g: Limits.from_config(v or {}, default) for g, v in (data.get("groups") or {}).items()}
        overrides = tuple(
            override_from_config(o, f"config:{i}") for i, o in enumerate(data.get("overrides") or [])
        )
        return cls(
            default=default,
            groups=groups,
            resolve=data.get("resolve", _QUOTAS["resolve"]),
            enforcement=data.get("enforcement", _QUOTAS["enforcement"]),
            overrides=overrides,
        )


def override_from_config(o: dict[str, Any], ident: str) -> Override:
    expires = o.get("expires")
    if isinstance(expires, str):
        expires = dt.date.fromisoformat(expires)
    if isinstance(expires, dt.datetime):
        expires = expires.date()
    return Override(
        user=o["user"],
        limits={k: o[k] for k in FIELDS if k in o},
        expires=expires,
        reason=o.get("reason", ""),
        approved_by=o.get("approved_by", ""),
        id=o.get("id", ident),
    )


def resolve(
    qc: QuotaConfig,
    user: str,
    user_groups: list[str] | set[str],
    now: dt.datetime,
    extra_overrides: tuple[Override, ...] = (),
) -> Effective:
    """The limits that apply to ``user`` right now."""
    member = [g for g in qc.groups if g in set(user_groups)]
    sources: dict[str, str] = {}
    if not member:
        limits = qc.default
    elif qc.resolve == "first_match" or len(member) == 1:
        limits = qc.groups[member[0]]
        sources = {f: f"group '{member[0]}'" for f in FIELDS}
    else:
        most = qc.resolve != "least_generous"
        kw = {}
        for f in FIELDS:
            values = [getattr(qc.groups[g], f) for g in member]
            kw[f] = _combine(f, values, most)
            winners = [g for g in member if getattr(qc.groups[g], f) == kw[f]]
            sources[f] = f"group '{winners[0]}'" if winners else "groups " + ", ".join(f"'{g}'" for g in member)
        limits = Limits(**kw)

    active = [o for o in (*qc.overrides, *extra_overrides) if o.user == user and o.active(now)]
    overridden: set[str] = set()
    for o in active:
        for key in o.limits:
            new = getattr(Limits.from_config({key: o.limits[key]}, limits), key)
            # several overrides naming one limit: the most generous wins
            if key in overridden and _generosity(key, new) <= _generosity(key, getattr(limits, key)):
                continue
            limits = replace(limits, **{key: new})
            sources[key] = o.describe()
            overridden.add(key)
    return Effective(limits, sources, tuple(member), tuple(active))


def limits_as_dict(limits: Limits) -> dict[str, Any]:
    """JSON-friendly view (APIs, the form)."""
    out: dict[str, Any] = {}
    for f in fields(limits):
        v = getattr(limits, f.name)
        if isinstance(v, Fraction):
            v = float(v)
        elif isinstance(v, frozenset):
            v = sorted(v)
        out[f.name] = v
    return out
