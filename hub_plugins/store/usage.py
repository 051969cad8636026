"""Usage records, events and the audit ledger: database adapter for accounting.

Records are opened and closed inside the allocator's own transactions (see ``allocator.py``),
so a reservation never exists without its record and a release always closes it. This module
reads them, keeps them fresh and closes what crashes leave open.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import namedtuple
from collections.abc import Iterable
from fractions import Fraction

import sqlalchemy as sa

from ..accounting.budgets import Usage
from .db import Database
from .models import Event, LedgerEntry, UsageRecord, utcnow

UTC = dt.timezone.utc
_U = UsageRecord.__table__
# what a report line reads of a record (accounting/lines.py line, as_usage): an export
# fetches these alone, not the timestamps and keys it never shows
REPORTED = [_U.c[name] for name in (
    "id", "user_name", "server_name", "profile", "project", "gpu_type", "gpu_count", "equivalents", "devices",
    "started_at", "ready_at", "stopped_at", "stop_reason", "stopped_by", "util_sum", "util_samples", "energy_wh",
    "queued_seconds", "rate_per_hour", "minimum_seconds", "charged_until", "charged_gpu_seconds", "charged_cost",
    "borrowed")]  # borrowed: the line's 'preemptible'
# a page of an export, as plain tuples: reading a field of one is a C slot, of a SQLAlchemy Row
# a lookup by name (a year's export reads 12 million of them)
Reported = namedtuple("Reported", [c.name for c in REPORTED])
# what an export reads of each record first (accounting/lines.py Export): its stored line text
# where that applies to the range (else null: see page), and the columns of the settings' part
HEADS = [_U.c[name] for name in (
    "id", "started_at", "report_head", "gpu_type", "gpu_count", "energy_wh", "charged_gpu_seconds", "queued_seconds",
    "borrowed")]
Head = namedtuple("Head", [c.name for c in HEADS])
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
                # an open record only: a closed one is final (its charge is settled: settled.py)
                c.execute(sa.update(_U).where(_U.c.spawn_id == spawn_id, _U.c.ready_at.is_(None),
                                              _U.c.stopped_at.is_(None)).values(ready_at=at))

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
             after: tuple[dt.datetime, int] | None, limit: int,
             heads_in: tuple[dt.datetime, dt.datetime] | None = None) -> list[Reported] | list[Head]:
        """Like :meth:`records` (by start, then id), ``limit`` at a time after the (started_at,
        id) ``after``: a long export reads in short transactions and never holds a year at once.
        The keyset order is an index's (``ix_gpulab_usage_started_id``), so each page is a walk
        along it from ``after``, on SQLite and PostgreSQL alike.

        ``heads_in``: a report's range [lo, hi); then each record's :data:`Head`, its
        ``report_head`` null unless the record is settled with its whole charge in the range
        (``accounting/lines.py`` wholly_inside, here in SQL: no times parsed for the test).
        :meth:`reported` reads the others."""
        cols, kind = REPORTED, Reported
        if heads_in is not None:
            lo, hi = naive(heads_in[0]), naive(heads_in[1])
            applies = sa.and_(_U.c.started_at >= lo, _U.c.charged_until <= hi)
            cols = [sa.case((applies, c), else_=sa.null()).label(c.name) if c.name == "report_head" else c
                    for c in HEADS]
            kind = Head

        def run():
            with self.db.read() as s:
                q = (sa.select(*cols).where(sa.or_(_U.c.stopped_at.is_(None), _U.c.stopped_at >= naive(since)),
                                         _U.c.started_at < naive(until))
                     .order_by(_U.c.started_at, _U.c.id).limit(limit))
                if user_name is not None:
                    q = q.where(_U.c.user_name == user_name)
                if after is not None:
                    q = q.where(sa.tuple_(_U.c.started_at, _U.c.id) > sa.tuple_(*after))
                return list(map(kind._make, s.execute(q).all()))

        return self.db.retrying(run)

    def reported(self, ids: list[int]) -> list[Reported]:
        """The records with these ids (any order), as :meth:`page` reads them."""

        def run():
            with self.db.read() as s:
                return list(map(Reported._make, s.execute(sa.select(*REPORTED).where(_U.c.id.in_(ids))).all()))

        return self.db.retrying(run) if ids else []

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
