"""What the queue discipline (``discipline.py``) decides on, read inside the transaction that
acts on the decision: the requests that wait, the running servers and when they should end, the
free devices, and how long a session typically lasts.

Read on every decision while anyone waits (a fresh spawn with an empty queue does not come here):
four small queries on the tables the allocator already serialises on.
"""

from __future__ import annotations

import datetime as dt
import json

import sqlalchemy as sa

from ..gpu.devices import Inventory
from ..store.models import DeviceAllocation, QueueEntry, ServerRecord, UsageRecord
from .discipline import Request, Rules, Server
from .order import typical_duration

_Q, _S, _A, _U = QueueEntry.__table__, ServerRecord.__table__, DeviceAllocation.__table__, UsageRecord.__table__
TYPICAL_SAMPLE = 200  # the most recent finished sessions the typical length is the median of


def rules(policy) -> Rules:
    return Rules(backfill=policy.backfill, fair_share=policy.fair_share_days > 0, age_after=policy.age_after)


def request_of(row, weights: dict[str, float], runtime: dt.timedelta | None = None) -> Request:
    """A waiting ``gpulab_queue`` row. Its runtime is known only for the request deciding (its
    own plan): the others count as untimed, so they never use devices held for the head."""
    return Request(row.id, row.user_name, row.created_at, row.gpu_count,
                   tuple(t for t in row.gpu_types.split(",") if t), weights.get(row.user_name, 0.0),
                   not borrows(row.options), runtime)


def borrows(options: str) -> bool:
    """Whether a waiting request asked to borrow (its saved options say ``"preemptible": true``,
    validated when it joined the queue)."""
    try:
        return json.loads(options or "{}").get("preemptible") is True
    except (ValueError, AttributeError):
        return False


def running(conn, inventory: Inventory) -> list[Server]:
    """The servers holding devices, with the runtime their usage record says they stop at."""
    by_key = inventory.by_key()
    held: dict[int, list] = {}
    for server_id, key in conn.execute(sa.select(_A.c.server_id, _A.c.device_key)):
        if key in by_key:  # a device gone from the inventory frees nothing anyone could use
            held.setdefault(server_id, []).append(by_key[key])
    if not held:
        return []
    rows = conn.execute(
        sa.select(_S.c.id, _S.c.user_name, _S.c.created_at, _S.c.borrowed, _U.c.runtime_limit_s)
        .select_from(_S.outerjoin(_U, _U.c.spawn_id == _S.c.spawn_id))
        .where(_S.c.id.in_(list(held)))).all()
    return [Server(r.id, r.user_name, tuple(held[r.id]), r.created_at,
                   dt.timedelta(seconds=r.runtime_limit_s) if r.runtime_limit_s else None,
                   bool(r.borrowed)) for r in rows]


def typical(conn) -> dt.timedelta:
    """The median length of the most recent finished sessions that came up."""
    rows = conn.execute(
        sa.select(_U.c.ready_at, _U.c.stopped_at)
        .where(_U.c.stopped_at.is_not(None), _U.c.ready_at.is_not(None))
        .order_by(_U.c.id.desc()).limit(TYPICAL_SAMPLE)).all()
    return typical_duration([r.stopped_at - r.ready_at for r in rows if r.stopped_at >= r.ready_at])
