"""The quotas service's logic, without HTTP: what a person's quota is, and the admin operations
on overrides (validated, stored with their audit record).

The tornado app (``app.py``) only authenticates, asks the hub who a user is and which groups
they are in, and turns :class:`AdminError` into HTTP statuses. Tests call this module directly.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from hub_plugins.core import GPULab
from hub_plugins.gpu.devices import valid_type_name
from hub_plugins.quota.limits import FIELDS, format_bytes
from hub_plugins.quota.view import amount_text, server_rows
from hub_plugins.settings.errors import ConfigError
from hub_plugins.settings.schema import NAME, OVERRIDE
from hub_plugins.settings.validate import validate
from hub_plugins.store.allocator import server_use
from hub_plugins.store.overrides import OverrideStore
from hub_plugins.validation import shown

MAX_REASON = 500


class AdminError(Exception):
    """A refusal with the HTTP status it maps to and a message that says what to change."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class NewOverride:
    user: str
    limits: dict
    expires: dt.date | None
    reason: str
    approved_by: str


def today_utc() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


def parse_override(body, actor: str, profiles: list[str], today: dt.date | None = None,
                   gpu_types: list[str] | None = None) -> NewOverride:
    """Validate an override as an admin sends it (the same schema as ``quotas.overrides`` in
    gpulab.yaml) plus what only makes sense at run time: it must change something, and expire
    in the future (or be explicitly open-ended with ``expires: null``)."""
    today = today or today_utc()
    if not isinstance(body, dict):
        raise AdminError(400, "Send a JSON object: {\"user\": ..., \"max_gpus\": ..., \"expires\": ..., \"reason\": ...}.")
    body = {k: v for k, v in body.items() if not (v == "" and k in FIELDS)}  # empty form fields: not set
    body.setdefault("approved_by", actor)
    try:
        validate(body, OVERRIDE, "override")
    except ConfigError as e:
        raise AdminError(400, str(e).replace("override is not valid:\n  ", "").replace("\n  ", "; ")) from None
    limits = {k: body[k] for k in FIELDS if k in body}
    if not limits:
        raise AdminError(400, f"An override must set at least one limit ({', '.join(FIELDS)}).")
    reason = body["reason"].strip()
    if not reason or len(reason) > MAX_REASON:
        raise AdminError(400, f"'reason' must say why, in 1 to {MAX_REASON} characters.")
    expires = body["expires"]
    if isinstance(expires, str):
        expires = dt.date.fromisoformat(expires)
    if expires is not None and expires <= today:
        raise AdminError(400, f"'expires' must be after today ({today.isoformat()}); an override applies until "
                              "00:00 UTC on that day. Use null for one that never expires.")
    unknown = [p for p in limits.get("profiles") or [] if p != "*" and p not in profiles]
    if isinstance(limits.get("profiles"), list) and unknown:
        raise AdminError(400, f"Unknown profile {', '.join(map(repr, unknown))} (profiles: {', '.join(profiles)}).")
    types = limits.get("gpu_types")
    if isinstance(types, list):
        bad = [t for t in types if t != "*" and not valid_type_name(t)]
        if bad:
            raise AdminError(400, f"{', '.join(map(repr, bad))} is not a GPU type name (e.g. 'A100-80GB', 'A100-80GB:1g.10gb').")
        absent = [t for t in types if t != "*" and gpu_types is not None and t not in gpu_types]
        if absent:  # a typo would leave the person with no GPU type at all
            raise AdminError(400, f"No GPU of type {', '.join(map(repr, absent))} on this hub (its types: "
                                  f"{', '.join(gpu_types) or 'none'}); '*' allows every type.")
    return NewOverride(body["user"], limits, expires, reason, body["approved_by"].strip() or actor)


def _limits_text(lim) -> dict:
    """The limits as a person reads them (the page)."""
    return {
        "max_gpus": amount_text(lim.max_gpus),
        "max_gpus_per_server": amount_text(lim.max_gpus_per_server),
        "max_servers": "unlimited" if lim.max_servers is None else str(lim.max_servers),
        "profiles": "all" if lim.profiles is None else ", ".join(sorted(lim.profiles)) or "none",
        "gpu_types": "all" if lim.gpu_types is None else ", ".join(sorted(lim.gpu_types)) or "none",
        "cpu_limit": "profile default" if lim.cpu_limit is None else f"{lim.cpu_limit:g} CPUs",
        "mem_limit": "profile default" if lim.mem_limit is None else f"{format_bytes(lim.mem_limit)}B",
    }


class QuotaAdmin:
    """Quota views and override administration over gpulab's core and tables."""

    def __init__(self, core: GPULab):
        self.core = core
        self.store = OverrideStore(core.db)

    @property
    def profiles(self) -> list[str]:
        return list(self.core.catalog.names)

    @property
    def quota_groups(self) -> list[str]:
        """The groups gpulab.yaml gives quotas (as they run now)."""
        return sorted(self.core.quota_config.groups)

    # -- what a person sees ----------------------------------------------------------------------
    def user_view(self, user: str, groups: list[str], admin: bool = False) -> dict:
        """A user's groups, effective limits (each with where it comes from), usage and active
        overrides: what the "Your quota" page and ``GET api/me`` show."""
        mine = [s for s in self.core.allocator.snapshot().servers if s.user_name == user]
        # borrowed servers are beyond quota: listed apart, counted in no amount
        view = self.core.quota_view(user, groups, [server_use(s) for s in mine if not s.borrowed])
        config_ids = {o.id for o in self.core.quota_config.overrides}
        return {
            "user": user,
            "admin": admin,
            "groups": sorted(groups),
            "quota_groups": list(view.eff.groups),
            "limits": view.limits,
            "limits_text": _limits_text(view.eff.limits),
            "sources": view.sources(FIELDS),
            **view.amounts(),
            "servers": view.servers(),
            "borrowed": server_rows([server_use(s) for s in mine if s.borrowed]),
            "overrides": [{**o, "source": "config" if o["id"] in config_ids else "admin"} for o in view.overrides()],
            "enforcement": view.enforcement,
        }

    # -- admin operations --------------------------------------------------------------------------
    def list_overrides(self, user: str | None = None, include_expired: bool = False) -> list[dict]:
        """Admin overrides (removable) and those in gpulab.yaml (read-only, source 'config')."""
        today = today_utc()
        out = []
        for o in self.core.quota_config.overrides:
            if user is not None and o.user != user:
                continue
            if not include_expired and o.expires is not None and o.expires <= today:
                continue
            out.append({"id": o.id, "source": "config", "user": o.user, "limits": dict(o.limits),
                        "expires": o.expires.isoformat() if o.expires else None, "reason": o.reason,
                        "approved_by": o.approved_by, "created_by": None, "created_at": None})
        return out + self.store.list(user=user, include_expired=include_expired, today=today)

    def create_override(self, body, actor: str, user_exists=lambda name: True) -> dict:
        new = parse_override(body, actor, self.profiles, gpu_types=self.core.inventory().types)
        if not user_exists(new.user):
            raise AdminError(404, f"There is no user '{new.user}' on this hub. People appear once they have "
                                  "signed in (or an admin added them on the admin page).")
        return self.store.create(user=new.user, limits=new.limits, expires=new.expires, reason=new.reason,
                                 approved_by=new.approved_by, actor=actor)

    def remove_override(self, ident: str, actor: str, reason: str = "") -> dict:
        if ident.startswith("config:"):
            raise AdminError(409, f"Override {ident} is set in gpulab.yaml (quotas.overrides); remove it there "
                                  "(the hub and its services apply the file within seconds of saving it).")
        if len(reason) > MAX_REASON:
            raise AdminError(400, f"'reason' must be at most {MAX_REASON} characters.")
        removed = self.store.remove(ident, actor=actor, reason=reason.strip())
        if removed is None:
            raise AdminError(404, f"There is no override {shown(ident, 64)} (it may have been removed already).")
        return removed

    def audit(self, limit: int = 100, target: str | None = None) -> list[dict]:
        return self.store.audit(limit=max(1, min(int(limit), 1000)), target=target)


def valid_user_name(name: str) -> bool:
    return bool(re.match(NAME, name or ""))
