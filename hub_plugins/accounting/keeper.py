"""Budgets applied: where a user's (or project's) budget stands, and whether a spawn may go ahead.

Used by the hub before it reserves GPUs and by the billing service for its pages and API. The
arithmetic is pure (``accounting/budgets.py``); this module reads usage and applies the
configuration (``budgets:`` and ``billing:`` in gpulab.yaml).
"""

from __future__ import annotations

import datetime as dt
import logging

from .budgets import BudgetConfig, BudgetStatus, fmt_amount, fmt_time, status
from .pricing import Pricing
from ..store.usage import UsageStore

log = logging.getLogger("gpulab.budgets")
UTC = dt.timezone.utc


class BudgetRefused(Exception):
    pass


class Budgets:
    def __init__(self, usage: UsageStore, config: BudgetConfig, pricing: Pricing):
        self.usage = usage
        self.config = config
        self.pricing = pricing

    def _since(self, now: dt.datetime) -> dt.datetime | None:
        if self.config.period.kind == "credits":
            return None  # credits depend on the whole history
        return self.config.period.start_of(now)

    def personal(self, user_name: str, limit: float | None, now: dt.datetime | None = None) -> BudgetStatus:
        now = now or dt.datetime.now(UTC)
        usages = self.usage.usages(user_name, self._since(now), personal_only=True)
        return status(limit, usages, self.config.period, self.config.unit, now)

    def project(self, name: str, now: dt.datetime | None = None) -> BudgetStatus:
        now = now or dt.datetime.now(UTC)
        spec = (self.config.projects or {}).get(name) or {}
        usages = self.usage.usages(None, self._since(now), project=name)
        return status(spec.get("budget"), usages, self.config.period, self.config.unit, now)

    def may_use_project(self, name: str, user_name: str, groups) -> bool:
        spec = (self.config.projects or {}).get(name)
        if spec is None:
            return False
        return user_name in (spec.get("users") or []) or bool(set(spec.get("groups") or []) & set(groups))

    def projects_of(self, user_name: str, groups) -> list[str]:
        return sorted(p for p in (self.config.projects or {}) if self.may_use_project(p, user_name, groups))

    def check_spawn(self, user_name: str, limit: float | None, consumes: bool, project: str = "",
                    now: dt.datetime | None = None) -> None:
        """Raise BudgetRefused if the budget this spawn draws from is spent. A spawn that
        consumes nothing in the budget's unit (a CPU-only server under a GPU-hours budget) is
        always allowed."""
        if not consumes or (limit is None and not project):
            return  # nothing to spend, or no budget (its status would read the history for nothing)
        now = now or dt.datetime.now(UTC)
        if project:
            st, whose = self.project(project, now), f"Project {project}'s budget"
        else:
            st, whose = self.personal(user_name, limit, now), "Your budget"
        if not st.spent:
            return
        unit, cur = self.config.unit, self.pricing.currency
        when = (f" You can start again at {fmt_time(st.retry_at)}." if st.retry_at
                else " It does not refill by itself.")
        raise BudgetRefused(
            f"{whose} of {fmt_amount(st.limit, unit, cur)} {self.config.period.describe()} is spent "
            f"(used {fmt_amount(st.used, unit, cur)}).{when} Ask an admin for more if you need it now."
        )
