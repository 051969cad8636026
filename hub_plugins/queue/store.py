"""The queue's database side: waiting requests persist in ``gpulab_queue`` (so they survive a
hub restart) and a request leaves the queue in the same serialised transaction that allocates
its GPUs, so two waiting requests can never both take the GPUs one of them freed.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

import sqlalchemy as sa

from ..accounting.budgets import gpu_hours_since
from ..gpu.choice import pick_type
from ..settings.defaults import section
from ..store.allocator import Allocation, Allocator, Owner, ReservationPlan
from ..store.db import Database
from ..store.models import DeviceAllocation, QueueEntry, UsageRecord, utcnow
from ..store.usage import as_usage, aware, naive
from .order import Waiting, may_start, order, position

_Q = QueueEntry.__table__
_U = UsageRecord.__table__
_A = DeviceAllocation.__table__


@dataclass
class Outcome:
    state: str  # started | waiting | cancelled | gone
    allocation: Allocation | None = None
    position: int = 0
    ahead: list[Waiting] = field(default_factory=list)
    waiting: int = 0
    free: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class QueuePolicy:
    backfill: bool
    reserve_after: dt.timedelta
    fair_share_days: int
    stale_after: dt.timedelta  # nobody waits on it (hub restarted)

    @classmethod
    def from_config(cls, data: dict | None) -> QueuePolicy:
        data = section("queue", data)
        return cls(
            backfill=bool(data["backfill"]),
            reserve_after=dt.timedelta(minutes=float(data["reserve_after_minutes"])),
            fair_share_days=int(data["fair_share_days"]),
            stale_after=dt.timedelta(seconds=float(data["lost_after_seconds"])),
        )


def recent_gpu_hours(conn, since: dt.datetime, now: dt.datetime) -> dict[str, float]:
    """GPU-hours per user since ``since`` (the fair-share weight), charged as budgets charge."""
    rows = conn.execute(sa.select(_U.c.user_name, _U.c.started_at, _U.c.stopped_at, _U.c.ready_at, _U.c.equivalents,
                                  _U.c.rate_per_hour, _U.c.minimum_seconds)
                        .where(sa.or_(_U.c.stopped_at.is_(None), _U.c.stopped_at >= naive(since)),
                               _U.c.ready_at.is_not(None))).all()
    by_user: dict[str, list] = {}
    for r in rows:
        by_user.setdefault(r.user_name, []).append(as_usage(r))
    since, now = aware(since), aware(now)
    return {user: gpu_hours_since(usages, since, now) for user, usages in by_user.items()}


class QueueStore:
    def __init__(self, db: Database, allocator: Allocator, policy: QueuePolicy):
        self.db, self.allocator, self.policy = db, allocator, policy

    def enqueue(self, owner: Owner, options: dict, types: list[str], count: int) -> tuple[int, dt.datetime]:
        """Join the queue, or resume this server's place if it already waits (after a restart)."""

        def run():
            with self.db.write_conn() as c:
                row = c.execute(sa.select(_Q.c.id, _Q.c.created_at, _Q.c.state).where(
                    _Q.c.user_id == owner.user_id, _Q.c.server_name == owner.server_name)).first()
                now = utcnow()
                if row is not None and row.state == "waiting":
                    c.execute(sa.update(_Q).where(_Q.c.id == row.id).values(
                        heartbeat_at=now, options=json.dumps(options), gpu_types=",".join(types), gpu_count=count))
                    return row.id, row.created_at
                if row is not None:
                    c.execute(sa.delete(_Q).where(_Q.c.id == row.id))
                new_id = c.execute(sa.insert(_Q).returning(_Q.c.id), dict(
                    user_id=owner.user_id, user_name=owner.user_name, server_name=owner.server_name,
                    options=json.dumps(options), gpu_types=",".join(types), gpu_count=count,
                    created_at=now, state="waiting", heartbeat_at=now)).scalar_one()
                return new_id, now

        return self.db.retrying(run)

    def try_start(self, entry_id: int, owner: Owner, plan: ReservationPlan) -> Outcome:
        """Start ``entry_id`` now if the queue's order allows it and its GPUs are free, reserving
        by ``plan`` in the same transaction. QuotaRefused propagates (the entry is removed: the
        request no longer fits the user's quota, waiting will not change that)."""
        inventory = plan.inventory

        def run():
            with self.db.write_conn(serial=True) as c:
                now = utcnow()
                rows = c.execute(sa.select(_Q)).all()
                mine = next((r for r in rows if r.id == entry_id), None)
                if mine is None:
                    return Outcome("gone")
                if mine.state == "cancelled":
                    c.execute(sa.delete(_Q).where(_Q.c.id == entry_id))
                    return Outcome("cancelled")
                c.execute(sa.update(_Q).where(_Q.c.id == entry_id).values(heartbeat_at=now))
                fresh = [r for r in rows if r.state == "waiting"
                         and (r.id == entry_id or now - r.heartbeat_at < self.policy.stale_after)]
                weights = recent_gpu_hours(c, now - dt.timedelta(days=self.policy.fair_share_days), now)
                items = order([Waiting(r.id, r.user_name, r.created_at, r.gpu_count,
                                       tuple(t for t in r.gpu_types.split(",") if t), weights.get(r.user_name, 0.0))
                               for r in fresh])
                taken = set(c.execute(sa.select(_A.c.device_key)).scalars())
                free = inventory.free(taken)

                def fits(item: Waiting) -> bool:
                    return bool(item.types) and pick_type(list(item.types), free, item.count)[1]

                if may_start(entry_id, items, fits, now, self.policy.backfill, self.policy.reserve_after):
                    try:
                        alloc = self.allocator.allocate_in(c, owner, plan)
                    finally:
                        c.execute(sa.delete(_Q).where(_Q.c.id == entry_id))
                    return Outcome("started", alloc)
                free_by_type: dict[str, int] = {}
                for d in free:
                    free_by_type[d.gpu_type] = free_by_type.get(d.gpu_type, 0) + 1
                pos = position(entry_id, items)
                return Outcome("waiting", None, pos, items[: pos - 1], len(items), free_by_type)

        return self.db.retrying(run)

    def heartbeat(self, entry_id: int) -> None:
        def run():
            with self.db.write_conn() as c:
                c.execute(sa.update(_Q).where(_Q.c.id == entry_id).values(heartbeat_at=utcnow()))

        self.db.retrying(run)

    def remove(self, entry_id: int) -> None:
        def run():
            with self.db.write_conn() as c:
                c.execute(sa.delete(_Q).where(_Q.c.id == entry_id))

        self.db.retrying(run)

    def cancel(self, user_name: str, server_name: str | None = None) -> int:
        """Mark a user's waiting requests cancelled (the waiting spawn ends at its next check;
        one nobody waits on is removed at once). Returns how many."""

        def run():
            with self.db.write_conn() as c:
                mine = [_Q.c.user_name == user_name, _Q.c.state == "waiting"]
                if server_name is not None:
                    mine.append(_Q.c.server_name == server_name)
                # nobody has looked at a stale entry lately (its spawn was lost): no one would
                # ever read the mark, so it goes now
                stale = utcnow() - self.policy.stale_after
                gone = c.execute(sa.delete(_Q).where(*mine, _Q.c.heartbeat_at < stale)).rowcount
                return gone + c.execute(sa.update(_Q).where(*mine).values(state="cancelled")).rowcount

        return self.db.retrying(run)

    def entries(self) -> list[QueueEntry]:
        def run():
            with self.db.read() as s:
                return list(s.scalars(sa.select(QueueEntry).order_by(QueueEntry.created_at)))

        return self.db.retrying(run)

    def ordered(self) -> list[Waiting]:
        """The queue in the order requests will start (for pages, the API and metrics)."""

        def run():
            with self.db.read() as s:
                now = utcnow()
                rows = list(s.scalars(sa.select(QueueEntry).where(QueueEntry.state == "waiting")))
                weights = recent_gpu_hours(s.connection(), now - dt.timedelta(days=self.policy.fair_share_days), now)
                return order([Waiting(r.id, r.user_name, r.created_at, r.gpu_count,
                                      tuple(t for t in r.gpu_types.split(",") if t), weights.get(r.user_name, 0.0))
                              for r in rows])

        return self.db.retrying(run)
