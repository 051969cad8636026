"""Queue decisions (pure): in what order waiting requests start, which may start now, and about
when a waiting request will start.

Order: first-come-first-served within fair share. Requests of users with less recent GPU use
(GPU-hours over the last ``fair_share_days``) go first; among equals, the earlier request first.

Who may start: the first request in that order that fits the free GPUs starts. With backfill
(the default), a later request that fits may start while earlier ones do not fit, so small
requests are not stuck behind a 4-GPU one; once the first request has waited longer than
``reserve_after``, backfill stops until it has started, so it cannot be starved.
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Waiting:
    id: int
    user: str
    created_at: dt.datetime
    count: int
    types: tuple[str, ...]
    recent_gpu_hours: float = 0.0  # the user's fair-share weight

    @property
    def key(self):
        return (round(self.recent_gpu_hours, 6), self.created_at, self.id)


def order(items: list[Waiting]) -> list[Waiting]:
    return sorted(items, key=lambda w: w.key)


def may_start(item_id: int, ordered: list[Waiting], fits, now: dt.datetime, backfill: bool = True,
              reserve_after: dt.timedelta = dt.timedelta(minutes=10)) -> bool:
    """Whether ``item_id`` may start now. ``fits(item)`` says whether it fits the free GPUs."""
    if not ordered:
        return False
    head = ordered[0]
    for item in ordered:
        if item.id == item_id:
            return fits(item)
        if not backfill or now - head.created_at > reserve_after:
            return False  # strict order, or the head is protected from starvation
        if fits(item):
            return False  # an earlier request that fits goes first
    return False


def position(item_id: int, ordered: list[Waiting]) -> int:
    """1-based place in the queue (0 if not waiting)."""
    for n, item in enumerate(ordered, 1):
        if item.id == item_id:
            return n
    return 0


@dataclass(frozen=True)
class Running:
    """A running server, as an estimate sees it."""

    gpu_type: str
    count: int
    started_at: dt.datetime
    runtime_limit: dt.timedelta | None = None


def typical_duration(past: list[dt.timedelta], default: dt.timedelta = dt.timedelta(hours=1)) -> dt.timedelta:
    return dt.timedelta(seconds=statistics.median(d.total_seconds() for d in past)) if past else default


def estimate_start(item: Waiting, ahead: list[Waiting], running: list[Running], free: dict[str, int],
                   typical: dt.timedelta, now: dt.datetime) -> dt.datetime | None:
    """About when ``item`` starts: running servers of its types end at their runtime limit or
    after a typical session (the median of recent ones), and requests ahead of it take GPUs
    first. None when nothing running could ever make room (the type has too few GPUs)."""
    types = set(item.types)
    ends = []
    for r in running:
        if r.gpu_type not in types:
            continue
        end = r.started_at + (r.runtime_limit or typical)
        if end < now:  # running past the typical length: assume it ends soon, not never
            end = now + typical / 4
        ends += [end] * r.count
    ends.sort()
    need = item.count + sum(a.count for a in ahead if set(a.types) & types)
    have = sum(free.get(t, 0) for t in types)
    if have >= need:
        return now
    missing = need - have
    if missing > len(ends):
        return None
    return ends[missing - 1]
