"""Usage reports (pure): per server, per day, per user and group, with cost, efficiency, energy
and CO2. Inputs are usage records (any objects with UsageRecord's fields) and a time range; the
same overlap rule as budgets splits a server's charge across ranges and days.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
from collections import defaultdict
from dataclasses import dataclass, fields
from fractions import Fraction
from operator import itemgetter

from hub_plugins.accounting.budgets import by_day
from hub_plugins.accounting.pricing import money
from hub_plugins.store.settled import wholly_inside
from hub_plugins.store.usage import as_usage, naive

UTC = dt.timezone.utc


@dataclass
class Line:
    user: str
    server: str
    profile: str
    project: str
    gpu_type: str
    gpu_count: int
    gpu_equivalents: float
    devices: str
    started_at: str
    ready_at: str | None
    stopped_at: str | None
    stop_reason: str
    stopped_by: str  # who asked for the stop, where the hub said ('admin:ada', 'service:idle-culler')
    running: bool
    gpu_seconds: float
    gpu_hours: float
    cost: float
    efficiency_pct: float | None  # mean GPU utilisation while allocated
    energy_kwh: float
    energy_measured: bool
    co2_kg: float
    queued_seconds: float
    preemptible: bool = False  # borrowed beyond quota (priced at queue.borrowing.rate_factor)


def nominal_watts(power: dict, gpu_type: str) -> float:
    base = gpu_type.split(":")[0]
    return float(power.get(gpu_type, power.get(base, power.get("*", 0.0))))


@functools.lru_cache(maxsize=1024)
def _equivalents(text: str) -> float:
    return float(Fraction(text))


def _iso(t: dt.datetime | None) -> str | None:
    """As ``aware(t).isoformat()`` for the database's naive UTC times, without a new object per
    field (a year's export formats a million of them)."""
    if t is None:
        return None
    return t.isoformat() if t.tzinfo else t.isoformat() + "+00:00"


def line(r, lo: dt.datetime, hi: dt.datetime, now: dt.datetime, power: dict, grid_g_per_kwh: float,
         naive_range: tuple[dt.datetime, dt.datetime] | None = None) -> Line:
    """One record's report line for [lo, hi) (``naive_range``: the same range as the database's
    naive UTC, when the caller has it for many records)."""
    u = None
    if wholly_inside(r, lo, hi, naive_range):
        # its whole charge, settled once by the same rule (store/settled.py): a year's
        # export reads it instead of working it out again for every record
        gpu_hours = total = r.charged_gpu_seconds / 3600
        cost = r.charged_cost
    else:
        u = as_usage(r)
        gpu_hours = u.amount("gpu_hours", lo, hi, now)
        cost = u.amount("money", lo, hi, now)
        total = None
    if r.energy_wh > 0:
        # measured power covers the whole life; count the share inside the range
        if total is None:
            total = u.charge(now).gpu_seconds / 3600
        kwh = r.energy_wh / 1000 * (gpu_hours / total if total else 0.0)
        measured = True
    else:
        kwh = nominal_watts(power, r.gpu_type) * gpu_hours / 1000 if r.gpu_count else 0.0
        measured = False
    return Line(
        user=r.user_name, server=r.server_name, profile=r.profile, project=r.project,
        gpu_type=r.gpu_type, gpu_count=r.gpu_count, gpu_equivalents=_equivalents(r.equivalents), devices=r.devices,
        started_at=_iso(r.started_at), ready_at=_iso(r.ready_at), stopped_at=_iso(r.stopped_at),
        stop_reason=r.stop_reason, stopped_by=r.stopped_by, running=r.stopped_at is None,
        gpu_seconds=round(gpu_hours * 3600, 3), gpu_hours=round(gpu_hours, 6),
        cost=cost, efficiency_pct=(round(r.util_sum / r.util_samples, 1) if r.util_samples else None),
        energy_kwh=round(kwh, 6), energy_measured=measured, co2_kg=round(kwh * grid_g_per_kwh / 1000, 6),
        queued_seconds=round(r.queued_seconds, 1), preemptible=bool(r.borrowed),
    )


def charged_lines(records, lo: dt.datetime, hi: dt.datetime, now: dt.datetime, power: dict,
                  grid_g_per_kwh: float) -> list[Line]:
    """The lines of the records charged in [lo, hi), and of every running server."""
    bounds = (naive(lo), naive(hi))
    lines = [line(r, lo, hi, now, power, grid_g_per_kwh, bounds) for r in records]
    return [ln for ln in lines if ln.gpu_seconds > 0 or ln.cost > 0 or ln.running]


def report(records, lo: dt.datetime, hi: dt.datetime, now: dt.datetime, power: dict,
           grid_g_per_kwh: float, currency: str) -> dict:
    lines = charged_lines(records, lo, hi, now, power, grid_g_per_kwh)
    return {
        "since": lo.isoformat(), "until": hi.isoformat(), "currency": currency,
        # vars(), not asdict(): the lines are flat, and asdict's deep copy was half a year's export
        "records": [vars(ln) | {"cost": round(ln.cost, 6)} for ln in lines],
        "totals": totals(lines),
    }


def totals(lines: list[Line]) -> dict:
    samples = [ln for ln in lines if ln.efficiency_pct is not None]
    weight = sum(ln.gpu_hours for ln in samples)
    return {
        "servers": len(lines),
        "gpu_seconds": round(sum(ln.gpu_seconds for ln in lines), 3),
        "gpu_hours": round(sum(ln.gpu_hours for ln in lines), 4),
        "cost": money(sum(ln.cost for ln in lines)),
        "energy_kwh": round(sum(ln.energy_kwh for ln in lines), 4),
        "co2_kg": round(sum(ln.co2_kg for ln in lines), 4),
        # weighted by GPU-hours, so a long busy server counts more than a short idle one
        "efficiency_pct": round(sum(ln.efficiency_pct * ln.gpu_hours for ln in samples) / weight, 1) if weight else None,
    }


def per_day(records, lo: dt.datetime, now: dt.datetime) -> list[dict]:
    usages = [as_usage(r) for r in records]
    hours = by_day(usages, "gpu_hours", lo, now)
    cost = dict(by_day(usages, "money", lo, now))
    return [{"day": d.isoformat(), "gpu_hours": round(h, 4), "cost": money(cost[d])} for d, h in hours]


def by_key(lines: list[dict], key) -> list[dict]:
    """Sum report lines by ``key(line)`` (a user, or each of a user's groups), largest first."""
    acc: dict[str, dict] = defaultdict(lambda: {"gpu_hours": 0.0, "cost": 0.0, "servers": 0, "co2_kg": 0.0})
    for ln in lines:
        for k in key(ln):
            a = acc[k]
            a["gpu_hours"] += ln["gpu_hours"]
            a["cost"] += ln["cost"]
            a["co2_kg"] += ln["co2_kg"]
            a["servers"] += ln.get("servers", 1)
    out = [{"name": k, "gpu_hours": round(v["gpu_hours"], 4), "cost": money(v["cost"]),
            "co2_kg": round(v["co2_kg"], 4), "servers": v["servers"]} for k, v in acc.items()]
    return sorted(out, key=lambda x: (-x["gpu_hours"], x["name"]))


@dataclass
class Part:
    """A sum of report lines of one user: one line, or the database's sum of many settled ones
    (``store/settled.py`` settled_sums). The admin page adds parts, so a year of everyone's records
    is summed without a line each."""

    user: str
    servers: int
    gpu_hours: float
    cost: float
    energy_kwh: float
    co2_kg: float
    eff_gpu_hours: float  # sum of efficiency x GPU-hours, over the lines that have one
    eff_weight: float  # their GPU-hours


def part_of(ln: Line) -> Part:
    has = ln.efficiency_pct is not None
    return Part(ln.user, 1, ln.gpu_hours, ln.cost, ln.energy_kwh, ln.co2_kg,
                ln.efficiency_pct * ln.gpu_hours if has else 0.0, ln.gpu_hours if has else 0.0)


def part_of_sum(row, power: dict, grid_g_per_kwh: float) -> Part:
    """A row of ``settled_sums``: its energy as :func:`line` counts it (measured, or nominal power
    of the GPU type while it held GPUs)."""
    gpu_hours = row.gpu_seconds / 3600
    if row.measured:
        kwh = row.energy_wh / 1000
    else:
        kwh = nominal_watts(power, row.gpu_type) * gpu_hours / 1000 if row.has_gpu else 0.0
    return Part(row.user_name, row.n, gpu_hours, row.cost, kwh, kwh * grid_g_per_kwh / 1000,
                row.eff_gpu_seconds / 3600, row.eff_weight / 3600)


def summary(parts: list[Part], groups_of) -> dict:
    """Totals, and sums per user and per group (``groups_of(user)``), largest first: what the
    admin page shows."""
    weight = sum(p.eff_weight for p in parts)
    totals = {
        "servers": sum(p.servers for p in parts),
        "gpu_seconds": round(sum(p.gpu_hours for p in parts) * 3600, 3),
        "gpu_hours": round(sum(p.gpu_hours for p in parts), 4),
        "cost": money(sum(p.cost for p in parts)),
        "energy_kwh": round(sum(p.energy_kwh for p in parts), 4),
        "co2_kg": round(sum(p.co2_kg for p in parts), 4),
        "efficiency_pct": round(sum(p.eff_gpu_hours for p in parts) / weight, 1) if weight else None,
    }
    lines = [{"user": p.user, "gpu_hours": p.gpu_hours, "cost": p.cost, "co2_kg": p.co2_kg, "servers": p.servers}
             for p in parts]
    return {"totals": totals, "by_user": by_key(lines, lambda ln: [ln["user"]]),
            "by_group": by_key(lines, lambda ln: groups_of(ln["user"]))}


CSV_FIELDS = [f.name for f in fields(Line)]  # a line's fields, in order, then the currency


def to_csv(rep: dict) -> str:
    return csv_header() + csv_rows(rep["records"], rep["currency"])


def csv_header() -> str:
    buf = io.StringIO()
    csv.writer(buf).writerow(CSV_FIELDS + ["currency"])
    return buf.getvalue()


_COST = CSV_FIELDS.index("cost")
# the fields around the cost (written with 6 decimals), each side read in one call
_BEFORE_COST = itemgetter(*CSV_FIELDS[:_COST])
_AFTER_COST = itemgetter(*CSV_FIELDS[_COST + 1:])


def csv_rows(records: list[dict], currency: str) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows([*_BEFORE_COST(ln), f"{round(ln['cost'], 6):.6f}", *_AFTER_COST(ln), currency]
                              for ln in records)
    return buf.getvalue()


def parse_time(text: str | None, default: dt.datetime) -> dt.datetime:
    """ISO date or datetime (UTC if no zone); raises ValueError with the bad text."""
    if not text:
        return default
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"'{text[:40]}' is not an ISO date such as 2026-11-01 or 2026-11-01T08:00Z") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)
