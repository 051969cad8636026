"""The spawn form: a model computed from profiles, quota, usage and free GPUs (pure), and its
HTML rendering. The page shows the profiles a user may pick, a GPU count selector limited by
quota and by what is free, free GPUs per type (refreshed while the page is open) and the user's
limits and usage. The same rules refuse the same requests through the REST API.
"""

from __future__ import annotations

import datetime as dt
import json
from fractions import Fraction
from pathlib import Path

import jinja2

from .gpu.choice import auto_candidates
from .gpu.devices import format_equivalents
from .quota import Effective, ServerUse, headroom, server_label
from .quota.limits import format_bytes, limits_as_dict

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def cap(profile_value, quota_value):
    """A profile's resource limit, capped by the user's quota (None: no limit)."""
    values = [v for v in (profile_value, quota_value) if v is not None]
    return min(values) if values else None


def _count_choice(count: int, a, left: Fraction | None, hard: bool, queue: bool = False) -> dict:
    """One GPU count of one type. With ``queue`` (a scheduler places servers: SLURM,
    Kubernetes) a count that is not free now but fits one node is offered: it waits in the
    scheduler's queue, and ``why`` says so."""
    note = ""
    if count > a.largest:
        if not queue or count > a.per_host:
            if queue:
                why = f"no node has {count} (at most {a.per_host})"
            else:
                why = "none free" if a.largest == 0 else f"only {a.largest} free"
            return {"count": count, "ok": False, "why": why}
        note = "queues: none free now" if a.largest == 0 else f"queues: only {a.largest} free now"
    need = a.weight * count
    if hard and left is not None and need > left:
        return {"count": count, "ok": False, "why": f"over your quota ({format_equivalents(left)} left)"}
    return {"count": count, "ok": True, "why": note}


def form_model(
    catalog,
    eff: Effective,
    usage: list[ServerUse],
    avail,
    user_groups: list[str],
    profile_available=lambda p: (True, ""),
    enforcement: str = "hard",
    user: str = "",
    server_name: str = "",
    notes: tuple[str, ...] = (),
    queue: bool = False,
) -> dict:
    """Everything the form shows, as JSON-ready data. ``queue``: a scheduler places servers
    and queues what does not fit now (engine placement)."""
    lim = eff.limits
    hard = enforcement == "hard"
    left = headroom(eff, usage)
    profiles = []
    for p in catalog:
        why = ""
        if not p.allows_group(user_groups):
            why = "not available to your groups"
        elif lim.profiles is not None and p.name not in lim.profiles:
            why = f"not allowed by {eff.source('profiles')}"
        else:
            ok, reason = profile_available(p)
            if not ok:
                why = reason
        types = [
            a for a in avail
            if p.allows_type(a.gpu_type) and (lim.gpu_types is None or a.gpu_type in lim.gpu_types)
        ]
        choices = {
            a.gpu_type: [_count_choice(c, a, left, hard, queue) if c else {"count": 0, "ok": True, "why": ""}
                         for c in p.gpu_counts]
            for a in types
        }
        # "any type": the types an unnamed request may land on (the allocator uses the same rule)
        weights = {a.gpu_type: a.weight for a in avail}
        candidates = set(auto_candidates(list(weights), weights, p.allows_type, lim.gpu_types))
        any_type = []
        for c in p.gpu_counts:
            opts = [ch for t, chs in choices.items() if t in candidates for ch in chs if ch["count"] == c]
            oks = [o for o in opts if o["ok"]]
            ok = c == 0 or bool(oks)
            if not ok:
                reason = opts[0]["why"] if opts else "no GPU type for this profile"
            else:  # a queue note only when every type that allows it would queue
                reason = "" if c == 0 or any(not o["why"] for o in oks) else oks[0]["why"]
            any_type.append({"count": c, "ok": ok, "why": reason})
        profiles.append({
            "name": p.name,
            "display_name": p.display_name,
            "description": p.description,
            "allowed": not why,
            "why_not": why,
            "default": p.name == catalog.default,
            "gpu_default": p.gpu_default,
            "types": [a.gpu_type for a in types],
            "choices": {"": any_type, **choices},
            "cpu_limit": cap(p.cpu_limit, lim.cpu_limit),
            "mem_limit": None if cap(p.mem_limit, lim.mem_limit) is None
            else format_bytes(cap(p.mem_limit, lim.mem_limit)),
        })
    in_use = sum((s.equivalents for s in usage), Fraction(0))
    servers = [
        {"name": server_label(s.name), "profile": s.profile, "gpu_type": s.gpu_type, "count": s.count,
         "gpus": float(s.equivalents)}
        for s in usage
    ]
    warnings = []
    if lim.max_servers is not None and len(usage) >= lim.max_servers:
        warnings.append(
            f"You already run {len(usage)} server{'s' if len(usage) != 1 else ''}; "
            f"{eff.source('max_servers')} allows {lim.max_servers}. Stop one before starting another."
        )
    return {
        "user": user,
        "server_name": server_name,
        "profiles": profiles,
        "free": [a.as_dict() for a in avail],
        "quota": {
            "limits": limits_as_dict(lim),
            "sources": {k: eff.source(k) for k in ("max_gpus", "max_gpus_per_server", "max_servers")},
            "groups": list(eff.groups),
            "overrides": [
                {"expires": o.expires.isoformat() if o.expires else None, "reason": o.reason}
                for o in eff.overrides
            ],
            "in_use": float(in_use),
            "in_use_text": format_equivalents(in_use),
            "left": None if left is None else float(left),
            "left_text": "unlimited" if left is None else format_equivalents(left),
            "max_gpus_text": "unlimited" if lim.max_gpus is None else format_equivalents(lim.max_gpus),
            "enforcement": enforcement,
            "servers": servers,
        },
        "warnings": warnings,
        "notes": list(notes),
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def build_model(core, user_id: int, user_name: str, groups: list[str], server_name: str, profile_available):
    """Gather the live data for :func:`form_model` (database, inventory)."""
    snapshot = core.allocator.snapshot()
    inv = core.inventory()
    notes = (f"No GPUs on this hub right now: {inv.note}",) if not inv.devices and inv.note else ()
    return form_model(
        core.catalog,
        core.effective(user_name, groups),
        snapshot.usage_of(user_id, exclude_server=server_name),
        core.availability(snapshot),
        groups,
        profile_available,
        core.quota_config.enforcement,
        user_name,
        server_name,
        notes,
        queue=core.placement == "engine",
    )


def render(model: dict) -> str:
    data = json.dumps(model, sort_keys=True).replace("</", "<\\/")
    return _env.get_template("spawn_form.html").render(m=model, model_json=data)
