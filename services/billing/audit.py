"""The audit ledger's view of configuration: budgets, quotas and overrides come from gpulab.yaml,
so each time the service starts it records what changed since the last start (before, after)."""

from __future__ import annotations

import json

from hub_plugins.settings.typed import Settings, plain
from hub_plugins.store.models import LedgerEntry

WATCHED = ("quotas", "budgets", "billing")


def snapshot(settings: Settings) -> dict:
    return json.loads(json.dumps({k: plain(settings.raw.get(k)) for k in WATCHED}, sort_keys=True, default=str))


def record_config_changes(core, settings: Settings, actor: str = "gpulab.yaml") -> list[str]:
    """Write one ledger entry per changed section; returns the sections that changed."""
    now = snapshot(settings)
    last: dict = {}
    for e in core.usage.ledger_entries("config"):
        if e.action == "config" and e.after:
            last[e.reason] = json.loads(e.after)
    changed = []
    for section in WATCHED:
        if last.get(section) != now[section]:
            core.usage.ledger(actor, "config", "config", before=last.get(section), after=now[section],
                              reason=section)
            changed.append(section)
    return changed


__all__ = ["record_config_changes", "LedgerEntry"]
