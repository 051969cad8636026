"""Usage reports (pure): per server, per day, per user and group, with cost, efficiency, energy
and CO2. Inputs are usage records (any objects with UsageRecord's fields) and a time range; the
same overlap rule as budgets splits a server's charge across ranges and days.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from hub_plugins.accounting.budgets import by_day
from hub_plugins.accounting.lines import (  # noqa: F401 (the report's line and CSV, for its readers)
    CSV_FIELDS, Line, csv_header, csv_rows, line, nominal_watts, shown)
from hub_plugins.accounting.pricing import money
from hub_plugins.store.usage import as_usage, naive

UTC = dt.timezone.utc


def charged_lines(records, lo: dt.datetime, hi: dt.datetime, now: dt.datetime, power: dict,
                  grid_g_per_kwh: float) -> list[Line]:
    """The lines of the records charged in [lo, hi), and of every running server."""
    bounds = (naive(lo), naive(hi))
    lines = [line(r, lo, hi, now, power, grid_g_per_kwh, bounds) for r in records]
    return [ln for ln in lines if shown(ln)]


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


def to_csv(rep: dict) -> str:
    return csv_header() + csv_rows(rep["records"], rep["currency"])


def parse_time(text: str | None, default: dt.datetime) -> dt.datetime:
    """ISO date or datetime (UTC if no zone); raises ValueError with the bad text."""
    if not text:
        return default
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"'{text[:40]}' is not an ISO date such as 2026-11-01 or 2026-11-01T08:00Z") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)
