"""About when a waiting request will start (pure), for a request that holds no reservation (the
head's estimate is its reservation's, ``discipline.py``), and the queue as pages list it.

Who starts, and in what order, is the discipline's (``discipline.py``): one decision for a fresh
spawn and a waiting request alike.
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


@dataclass(frozen=True)
class Running:
    """A running server, as an estimate sees it."""

    gpu_type: str
    count: int
    started_at: dt.datetime
    runtime_limit: dt.timedelta | None = None


TYPICAL_DEFAULT = dt.timedelta(hours=1)  # until the hub has enough finished sessions to go by
TYPICAL_MIN_SAMPLE = 10  # fewer say little: a new hub's first sessions are tries of seconds


def typical_duration(past: list[dt.timedelta], default: dt.timedelta = TYPICAL_DEFAULT) -> dt.timedelta:
    """How long a session lasts: the median of ``past`` (recent finished ones), ``default`` until
    there are :data:`TYPICAL_MIN_SAMPLE` of them (a queue told people "starting soon" behind
    servers with no end in sight, from three sessions of a minute)."""
    if len(past) < TYPICAL_MIN_SAMPLE:
        return default
    return dt.timedelta(seconds=statistics.median(d.total_seconds() for d in past))


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
