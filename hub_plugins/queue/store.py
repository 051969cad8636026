"""The queue's database side: waiting requests persist in ``gpulab_queue`` (so they survive a
hub restart) and a request leaves the queue in the same serialised transaction that allocates
its GPUs, so two waiting requests can never both take the GPUs one of them freed.

Every request for GPUs goes through the one discipline (``discipline.py``) while anyone waits: a
fresh spawn (:meth:`QueueStore.admit`) as well as a waiting request that woke up
(:meth:`QueueStore.try_start`), so a newcomer never takes GPUs an earlier request could use or
that are held for the head of the queue. With nobody waiting, a fresh spawn is placed directly.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

import sqlalchemy as sa

from ..accounting.budgets import gpu_hours_since
from ..settings.defaults import section
from ..store.allocator import Allocation, Allocator, NoCapacity, Owner, QuotaRefused, ReservationPlan
from ..store.db import Database
from ..store.models import DeviceAllocation, QueueEntry, utcnow
from ..store.settled import gpu_seconds_in
from ..store.usage import as_usage, aware
from . import discipline, snapshot
from .order import Waiting

_Q = QueueEntry.__table__
_A = DeviceAllocation.__table__


@dataclass
class Outcome:
    state: str  # started | waiting | cancelled | gone
    allocation: Allocation | None = None
    position: int = 0
    ahead: list[Waiting] = field(default_factory=list)
    waiting: int = 0
    free: dict[str, int] = field(default_factory=dict)
    estimate: dt.datetime | None = None  # the head's reservation: its estimated start (naive UTC)
    reason: str = ""  # why it waits (a key of discipline.WHY)
    chosen: tuple | None = None  # (type, devices) the discipline picked, for the allocator to take


class QueueAhead(NoCapacity):
    """A fresh spawn whose GPUs may be free but are not its to take: requests wait before it."""

    def __init__(self, gpu_type: str, count: int, free: int, total: int, waiting: int, reason: str):
        super().__init__(gpu_type, count, free, total)
        self.waiting, self.reason = waiting, reason


@dataclass(frozen=True)
class QueuePolicy:
    backfill: bool
    fair_share_days: int
    stale_after: dt.timedelta  # nobody waits on it (hub restarted)
    age_after: dt.timedelta | None = dt.timedelta(hours=6)  # waited this long: before fair share

    @classmethod
    def from_config(cls, data: dict | None) -> QueuePolicy:
        data = section("queue", data)
        age = data["age_after_hours"]
        return cls(
            backfill=bool(data["backfill"]),
            fair_share_days=int(data["fair_share_days"]),
            stale_after=dt.timedelta(seconds=float(data["lost_after_seconds"])),
            age_after=dt.timedelta(hours=float(age)) if age else None,
        )


def recent_gpu_hours(conn, since: dt.datetime, now: dt.datetime) -> dict[str, float]:
    """GPU-hours per user since ``since`` (the fair-share weight), charged as budgets charge
    (``gpu_hours_since``): settled records summed by the database, the rest one by one."""
    hi = aware(now) + dt.timedelta(days=1)  # as gpu_hours_since: a charge incurred counts whole
    sums, rest = gpu_seconds_in(conn, since, hi)
    by_user: dict[str, list] = {}
    for r in rest:
        by_user.setdefault(r.user_name, []).append(as_usage(r))
    since, now = aware(since), aware(now)
    out = {user: g / 3600 for user, g in sums.items()}
    for user, usages in by_user.items():
        out[user] = out.get(user, 0.0) + gpu_hours_since(usages, since, now)
    return out


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
        """Start ``entry_id`` now if the discipline gives it devices, reserving them by ``plan``
        in the same transaction. QuotaRefused propagates (the entry is removed: the request no
        longer fits the user's quota, waiting will not change that)."""

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
                weights = self._weights(c, now)
                me = snapshot.request_of(mine, weights, _runtime(plan))
                outcome = self._decide(c, me, self._waiting(rows, now, entry_id), plan, weights, now)
                if outcome.state == "started":
                    try:
                        outcome.allocation = self.allocator.allocate_in(c, owner, plan, outcome.chosen)
                    finally:
                        c.execute(sa.delete(_Q).where(_Q.c.id == entry_id))
                return outcome

        return self.db.retrying(run)

    def admit(self, owner: Owner, plan: ReservationPlan) -> Allocation:
        """A fresh spawn: placed at once when nobody waits; otherwise only where the discipline
        lets it start (raises :class:`QueueAhead` when it must wait; NoCapacity, QuotaRefused as
        the allocator does)."""

        def run():
            with self.db.write_conn(serial=True) as c:
                now = utcnow()
                rows = self._waiting(c.execute(sa.select(_Q).where(_Q.c.state == "waiting")).all(), now)
                if not plan.count or not plan.reserve or not rows:
                    return self.allocator.allocate_in(c, owner, plan)
                refused = self.allocator.refusal_in(c, owner, plan)
                if refused is not None:  # over quota: refused now, not after a wait for its turn
                    raise QuotaRefused(refused)
                weights = self._weights(c, now)
                # a borrowing request goes behind everyone within quota and holds nothing back
                me = discipline.Request("new", owner.user_name, now, plan.count, plan.types,
                                        weights.get(owner.user_name, 0.0), not plan.borrowed, _runtime(plan))
                outcome = self._decide(c, me, rows, plan, weights, now)
                if outcome.state == "started":
                    return self.allocator.allocate_in(c, owner, plan, outcome.chosen)
                if outcome.reason == "never":
                    return self.allocator.allocate_in(c, owner, plan)  # its NoCapacity says why
                gpu_type = plan.types[0]
                raise QueueAhead(gpu_type, plan.count, outcome.free.get(gpu_type, 0),
                                 len(plan.inventory.of_type(gpu_type)), outcome.waiting - 1, outcome.reason)

        return self.db.retrying(run)

    # -- one decision, inside the caller's serialised transaction ----------------------------
    def _waiting(self, rows, now: dt.datetime, keep: int | None = None) -> list:
        """Waiting rows someone still waits on (a stale one lost its spawn to a hub restart)."""
        return [r for r in rows if r.state == "waiting"
                and (r.id == keep or now - r.heartbeat_at < self.policy.stale_after)]

    def _weights(self, c, now: dt.datetime) -> dict[str, float]:
        if self.policy.fair_share_days <= 0:
            return {}
        return recent_gpu_hours(c, now - dt.timedelta(days=self.policy.fair_share_days), now)

    def _decide(self, c, me: discipline.Request, rows, plan: ReservationPlan, weights, now) -> Outcome:
        """The discipline's answer for ``me``; a start carries the (type, devices) it chose."""
        inventory = plan.inventory
        free = inventory.free(set(c.execute(sa.select(_A.c.device_key)).scalars()))
        waiting = [snapshot.request_of(r, weights) for r in rows if r.id != me.id]
        d = discipline.decide(me, waiting, free, snapshot.running(c, inventory), now,
                              snapshot.rules(self.policy), snapshot.typical(c))
        if d.start:
            return Outcome("started", chosen=(d.gpu_type, d.devices))
        free_by_type: dict[str, int] = {}
        for dev in free:
            free_by_type[dev.gpu_type] = free_by_type.get(dev.gpu_type, 0) + 1
        ahead = [Waiting(r.id, r.user, r.created_at, r.count, r.types, r.usage) for r in d.ahead]
        return Outcome("waiting", None, d.position, ahead, d.waiting, free_by_type, d.estimate, d.reason)

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
        """The queue in the discipline's order (for pages, the API and metrics)."""

        def run():
            with self.db.read() as s:
                now = utcnow()
                rows = list(s.scalars(sa.select(QueueEntry).where(QueueEntry.state == "waiting")))
                weights = self._weights(s.connection(), now)
                ordered = discipline.order([snapshot.request_of(r, weights) for r in rows],
                                           snapshot.rules(self.policy), now)
                return [Waiting(r.id, r.user, r.created_at, r.count, r.types, r.usage) for r in ordered]

        return self.db.retrying(run)


def _runtime(plan: ReservationPlan) -> dt.timedelta | None:
    seconds = plan.terms.runtime_limit_s if plan.terms is not None else None
    return dt.timedelta(seconds=seconds) if seconds else None
