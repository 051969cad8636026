"""What the home page (and JupyterLab's title) says about each of a user's servers (pure).

Inputs are plain facts: what the hub knows about a server (its spawner's phase), the server's
open usage record in gpulab's tables (what it holds, since when, at what rate, with which
runtime limit) and its place in the queue. Costs follow the one charging rule
(``accounting/pricing.py``, through ``Usage.charge``), so the page, budgets and billing agree.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ..accounting.budgets import Usage
from ..gpu.devices import format_devices


@dataclass(frozen=True)
class ServerFacts:
    """One server as the hub sees it."""

    name: str  # "" for the default server
    phase: str  # running | starting | stopping
    url: str
    progress_url: str
    requested: dict  # the user_options it was started with (profile, gpus, ...)


@dataclass(frozen=True)
class Held:
    """A server's open usage record: what it holds and how it is charged."""

    profile: str
    gpu_type: str
    gpu_count: int
    devices: tuple[str, ...]
    started_at: dt.datetime  # aware UTC: when its GPUs were reserved
    ready_at: dt.datetime | None
    runtime_limit_s: int | None
    usage: Usage  # its charge so far is usage.charge(now)


@dataclass(frozen=True)
class Place:
    position: int
    of: int


def duration_text(seconds: float) -> str:
    """'2 h 05 min', '12 min', 'less than a minute'."""
    minutes = int(seconds // 60)
    if minutes < 1:
        return "less than a minute"
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def gpus_text(gpu_type: str, count: int) -> str:
    return format_devices(gpu_type, count) if count else "CPU only"


def server_row(f: ServerFacts, held: Held | None, place: Place | None, profiles: dict[str, str],
               currency: str, now: dt.datetime) -> dict:
    """One row of the home page, JSON-ready."""
    profile = held.profile if held else str(f.requested.get("profile") or "")
    state = "queued" if place is not None and held is None else f.phase
    row = {
        "name": f.name, "label": f.name or "default", "state": state,
        "url": f.url, "progress_url": f.progress_url,
        "profile": profile, "profile_display": profiles.get(profile, profile),
        "queue_position": place.position if place and state == "queued" else None,
        "queue_length": place.of if place and state == "queued" else None,
        "gpu_type": held.gpu_type if held else "", "gpu_count": held.gpu_count if held else 0,
        "devices": list(held.devices) if held else [],
        "cost": None, "cost_text": "", "rate_per_hour": None, "rate_text": "",
        "started_at": None, "stops_at": None, "seconds_left": None, "time_left_text": "",
        # borrowed beyond quota: may be reclaimed (the request's own word; validated at spawn)
        "preemptible": f.requested.get("preemptible") is True,
    }
    if held is None:
        asked = f.requested.get("gpus")
        none = asked in (None, 0, "0")
        row["gpus_text"] = "CPU only" if none else f"{asked} GPU{'s' if str(asked) != '1' else ''} asked for"
        return row
    charge = held.usage.charge(now)
    row.update(
        gpus_text=gpus_text(held.gpu_type, held.gpu_count),
        cost=round(charge.cost, 4), cost_text=f"{charge.cost:.2f} {currency}",
        rate_per_hour=held.usage.rate_per_hour,
        rate_text=f"{held.usage.rate_per_hour:.2f} {currency}/h" if held.usage.rate_per_hour else "no charge",
        started_at=held.started_at.isoformat(),
    )
    if held.runtime_limit_s:
        # the culler stops a server when its runtime, counted from when it came up, is reached
        stops_at = (held.ready_at or now) + dt.timedelta(seconds=held.runtime_limit_s)
        left = max(0.0, (stops_at - now).total_seconds())
        row.update(stops_at=stops_at.isoformat() if held.ready_at else None, seconds_left=round(left),
                   time_left_text=duration_text(left) + ("" if held.ready_at else " once it is up"))
    return row


def title_text(row: dict) -> str:
    """A browser tab's title for a server: 'gpulab · 2 A100-80GB GPUs · 3 h 05 min left'."""
    parts = ["gpulab", row.get("gpus_text") or "CPU only"]
    if row.get("seconds_left") is not None:
        parts.append(f"{duration_text(row['seconds_left'])} left")
    if row.get("rate_per_hour"):
        parts.append(row["rate_text"])
    return " · ".join(parts)
