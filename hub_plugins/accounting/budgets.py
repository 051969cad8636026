"""Budgets over time windows (pure): how much of a budget is used, what is left, and when a
user who has spent it can start again.

A budget is a limit (``budget`` in quotas: per group, overridable per user like any limit) in one
unit (``gpu_hours`` or ``money``) over a period:

- ``week`` / ``month``: fixed calendar periods in UTC (weeks start on Monday);
- ``rolling:30d``: the last N days, sliding;
- ``credits``: regenerating credits: ``refill_per_day`` is added every day at 00:00 UTC up to the
  limit (the cap); usage spends them. A new user starts full.

Usage is attributed to a window by overlap: a server's charged interval (its duration, raised
to the minimum charge) is split across windows, so windows add up to the whole charge.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..settings.defaults import section
from ..settings.schema import DEFAULTS
from .pricing import Charge, charge, charged_seconds, money

UTC = dt.timezone.utc
DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Usage:
    """One server's life, as budgets see it (times are aware UTC datetimes)."""

    start: dt.datetime
    end: dt.datetime | None  # None: still running
    ready: bool
    equivalents: float  # GPU-equivalents held
    rate_per_hour: float  # money per hour for the whole server
    minimum_seconds: int = DEFAULTS["billing"]["minimum_charge_seconds"]

    def charged_end(self, now: dt.datetime) -> dt.datetime:
        """Where its charge ends (``pricing.charged_seconds``); a failed start is not charged."""
        if not self.ready:
            return self.start
        return self.start + dt.timedelta(seconds=charged_seconds(self.start, self.end or now, self.minimum_seconds))

    def charge(self, now: dt.datetime) -> Charge:
        """Its whole charge so far (a running server's up to ``now``)."""
        return charge(started_at=self.start, ended_at=self.end or now, ready=self.ready,
                      equivalents=self.equivalents, rate_per_hour=self.rate_per_hour,
                      minimum_seconds=self.minimum_seconds)

    def amount(self, unit: str, lo: dt.datetime, hi: dt.datetime, now: dt.datetime) -> float:
        """This server's charge (in ``unit``) that falls inside [lo, hi)."""
        a, b = max(self.start, lo), min(self.charged_end(now), hi)
        seconds = max(0.0, (b - a).total_seconds())
        if unit == "money":
            return self.rate_per_hour * seconds / 3600
        return self.equivalents * seconds / 3600


@dataclass(frozen=True)
class Period:
    kind: str  # week | month | rolling | credits
    days: int = 0  # rolling window length
    refill_per_day: float = 0.0  # credits

    @classmethod
    def parse(cls, text: str, refill_per_day: float = 0.0) -> Period:
        if text in ("week", "month"):
            return cls(text)
        if text == "credits":
            return cls("credits", refill_per_day=refill_per_day)
        if text.startswith("rolling:") and text.endswith("d") and text[8:-1].isdigit() and int(text[8:-1]) > 0:
            return cls("rolling", days=int(text[8:-1]))
        raise ValueError(f"budget period {text!r}: use week, month, rolling:<N>d or credits")

    def start_of(self, now: dt.datetime) -> dt.datetime:
        """Start of the window that contains ``now`` (fixed periods and rolling windows)."""
        day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        if self.kind == "week":
            return day - dt.timedelta(days=day.weekday())
        if self.kind == "month":
            return day.replace(day=1)
        return now - dt.timedelta(days=self.days)

    def next_reset(self, now: dt.datetime) -> dt.datetime | None:
        start = self.start_of(now)
        if self.kind == "week":
            return start + dt.timedelta(days=7)
        if self.kind == "month":
            return (start + dt.timedelta(days=32)).replace(day=1)
        return None

    def describe(self) -> str:
        return {"week": "this week", "month": "this month"}.get(
            self.kind, f"in the last {self.days} days" if self.kind == "rolling" else "in credits"
        )


@dataclass(frozen=True)
class BudgetConfig:
    """The ``budgets`` section of gpulab.yaml (the limits themselves are ``budget`` in quotas)."""

    unit: str  # gpu_hours | money
    period: Period
    enforce_running: bool
    grace_minutes: int
    projects: dict = field(default_factory=dict)  # name -> {budget, users, groups}

    @classmethod
    def from_config(cls, data: dict | None) -> BudgetConfig:
        data = section("budgets", data)
        return cls(
            unit=data["unit"],
            period=Period.parse(data["period"], float(data["refill_per_day"] or 0)),
            enforce_running=bool(data["enforce_running"]),
            grace_minutes=int(data["grace_minutes"]),
            projects=dict(data["projects"] or {}),
        )


@dataclass(frozen=True)
class BudgetStatus:
    limit: float | None
    used: float
    left: float | None
    unit: str
    period: Period
    window_start: dt.datetime | None
    resets_at: dt.datetime | None  # when the budget is whole again (fixed periods)
    retry_at: dt.datetime | None  # when a user who has spent it can start again (None: now)

    @property
    def spent(self) -> bool:
        return self.left is not None and self.left <= 0


def _credits(usages: list[Usage], limit: float, period: Period, unit: str, now: dt.datetime,
             since: dt.datetime) -> tuple[float, dt.datetime | None]:
    """Balance of regenerating credits at ``now`` (and when it next becomes positive)."""
    day = since.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    balance = limit  # a new account starts full
    while day + DAY <= now:
        balance -= sum(u.amount(unit, day, day + DAY, now) for u in usages)
        day += DAY
        balance = min(limit, balance + period.refill_per_day)
    balance -= sum(u.amount(unit, day, now + DAY, now) for u in usages)
    retry = None
    if balance <= 0:
        if period.refill_per_day <= 0:
            retry = None
        else:
            days = math.floor(-balance / period.refill_per_day) + 1
            retry = day + DAY * days
    return balance, retry


def status(limit: float | None, usages: list[Usage], period: Period, unit: str, now: dt.datetime,
           account_since: dt.datetime | None = None) -> BudgetStatus:
    """Where a budget stands at ``now``."""
    if limit is None:
        return BudgetStatus(None, _used(usages, period, unit, now), None, unit, period,
                            None if period.kind == "credits" else period.start_of(now), None, None)
    if period.kind == "credits":
        since = account_since or min((u.start for u in usages), default=now)
        balance, retry = _credits(usages, limit, period, unit, now, since)
        return BudgetStatus(limit, limit - balance, balance, unit, period, None, None, retry)
    start = period.start_of(now)
    used = _used(usages, period, unit, now)
    left = limit - used
    retry = None
    if left <= 0:
        retry = period.next_reset(now) if period.kind != "rolling" else _rolling_retry(usages, limit, period, unit, now)
    return BudgetStatus(limit, used, left, unit, period, start, period.next_reset(now), retry)


def _used(usages, period, unit, now) -> float:
    """Usage in the current window. A charge already incurred counts in full even where it
    reaches past now (the minimum charge of a server that started a moment ago)."""
    if period.kind == "credits":
        lo = min((u.start for u in usages), default=now)
    else:
        lo = period.start_of(now)
    hi = period.next_reset(now) or now + DAY
    return sum(u.amount(unit, lo, hi, now) for u in usages)


def _rolling_retry(usages, limit, period, unit, now) -> dt.datetime:
    """Earliest time at which usage in the trailing window drops below the limit, assuming the
    servers running now are stopped (what a refused user would do)."""
    window = dt.timedelta(days=period.days)
    frozen = [Usage(u.start, u.end or now, u.ready, u.equivalents, u.rate_per_hour, u.minimum_seconds)
              for u in usages]
    # usage only leaves the window: check at each charged-interval boundary, then bisect
    points = sorted({p + window for u in frozen for p in (u.start, u.charged_end(now)) if p + window > now})
    lo = now
    for t in points:
        used = sum(u.amount(unit, t - window, t, now) for u in frozen)
        if used < limit:
            hi = t
            for _ in range(40):  # to the second
                mid = lo + (hi - lo) / 2
                if sum(u.amount(unit, mid - window, mid, now) for u in frozen) < limit:
                    hi = mid
                else:
                    lo = mid
                if (hi - lo).total_seconds() < 1:
                    break
            return hi.replace(microsecond=0) + dt.timedelta(seconds=1)
        lo = t
    return now + window


def by_day(usages: list[Usage], unit: str, start: dt.datetime, now: dt.datetime) -> list[tuple[dt.date, float]]:
    """Usage per UTC day from ``start`` to ``now`` (the chart on the usage page)."""
    day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    while day <= now:
        out.append((day.date(), sum(u.amount(unit, day, day + DAY, now) for u in usages)))
        day += DAY
    return out


def gpu_hours_since(usages: Iterable[Usage], since: dt.datetime, now: dt.datetime) -> float:
    """GPU-hours charged from ``since`` on, a charge already incurred counted in full (as a
    budget counts it): the queue's fair-share weight."""
    return sum(u.amount("gpu_hours", since, now + DAY, now) for u in usages)


def fmt_amount(value: float, unit: str, currency: str) -> str:
    """An amount in a budget's unit, as a person reads it."""
    if unit == "money":
        return f"{money(value):.2f} {currency}"
    if abs(value - round(value)) < 1e-9:
        return f"{round(value)} GPU-hours"
    return f"{value:.2f} GPU-hours" if abs(value) >= 1 else f"{value:.2g} GPU-hours"


def fmt_time(t: dt.datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
