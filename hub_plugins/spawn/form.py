"""The spawn form: a model computed from profiles, quota, usage, free GPUs, prices and budget
(pure), and its HTML rendering. The page shows the profiles a user may pick, a GPU count
selector limited by quota and by what is free (or what could be waited for in the queue), free
GPUs per type (refreshed while the page is open), what the choice costs per hour (and in total
with a runtime), and the user's limits, usage and budget. The same rules refuse the same
requests through the REST API.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import jinja2

from ..accounting.budgets import fmt_amount
from ..gpu.choice import auto_candidates
from ..gpu.devices import format_equivalents
from ..quota import Effective, ServerUse
from ..quota.limits import format_bytes
from ..quota.decision import sentence
from ..quota.view import QuotaView, amount_text
from ..queue.borrowing import BORROWED_NOTE
from .spec import cap

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
RUNTIME_CHOICES_H = (1, 2, 4, 8, 12, 24, 48, 72)
PREFILL_KEYS = ("profile", "gpus", "gpu_type", "queue", "runtime", "project", "preemptible")  # opt-<key> in a link


@dataclass
class FormContext:
    """Everything the form is computed from (gathered by :func:`build_model`)."""

    catalog: object
    eff: Effective
    usage: list[ServerUse]
    avail: list  # TypeAvailability
    groups: list[str]
    profile_available: object = lambda p: (True, "")
    # the backend's words about a profile's environment (being installed, its size for admins)
    profile_info: object = lambda p: None
    enforcement: str = "hard"
    user: str = ""
    server_name: str = ""
    notes: tuple[str, ...] = ()
    prices: dict[str, float] = field(default_factory=dict)  # per device-hour by type
    cpu_price: float = 0.0
    currency: str = "EUR"
    queue_enabled: bool = False
    queue_default: bool = True
    projects: list[str] = field(default_factory=list)
    budget: dict | None = None  # {"left_text", "limit_text", "spent", "retry_at"}
    engine_queue: bool = False  # a scheduler (SLURM, Kubernetes) places servers and queues them
    prefill: dict = field(default_factory=dict)  # a link's opt-<key> choices (strings)
    # queue.borrowing for this user: {"rate_factor", "grace_minutes", "note"} when they may borrow, else None
    borrowing: dict | None = None
    borrowed: list[ServerUse] = field(default_factory=list)  # their borrowed servers (beyond quota)


def _count_choice(count: int, a, left: Fraction | None, hard: bool, engine_queue: bool,
                  per_server: Fraction | None = None) -> dict:
    """One GPU count of one type. ``queue_ok``: the count may wait in gpulab's queue (it fits
    one host once devices free up). With ``engine_queue`` a scheduler places servers (SLURM,
    Kubernetes): a count that fits one node is offered even when busy, and ``why`` says it
    will wait in the scheduler's queue. ``borrow_ok`` / ``borrow_queue_ok``: the same when the
    person borrows beyond quota (only the per-server limit still holds, ``per_server``)."""
    need = a.weight * count
    lendable = per_server is None or need <= per_server
    borrow = {"borrow_ok": lendable and count <= a.largest and not engine_queue,
              "borrow_queue_ok": lendable and count <= a.host_max and not engine_queue}
    if hard and left is not None and need > left:
        return {"count": count, "ok": False, "queue_ok": False,
                "why": f"over your quota ({format_equivalents(left)} left)", **borrow}
    if count > a.largest:
        fits = count <= a.host_max
        if engine_queue and fits:
            note = "queues: none free now" if a.largest == 0 else f"queues: only {a.largest} free now"
            return {"count": count, "ok": True, "queue_ok": True, "why": note, **borrow}
        if engine_queue:
            why = f"no node has {count} (at most {a.host_max})"
        else:
            why = "none free" if a.largest == 0 else f"only {a.largest} free"
        return {"count": count, "ok": False, "queue_ok": fits and not engine_queue, "why": why, **borrow}
    return {"count": count, "ok": True, "queue_ok": True, "why": "", **borrow}


def _profile(p, ctx: FormContext, left, hard) -> dict:
    lim = ctx.eff.limits
    why = ""
    info = {}
    if not p.allows_group(ctx.groups):
        why = "not available to your groups"
    elif lim.profiles is not None and p.name not in lim.profiles:
        why = f"not allowed by {ctx.eff.source('profiles')}"
    else:
        ok, reason = ctx.profile_available(p)
        if not ok:
            why = reason
        info = ctx.profile_info(p) or {}
    types = [a for a in ctx.avail if p.allows_type(a.gpu_type) and (lim.gpu_types is None or a.gpu_type in lim.gpu_types)]
    zero = {"count": 0, "ok": True, "queue_ok": True, "why": "", "borrow_ok": True, "borrow_queue_ok": True}
    per_server = lim.max_gpus_per_server if hard else None
    choices = {a.gpu_type: [_count_choice(c, a, left, hard, ctx.engine_queue, per_server) if c else zero
                            for c in p.gpu_counts] for a in types}
    # "any type": the types an unnamed request may land on (the allocator uses the same rule)
    weights = {a.gpu_type: a.weight for a in ctx.avail}
    ordered = list(auto_candidates(list(weights), weights, p.allows_type, lim.gpu_types))  # allocator's order
    candidates = set(ordered)
    any_type = []
    for c in p.gpu_counts:
        opts = [ch for t, chs in choices.items() if t in candidates for ch in chs if ch["count"] == c]
        oks = [o for o in opts if o["ok"]]
        ok = c == 0 or bool(oks)
        queue_ok = c == 0 or any(o["queue_ok"] for o in opts)
        if not ok:
            reason = opts[0]["why"] if opts else "no GPU type for this profile"
        else:  # a scheduler-queue note only when every type that allows the count would queue
            reason = "" if c == 0 or any(not o["why"] for o in oks) else oks[0]["why"]
        any_type.append({"count": c, "ok": ok, "queue_ok": queue_ok, "why": reason,
                         "borrow_ok": c == 0 or any(o["borrow_ok"] for o in opts),
                         "borrow_queue_ok": c == 0 or any(o["borrow_queue_ok"] for o in opts)})
    mem = cap(p.mem_limit, lim.mem_limit)
    return {
        "name": p.name, "display_name": p.display_name, "description": p.description,
        "allowed": not why, "why_not": why, "default": p.name == ctx.catalog.default,
        "gpu_default": p.gpu_default, "types": [a.gpu_type for a in types],
        "any_types": ordered, "choices": {"": any_type, **choices},
        "cpu_limit": cap(p.cpu_limit, lim.cpu_limit), "mem_limit": None if mem is None else format_bytes(mem),
        "installing": info.get("installing") if why else None, "admin_note": info.get("admin", ""),
    }


def form_model(ctx: FormContext) -> dict:
    """Everything the form shows, as JSON-ready data."""
    lim = ctx.eff.limits
    hard = ctx.enforcement == "hard"
    view = QuotaView.of(ctx.eff, ctx.usage, ctx.enforcement)
    left = view.left
    profiles = [_profile(p, ctx, left, hard) for p in ctx.catalog]
    warnings = []
    if lim.max_servers is not None and len(ctx.usage) >= lim.max_servers:
        warnings.append(
            f"You already run {len(ctx.usage)} server{'s' if len(ctx.usage) != 1 else ''}; "
            f"{ctx.eff.source('max_servers')} allows {lim.max_servers}. Stop one before starting another."
            if ctx.usage else
            f"{sentence(ctx.eff.source('max_servers'))} allows no servers; ask an admin for an override."
        )
    if ctx.budget and ctx.budget.get("spent"):
        retry = f" It refills at {ctx.budget['retry_at']}." if ctx.budget.get("retry_at") else ""
        warnings.append(f"Your budget ({ctx.budget['limit_text']}) is spent: only CPU-only servers can start.{retry}")
    max_rt = lim.max_runtime_hours
    return {
        "user": ctx.user,
        "server_name": ctx.server_name,
        "profiles": profiles,
        "free": [a.as_dict() for a in ctx.avail],
        "prices": {"per_device_hour": ctx.prices, "cpu_per_hour": ctx.cpu_price, "currency": ctx.currency},
        "queue": {"enabled": ctx.queue_enabled, "default": ctx.queue_default},
        # the 'preemptible' box, only for those who may borrow (BORROWED_NOTE says what it means)
        "borrow": ctx.borrowing,
        "runtimes": [h for h in RUNTIME_CHOICES_H if max_rt is None or h <= max_rt],
        "max_runtime_hours": max_rt,
        "projects": ctx.projects,
        "budget": ctx.budget,
        "quota": {
            "limits": view.limits,
            "sources": view.sources(("max_gpus", "max_gpus_per_server", "max_servers")),
            "groups": list(ctx.eff.groups),
            "overrides": [{"expires": o["expires"], "reason": o["reason"]} for o in view.overrides()],
            **view.amounts(),
            "max_gpus_text": amount_text(lim.max_gpus),
            "enforcement": ctx.enforcement,
            "servers": view.servers(),
            # beyond quota, counted in none of the amounts above; may be reclaimed
            "borrowed": [{"name": u.name or "default", "gpus": format_equivalents(u.equivalents)}
                         for u in ctx.borrowed],
        },
        "warnings": warnings,
        "notes": list(ctx.notes),
        # a shared link's choice; the page applies what the form offers and ignores the rest
        "prefill": {k: str(v)[:64] for k, v in ctx.prefill.items() if k in PREFILL_KEYS},
        "generated_at": dt.datetime.now(dt.timezone.utc).strftime("%H:%M:%S UTC"),
    }


def build_model(core, user_id: int, user_name: str, groups: list[str], server_name: str, profile_available,
                profile_info=lambda p: None, prefill: dict | None = None):
    """Gather the live data for :func:`form_model` (database, inventory, prices, budget)."""
    snapshot = core.allocator.snapshot()
    inv = core.inventory()
    notes = (f"No GPUs on this hub right now: {inv.note}",) if not inv.devices and inv.note else ()
    view = core.quota_view(user_name, groups, snapshot.usage_of(user_id, exclude_server=server_name))
    eff = view.eff
    avail = core.availability(snapshot)
    pricing = core.pricing
    keeper = core.budget_keeper
    budget = None
    if eff.limits.budget is not None:
        st = keeper.personal(user_name, eff.limits.budget)
        unit = keeper.config.unit
        budget = {"limit_text": fmt_amount(st.limit, unit, pricing.currency),
                  "left_text": fmt_amount(max(0.0, st.left), unit, pricing.currency),
                  "describe": keeper.config.period.describe(), "spent": st.spent,
                  "retry_at": st.retry_at and st.retry_at.strftime("%Y-%m-%d %H:%M UTC")}
    borrowing = core.borrowing
    may_borrow = None
    if core.queue_enabled and borrowing.allows(groups):
        may_borrow = {"rate_factor": borrowing.rate_factor, "grace_minutes": borrowing.grace.total_seconds() / 60,
                      "note": BORROWED_NOTE}
    return form_model(FormContext(
        catalog=core.catalog, eff=eff, usage=list(view.usage),
        avail=avail, groups=groups, profile_available=profile_available, profile_info=profile_info,
        enforcement=view.enforcement, user=user_name, server_name=server_name, notes=notes,
        prices={a.gpu_type: round(pricing.device_rate(a.gpu_type, a.weight), 6) for a in avail},
        cpu_price=pricing.cpu_rate, currency=pricing.currency,
        queue_enabled=core.queue_enabled, queue_default=core.settings.queue.default,
        projects=keeper.projects_of(user_name, groups), budget=budget,
        engine_queue=core.placement == "engine", prefill=dict(prefill or {}),
        borrowing=may_borrow, borrowed=snapshot.borrowed_of(user_id),
    ))


def render(model: dict) -> str:
    # '<', '>' and '&' as JSON escapes: nothing a person typed (a refused choice is shown again)
    # can end or open markup inside the page's <script> element
    data = json.dumps(model, sort_keys=True).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return _env.get_template("spawn_form.html").render(m=model, model_json=data)
