"""Reclaim's database side: what the pure choice (:func:`borrow.reclaims`) reads, and the marks
that make a reclaim survive a restart of the culler.

A reclaim has two steps a grace period apart, both taken by the culler's round
(``services/culler/reclaim.py``): the warning, which stores on the server's open usage record when
it stops (``reclaim_at``) and why (``pending_reason`` 'reclaimed: ...', which the release turns
into the stop reason), and the stop once ``reclaim_at`` has passed. Servers with a ``reclaim_at``
are the ones *being* reclaimed: their devices are passed to the choice as ``freeing``, so they are
not chosen twice and count as room for the request they were chosen for.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from ..gpu.devices import Inventory
from ..store.models import DeviceAllocation, QueueEntry, ServerRecord, UsageRecord, utcnow
from . import discipline, snapshot
from .borrow import reclaims
from .store import QueueStore

# the stop reason a reclaimed server's usage record closes with (store/usage.py STOP_REASONS)
REASON = "reclaimed"
_Q, _S, _A, _U = QueueEntry.__table__, ServerRecord.__table__, DeviceAllocation.__table__, UsageRecord.__table__


@dataclass(frozen=True)
class Reclaim:
    """A borrowed server to take back (chosen now, or due to stop)."""

    spawn_id: str
    user_name: str
    server_name: str
    gpus: int
    for_user: str = ""  # whose waiting request it is taken back for (empty when only due)

    @property
    def label(self) -> str:
        return f"{self.user_name}:{self.server_name}" if self.server_name else self.user_name


class ReclaimStore:
    def __init__(self, queue: QueueStore):
        # the queue's own reads (which waiting rows are live, fair-share weights), so the plan
        # here is the one its decisions make
        self.queue, self.db = queue, queue.db

    def choose(self, inventory: Inventory, now: dt.datetime, after: dt.timedelta) -> tuple[list[Reclaim], bool]:
        """(the borrowed servers to take back now, whether any request within quota still waits).
        ``now``: naive UTC, as the database stores times."""

        def run():
            with self.db.read() as s:
                c = s.connection()
                rows = self.queue._waiting(c.execute(sa.select(_Q).where(_Q.c.state == "waiting")).all(), now)
                if not rows:
                    return [], False
                weights = self.queue._weights(c, now)
                requests = [snapshot.request_of(r, weights) for r in rows]
                running = snapshot.running(c, inventory)
                free = inventory.free(set(c.execute(sa.select(_A.c.device_key)).scalars()))
                p = discipline.plan(requests, free, running, now, snapshot.rules(self.queue.policy),
                                    snapshot.typical(c))
                started = {st.request.id for st in p.starts}
                wanted = any(r.within_quota and r.id not in started for r in p.order)
                going = set(c.execute(sa.select(_U.c.spawn_id).where(
                    _U.c.stopped_at.is_(None), _U.c.reclaim_at.is_not(None))).scalars())
                names = {r.id: r for r in c.execute(sa.select(_S.c.id, _S.c.spawn_id, _S.c.user_name,
                                                              _S.c.server_name, _S.c.gpu_count))}
                freeing = [d for srv in running if names[srv.id].spawn_id in going for d in srv.devices]
                out = []
                for request, victims in reclaims(p, running, freeing, now, after):
                    for v in victims:
                        n = names[v.id]
                        out.append(Reclaim(n.spawn_id, n.user_name, n.server_name, n.gpu_count, request.user))
                return out, wanted

        return self.db.retrying(run)

    def warn(self, r: Reclaim, stop_at: dt.datetime, reason: str) -> bool:
        """Mark ``r`` as being reclaimed, stopping at ``stop_at``; False if it was already marked
        or has stopped meanwhile (then nobody is warned twice)."""

        def run():
            with self.db.write_conn() as c:
                return c.execute(sa.update(_U).where(
                    _U.c.spawn_id == r.spawn_id, _U.c.stopped_at.is_(None), _U.c.reclaim_at.is_(None),
                    _U.c.borrowed.is_(True),  # never a server within quota, whatever was chosen
                ).values(reclaim_at=stop_at, pending_reason=reason[:255])).rowcount == 1

        return self.db.retrying(run)

    def due(self, now: dt.datetime) -> list[Reclaim]:
        """Servers being reclaimed whose grace has passed."""

        def run():
            with self.db.read() as s:
                return [Reclaim(r.spawn_id, r.user_name, r.server_name, r.gpu_count) for r in s.execute(
                    sa.select(_U.c.spawn_id, _U.c.user_name, _U.c.server_name, _U.c.gpu_count).where(
                        _U.c.stopped_at.is_(None), _U.c.reclaim_at.is_not(None), _U.c.reclaim_at <= now))]

        return self.db.retrying(run)

    def call_off(self, now: dt.datetime | None = None) -> int:
        """Nobody within quota waits any more (the request started elsewhere, or was cancelled):
        the reclaims not yet due are called off, so no one's work stops for nothing."""
        now = now or utcnow()

        def run():
            with self.db.write_conn() as c:
                return c.execute(sa.update(_U).where(
                    _U.c.stopped_at.is_(None), _U.c.reclaim_at.is_not(None), _U.c.reclaim_at > now,
                    _U.c.pending_reason.like(f"{REASON}:%"),  # another service's stop goes ahead
                ).values(reclaim_at=None, pending_reason="")).rowcount

        return self.db.retrying(run)
