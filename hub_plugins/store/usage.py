"""Usage records, events and the audit ledger: database adapter for accounting.

Records are opened and closed inside the allocator's own transactions (see ``allocator.py``),
so a reservation never exists without its record and a release always closes it. This module
reads them, keeps them fresh and closes what crashes leave open.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from fractions import Fraction

import sqlalchemy as sa

from ..accounting.budgets import Usage
from .db import Database
from .models import Event, LedgerEntry, UsageRecord, utcnow

UTC = dt.timezone.utc
_U = UsageRecord.__table__
# what a report line reads of a record (services/billing/report.py line, as_usage): an export
# fetches these alone, not the timestamps and keys it never shows
_REPORTED = [_U.c[name] for name in (
    "id", "user_name", "server_name", "profile", "project", "gpu_type", "gpu_count", "equivalents", "devices",
    "started_at", "ready_at", "stopped_at", "stop_reason", "stopped_by", "util_sum", "util_samples", "energy_wh",
    "queued_seconds", "rate_per_hour", "minimum_seconds", "charged_until", "charged_gpu_seconds", "charged_cost",
    "borrowed")]  # borrowed: the line's 'preemptible'
_FAR = dt.datetime(9999, 1, 1)  # an upper bound for ranges that have none (see settled_sums)
STOP_REASONS = ("user", "admin", "other_user", "service", "culled", "crashed", "quota", "budget", "runtime", "failed",
                "cancelled", "oom",  # oom: the kernel stopped it for using more than its memory limit (local backend)
                "reclaimed")  # a borrowed server taken back for a request within quota (queue/reclaim_store.py)


def aware(t: dt.datetime | None) -> dt.datetime | None:
    """Database times are naive UTC; budgets and APIs use aware ones."""
    return None if t is None else t.replace(tzinfo=UTC)


def naive(t: dt.datetime) -> dt.datetime:
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


def as_usage(r: UsageRecord | sa.Row) -> Usage:
    return Usage(
        start=aware(r.started_at), end=aware(r.stopped_at), ready=r.ready_at is not None,
        equivalents=float(Fraction(r.equivalents)), rate_per_hour=r.rate_per_hour,
        minimum_seconds=r.minimum_seconds,
    )


def settled(r) -> dict:
    """A closed record's whole charge, by the charging rule (``Usage.charge``): what
    :meth:`UsageStore.settle` stores, so that sums over history need no Python per record."""
    u = as_usage(r)
    ch = u.charge(u.end)
    return {"charged_until": naive(u.charged_end(u.end)), "charged_gpu_seconds": ch.gpu_seconds,
            "charged_cost": ch.cost}


def wholly_inside(r, lo: dt.datetime, hi: dt.datetime,
                  naive_range: tuple[dt.datetime, dt.datetime] | None = None) -> bool:
    """Whether a settled record's whole charge falls in [lo, hi) (then its stored charge is
    what the overlap rule would give)."""
    until = getattr(r, "charged_until", None)
    if until is None:
        return False
    nlo, nhi = naive_range or (naive(lo), naive(hi))
    return r.started_at >= nlo and until <= nhi


class UsageStore:
    def __init__(self, db: Database):
        self.db = db

    # -- lifecycle (the hub) ---------------------------------------------------------------
    def mark_ready(self, spawn_id: str, at: dt.datetime | None = None) -> None:
        at = naive(at or utcnow())
        self.db.retrying(lambda: self._update(spawn_id, ready_at=at, last_seen_at=at))

    def mark_ready_if_not(self, spawn_id: str, at: dt.datetime | None = None) -> None:
        """An adopted server: it runs, so it is charged from its start even if the hub that
        started it died before noting it ready."""
        at = naive(at or utcnow())

        def run():
            with self.db.write_conn() as c:
                # a record closed as 'failed' meanwhile is charged now: its settled charge is redone
                c.execute(sa.update(_U).where(_U.c.spawn_id == spawn_id, _U.c.ready_at.is_(None))
                          .values(ready_at=at, charged_until=None, charged_gpu_seconds=None, charged_cost=None))

        self.db.retrying(run)

    def heartbeat(self, spawn_ids: Iterable[str], at: dt.datetime | None = None) -> None:
        """Note that these servers are alive now (one statement for many)."""
        ids = list(spawn_ids)
        if not ids:
            return
        at = naive(at or utcnow())

        def run():
            with self.db.write_conn() as c:
                c.execute(sa.update(_U).where(_U.c.spawn_id.in_(ids), _U.c.stopped_at.is_(None))
                          .values(last_seen_at=at))

        self.db.retrying(run)

    def _update(self, spawn_id: str, **values) -> None:
        with self.db.write_conn() as c:
            c.execute(sa.update(_U).where(_U.c.spawn_id == spawn_id).values(**values))

    def set_pending_reason(self, user_name: str, server_name: str, reason: str) -> int:
        """Services call this just before they stop a server, so its record says why."""

        def run():
            with self.db.write_conn() as c:
                return c.execute(
                    sa.update(_U).where(_U.c.user_name == user_name, _U.c.server_name == server_name,
                                        _U.c.stopped_at.is_(None)).values(pending_reason=reason[:255])
                ).rowcount

        return self.db.retrying(run)

    def close_orphans(self, live: set[tuple[int, str]], before: dt.datetime) -> list[UsageRecord]:
        """Close open records of servers that are gone (a hub that crashed mid-stop) at the last
        moment they were seen alive: never later, so nothing is charged twice or made up."""

        def run():
            with self.db.write() as s:
                rows = s.scalars(sa.select(UsageRecord).where(
                    UsageRecord.stopped_at.is_(None), UsageRecord.started_at < naive(before))).all()
                gone = [r for r in rows if (r.user_id, r.server_name) not in live]
                for r in gone:
                    r.stopped_at = r.last_seen_at
                    r.stop_reason = "crashed" if r.ready_at else "failed"
                return gone

        return self.db.retrying(run)

    def close(self, spawn_id: str, alive_at: dt.datetime | None = None) -> bool:
        """Close one open record whose server is gone, at the last moment it was known alive
        (``alive_at`` from the backend, or its last heartbeat, whichever is later; never in the
        future): 'crashed' if it had started, 'failed' (not charged) if not. Only an open record
        is touched, so a record is closed exactly once."""

        def run():
            with self.db.write_conn() as c:
                rec = c.execute(sa.select(_U.c.id, _U.c.last_seen_at, _U.c.ready_at).where(
                    _U.c.spawn_id == spawn_id, _U.c.stopped_at.is_(None))).first()
                if rec is None:
                    return False
                alive = [t for t in (rec.last_seen_at, naive(alive_at) if alive_at else None) if t is not None]
                end = min(utcnow(), max(alive)) if alive else utcnow()
                return bool(c.execute(sa.update(_U).where(_U.c.id == rec.id, _U.c.stopped_at.is_(None)).values(
                    stopped_at=end, stop_reason="crashed" if rec.ready_at else "failed")).rowcount)

        return self.db.retrying(run)

    def settle(self, limit: int = 5000) -> int:
        """Store the charge of up to ``limit`` closed records that do not have it yet; how many.
        Closed records do not change (every close and heartbeat touches open ones only), so a
        settled charge stays right; readers apply the rule themselves to the rest."""

        def run():
            with self.db.write_conn() as c:
                rows = c.execute(sa.select(_U.c.id, _U.c.started_at, _U.c.stopped_at, _U.c.ready_at, _U.c.equivalents,
                                           _U.c.rate_per_hour, _U.c.minimum_seconds)
                                 .where(_U.c.charged_until.is_(None), _U.c.stopped_at.is_not(None))
                                 .limit(limit)).all()
                if rows:
                    params = []
                    for r in rows:
                        v = settled(r)
                        params.append({"rid": r.id, "until": v["charged_until"], "gpu_s": v["charged_gpu_seconds"],
                                       "cost": v["charged_cost"]})
                    c.execute(sa.update(_U).where(_U.c.id == sa.bindparam("rid"), _U.c.stopped_at.is_not(None))
                              .values(charged_until=sa.bindparam("until"), charged_gpu_seconds=sa.bindparam("gpu_s"),
                                      charged_cost=sa.bindparam("cost")), params)
                return len(rows)

        return self.db.retrying(run)

    def open_records(self) -> list[sa.Row]:
        """(spawn_id, user_id, user_name, server_name, started_at) of every open record."""

        def run():
            with self.db.read() as s:
                return list(s.execute(sa.select(_U.c.spawn_id, _U.c.user_id, _U.c.user_name, _U.c.server_name,
                                                _U.c.started_at).where(_U.c.stopped_at.is_(None))))

        return self.db.retrying(run)

    # -- reads (the hub's budget check, the billing service) -------------------------------
    def records(self, user_name: str | None = None, since: dt.datetime | None = None,
                until: dt.datetime | None = None, project: str | None = None,
                open_only: bool = False) -> list[UsageRecord]:
        """Records that overlap [since, until) (open ones overlap everything after their start)."""

        def run():
            with self.db.read() as s:
                q = sa.select(UsageRecord).order_by(UsageRecord.started_at)
                if user_name is not None:
                    q = q.where(UsageRecord.user_name == user_name)
                if project is not None:
                    q = q.where(UsageRecord.project == project)
                if since is not None:
                    q = q.where(sa.or_(UsageRecord.stopped_at.is_(None), UsageRecord.stopped_at >= naive(since)))
                if until is not None:
                    q = q.where(UsageRecord.started_at < naive(until))
                if open_only:
                    q = q.where(UsageRecord.stopped_at.is_(None))
                return list(s.scalars(q))

        return self.db.retrying(run)

    def page(self, user_name: str | None, since: dt.datetime, until: dt.datetime,
             after: tuple[dt.datetime, int] | None, limit: int) -> list[sa.Row]:
        """Like :meth:`records` (by start, then id), ``limit`` at a time after the (started_at,
        id) ``after``: a long export reads in short transactions and never holds a year at once."""

        def run():
            with self.db.read() as s:
                q = (sa.select(*_REPORTED).where(sa.or_(_U.c.stopped_at.is_(None), _U.c.stopped_at >= naive(since)),
                                         _U.c.started_at < naive(until))
                     .order_by(_U.c.started_at, _U.c.id).limit(limit))
                if user_name is not None:
                    q = q.where(_U.c.user_name == user_name)
                if after is not None:
                    q = q.where(sa.tuple_(_U.c.started_at, _U.c.id) > sa.tuple_(*after))
                return list(s.execute(q))

        return self.db.retrying(run)

    def charged_by_user(self) -> tuple[dict[str, tuple[float, float]], list[sa.Row]]:
        """Everyone's whole charge so far: settled records summed by the database, per user
        (GPU-seconds, cost), and the records it cannot sum (running, or not settled yet)."""

        def run():
            with self.db.read() as s:
                sums = s.execute(sa.select(_U.c.user_name, sa.func.sum(_U.c.charged_gpu_seconds),
                                           sa.func.sum(_U.c.charged_cost))
                                 .where(_U.c.charged_until.is_not(None)).group_by(_U.c.user_name)).all()
                rest = s.execute(sa.select(_U).where(_U.c.charged_until.is_(None))).all()
                return {u: (g or 0.0, c or 0.0) for u, g, c in sums}, list(rest)

        return self.db.retrying(run)

    def settled_sums(self, since: dt.datetime, until: dt.datetime) -> tuple[list[sa.Row], list[sa.Row]]:
        """Sums, by the database, of the settled records wholly inside [since, until) that were
        charged, per (user, GPU type, holds GPUs, power measured); and every other record whose
        charge may fall in the range (which the caller works out record by record)."""
        lo, hi = naive(since), naive(until)
        # each query bounds charged_until on both sides, so that the planner walks
        # ix_gpulab_usage_charged (the range's records) rather than every record started before
        # ``until`` (SQLite takes a two-sided range as the narrower)
        inside = sa.and_(_U.c.charged_until.between(lo, hi), _U.c.started_at >= lo)
        crossing = sa.and_(_U.c.charged_until.between(lo, _FAR), _U.c.charged_until > lo, _U.c.started_at < hi,
                           sa.or_(_U.c.started_at < lo, _U.c.charged_until > hi))
        unsettled = sa.and_(_U.c.charged_until.is_(None), _U.c.started_at < hi,
                            sa.or_(_U.c.stopped_at.is_(None), _U.c.stopped_at >= lo))
        has_gpu = (_U.c.gpu_count > 0).label("has_gpu")
        # as report.line: measured energy counts in proportion to GPU-seconds (none: none)
        measured = sa.and_(_U.c.energy_wh > 0, _U.c.charged_gpu_seconds > 0).label("measured")
        with_util = _U.c.util_samples > 0
        eff = sa.case((with_util, _U.c.util_sum / _U.c.util_samples * _U.c.charged_gpu_seconds), else_=0.0)

        def run():
            with self.db.read() as s:
                sums = s.execute(
                    sa.select(_U.c.user_name, _U.c.gpu_type, has_gpu, measured, sa.func.count().label("n"),
                              sa.func.sum(_U.c.charged_gpu_seconds).label("gpu_seconds"),
                              sa.func.sum(_U.c.charged_cost).label("cost"),
                              sa.func.sum(_U.c.energy_wh).label("energy_wh"),
                              sa.func.sum(eff).label("eff_gpu_seconds"),
                              sa.func.sum(sa.case((with_util, _U.c.charged_gpu_seconds), else_=0.0)).label("eff_weight"))
                    .where(inside, sa.or_(_U.c.charged_gpu_seconds > 0, _U.c.charged_cost > 0))
                    .group_by(_U.c.user_name, _U.c.gpu_type, has_gpu, measured)).all()
                rest = s.execute(sa.select(_U).where(crossing)).all() + s.execute(sa.select(_U).where(unsettled)).all()
                return list(sums), rest

        return self.db.retrying(run)

    def has_history(self, user_name: str, server_name: str) -> bool:
        """Whether this server ever held a reservation (has any usage record)."""

        def run():
            with self.db.read() as s:
                return s.scalar(sa.select(UsageRecord.id).where(
                    UsageRecord.user_name == user_name, UsageRecord.server_name == server_name).limit(1)) is not None

        return self.db.retrying(run)

    def usages(self, user_name: str | None = None, since: dt.datetime | None = None,
               project: str | None = None, personal_only: bool = False) -> list[Usage]:
        rows = self.records(user_name, since, project=project)
        if personal_only:
            rows = [r for r in rows if not r.project]
        return [as_usage(r) for r in rows]

    # -- events and ledger -----------------------------------------------------------------
    def event(self, kind: str, reason: str = "", user_name: str = "", server_name: str = "",
              detail: str = "", value: float = 0.0) -> None:
        def run():
            with self.db.write() as s:
                s.add(Event(kind=kind, reason=reason[:64], user_name=user_name, server_name=server_name,
                            detail=detail[:2048], value=value, at=utcnow()))

        self.db.retrying(run)

    def events(self, kind: str | None = None, since: dt.datetime | None = None) -> list[Event]:
        def run():
            with self.db.read() as s:
                q = sa.select(Event).order_by(Event.at)
                if kind:
                    q = q.where(Event.kind == kind)
                if since:
                    q = q.where(Event.at >= naive(since))
                return list(s.scalars(q))

        return self.db.retrying(run)

    def event_counts(self, kind: str) -> dict[str, int]:
        """How many events of ``kind`` there are, per reason (counted by the database)."""

        def run():
            with self.db.read() as s:
                rows = s.execute(sa.select(Event.reason, sa.func.count()).where(Event.kind == kind)
                                 .group_by(Event.reason)).all()
                return {reason: n for reason, n in rows}

        return self.db.retrying(run)

    def event_values(self, kind: str) -> list[float]:
        def run():
            with self.db.read() as s:
                return list(s.scalars(sa.select(Event.value).where(Event.kind == kind)))

        return self.db.retrying(run)

    def count_stopped(self, reason: str) -> int:
        def run():
            with self.db.read() as s:
                return s.scalar(sa.select(sa.func.count()).select_from(_U).where(_U.c.stop_reason == reason)) or 0

        return self.db.retrying(run)

    def ledger(self, actor: str, subject: str, action: str, before=None, after=None,
               reason: str = "", amount: float = 0.0) -> None:
        def run():
            with self.db.write() as s:
                s.add(LedgerEntry(actor=actor, subject=subject, action=action,
                                  before="" if before is None else json.dumps(before, sort_keys=True, default=str),
                                  after="" if after is None else json.dumps(after, sort_keys=True, default=str),
                                  reason=reason[:1024], amount=amount, at=utcnow()))

        self.db.retrying(run)

    def ledger_entries(self, subject: str | None = None) -> list[LedgerEntry]:
        def run():
            with self.db.read() as s:
                q = sa.select(LedgerEntry).order_by(LedgerEntry.at)
                if subject:
                    q = q.where(LedgerEntry.subject == subject)
                return list(s.scalars(q))

        return self.db.retrying(run)
