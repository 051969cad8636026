"""Settled charges: a closed usage record's whole charge, computed once by the charging rule and
stored, with its sums per user and day (database adapter; the rule is ``accounting/budgets.py``).

A closed record does not change: closes, heartbeats, readiness and samples touch open records
(or, for samples, records not settled yet) only. So :func:`settle` computes each closed
record's charge once (``charged_until``, ``charged_gpu_seconds``, ``charged_cost`` on the record,
with its report line's text, ``report_head``: ``accounting/lines.py``) and, in the same
serialised transaction, adds it to ``gpulab_usage_daily`` (per start day, user,
GPU type) and ``gpulab_usage_totals`` (per user). Readers sum those for what is settled and work
out the rest (running servers, records closed since the last settle, records across a range's
ends) record by record, by the same rule; ``tests/services/test_report_settled.py`` checks that
both give the same on SQLite and PostgreSQL.

The billing service settles at start (a whole history after an upgrade) and before each admin
page, scrape and export; the culler each round.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from ..accounting.lines import settled_head
from .db import Database
from .models import UsageDaily, UsageRecord, UsageTotal
from .usage import REPORTED, Reported, as_usage, naive

_U = UsageRecord.__table__
_D = UsageDaily.__table__
_T = UsageTotal.__table__
_FAR = dt.datetime(9999, 1, 1)  # an upper bound for ranges that have none (see _ranges)
_SUMS = ("n", "gpu_seconds", "cost", "energy_wh", "eff_gpu_seconds", "eff_weight")


def settled(r) -> dict:
    """A closed record's whole charge, by the charging rule (``Usage.charge``)."""
    u = as_usage(r)
    ch = u.charge(u.end)
    return {"charged_until": naive(u.charged_end(u.end)), "charged_gpu_seconds": ch.gpu_seconds,
            "charged_cost": ch.cost}


def daily_key(r, v: dict) -> tuple:
    """The roll-up row a settled record adds to (as ``accounting/lines.py`` line counts energy: measured
    power counts in proportion to GPU-seconds, so none without them)."""
    return (r.started_at.date(), r.user_name, r.gpu_type, r.gpu_count > 0,
            r.energy_wh > 0 and v["charged_gpu_seconds"] > 0)


def daily_sums(r, v: dict) -> dict:
    gs = v["charged_gpu_seconds"]
    has_eff = r.util_samples > 0
    return {"n": 1, "gpu_seconds": gs, "cost": v["charged_cost"], "energy_wh": r.energy_wh,
            "eff_gpu_seconds": r.util_sum / r.util_samples * gs if has_eff else 0.0,
            "eff_weight": gs if has_eff else 0.0}


def settle(db: Database, limit: int = 5000) -> int:
    """Settle up to ``limit`` closed records that are not yet; how many. Serialised against
    every other settle (billing service and culler), so nothing is added to the sums twice."""

    def run():
        with db.write_conn(serial=True) as c:
            rows = c.execute(sa.select(*REPORTED).where(_U.c.charged_until.is_(None), _U.c.stopped_at.is_not(None))
                             .limit(limit)).all()
            if not rows:
                return 0
            params, daily, totals = [], {}, {}
            for r in map(Reported._make, rows):
                v = settled(r)
                params.append({"rid": r.id, "until": v["charged_until"], "gpu_s": v["charged_gpu_seconds"],
                               "cost": v["charged_cost"], "head": settled_head(r._replace(**v))})
                t = totals.setdefault(r.user_name, [0.0, 0.0])
                t[0] += v["charged_gpu_seconds"]
                t[1] += v["charged_cost"]
                if v["charged_gpu_seconds"] > 0 or v["charged_cost"] > 0:  # what a report shows
                    acc = daily.setdefault(daily_key(r, v), dict.fromkeys(_SUMS, 0))
                    for k, x in daily_sums(r, v).items():
                        acc[k] += x
            c.execute(sa.update(_U).where(_U.c.id == sa.bindparam("rid"), _U.c.charged_until.is_(None))
                      .values(charged_until=sa.bindparam("until"), charged_gpu_seconds=sa.bindparam("gpu_s"),
                              charged_cost=sa.bindparam("cost"), report_head=sa.bindparam("head")), params)
            _add_daily(c, daily)
            _add_totals(c, totals)
            return len(rows)

    return db.retrying(run)


def _add_daily(c, daily: dict) -> None:
    if not daily:
        return
    key_cols = (_D.c.day, _D.c.user_name, _D.c.gpu_type, _D.c.has_gpu, _D.c.measured)
    days = {k[0] for k in daily}
    have = {tuple(r[:5]): r for r in c.execute(sa.select(*key_cols, *(_D.c[k] for k in _SUMS))
                                                .where(_D.c.day.in_(days)))}
    new = []
    for key, acc in daily.items():
        old = have.get(key)
        if old is None:
            new.append(dict(zip(("day", "user_name", "gpu_type", "has_gpu", "measured"), key)) | acc)
        else:
            c.execute(sa.update(_D).where(*(col == v for col, v in zip(key_cols, key)))
                      .values(**{k: getattr(old, k) + acc[k] for k in _SUMS}))
    if new:
        c.execute(sa.insert(_D), new)


def _add_totals(c, totals: dict) -> None:
    have = {r.user_name: r for r in c.execute(sa.select(_T).where(_T.c.user_name.in_(list(totals))))}
    new = []
    for user, (g, cost) in totals.items():
        if user in have:
            c.execute(sa.update(_T).where(_T.c.user_name == user).values(
                gpu_seconds=have[user].gpu_seconds + g, cost=have[user].cost + cost))
        else:
            new.append({"user_name": user, "gpu_seconds": g, "cost": cost})
    if new:
        c.execute(sa.insert(_T), new)


def _ranges(since: dt.datetime, until: dt.datetime):
    """Three ways a record's charge can meet [since, until): a settled record wholly inside it
    (its stored charge is the answer), a settled one across either end, and one not settled
    (running, or closed since the last settle). Each bounds charged_until on both sides, so that
    the planner walks ix_gpulab_usage_charged (the range's records) rather than every record
    started before ``until`` (SQLite takes a two-sided range as the narrower)."""
    lo, hi = naive(since), naive(until)
    inside = sa.and_(_U.c.charged_until.between(lo, hi), _U.c.started_at >= lo)
    crossing = sa.and_(_U.c.charged_until.between(lo, _FAR), _U.c.charged_until > lo, _U.c.started_at < hi,
                       sa.or_(_U.c.started_at < lo, _U.c.charged_until > hi))
    unsettled = sa.and_(_U.c.charged_until.is_(None), _U.c.started_at < hi,
                        sa.or_(_U.c.stopped_at.is_(None), _U.c.stopped_at >= lo))
    return inside, crossing, unsettled


def gpu_seconds_in(conn, since: dt.datetime, until: dt.datetime) -> tuple[dict[str, float], list[sa.Row]]:
    """GPU-seconds per user of the settled records wholly inside [since, until), summed by the
    database, and the records whose charge the caller works out (``as_usage``-ready columns):
    the queue's fair share without reading a week of everyone's records."""
    inside, crossing, unsettled = _ranges(since, until)
    sums = conn.execute(sa.select(_U.c.user_name, sa.func.sum(_U.c.charged_gpu_seconds))
                        .where(inside).group_by(_U.c.user_name)).all()
    cols = (_U.c.user_name, _U.c.started_at, _U.c.stopped_at, _U.c.ready_at, _U.c.equivalents,
            _U.c.rate_per_hour, _U.c.minimum_seconds)
    rest = [r for cond in (crossing, unsettled)
            for r in conn.execute(sa.select(*cols).where(cond, _U.c.ready_at.is_not(None))).all()]
    return {user: g or 0.0 for user, g in sums}, rest


def charged_by_user(db: Database) -> tuple[dict[str, tuple[float, float]], list[sa.Row]]:
    """Everyone's whole charge so far: the settled part per user (GPU-seconds, cost), and the
    records not settled (running, or closed since the last settle)."""

    def run():
        with db.read() as s:
            sums = s.execute(sa.select(_T.c.user_name, _T.c.gpu_seconds, _T.c.cost)).all()
            rest = s.execute(sa.select(_U).where(_U.c.charged_until.is_(None))).all()
            return {u: (g, c) for u, g, c in sums}, list(rest)

    return db.retrying(run)


def settled_sums(db: Database, since: dt.datetime, now: dt.datetime) -> tuple[list, list[sa.Row]]:
    """Everyone's charges from ``since`` to now: sums of settled records (rows with the fields of
    ``gpulab_usage_daily`` but ``day``), and the other records that may be charged in the range.

    Whole days come from the daily sums; the part of ``since``'s own day from the records. Every
    settled record that started in the range ends inside it, as the range runs a day past now and
    a charge ends at most a day (the largest minimum charge) after its server's stop."""
    hi = now + dt.timedelta(days=1)
    lo = naive(since)
    first_day = lo.date() if lo.time() == dt.time(0) else lo.date() + dt.timedelta(days=1)
    first_midnight = dt.datetime.combine(first_day, dt.time(0))
    inside, crossing, unsettled = _ranges(since, hi)
    part_day = sa.and_(inside, _U.c.started_at < first_midnight,
                       sa.or_(_U.c.charged_gpu_seconds > 0, _U.c.charged_cost > 0))
    has_gpu = (_U.c.gpu_count > 0).label("has_gpu")
    measured = sa.and_(_U.c.energy_wh > 0, _U.c.charged_gpu_seconds > 0).label("measured")
    with_util = _U.c.util_samples > 0
    eff = sa.case((with_util, _U.c.util_sum / _U.c.util_samples * _U.c.charged_gpu_seconds), else_=0.0)
    key = (_D.c.user_name, _D.c.gpu_type, _D.c.has_gpu, _D.c.measured)

    def run():
        with db.read() as s:
            days = s.execute(sa.select(*key, *(sa.func.sum(_D.c[k]).label(k) for k in _SUMS))
                             .where(_D.c.day >= first_day).group_by(*key)).all()
            first = s.execute(
                sa.select(_U.c.user_name, _U.c.gpu_type, has_gpu, measured, sa.func.count().label("n"),
                          sa.func.sum(_U.c.charged_gpu_seconds).label("gpu_seconds"),
                          sa.func.sum(_U.c.charged_cost).label("cost"),
                          sa.func.sum(_U.c.energy_wh).label("energy_wh"),
                          sa.func.sum(eff).label("eff_gpu_seconds"),
                          sa.func.sum(sa.case((with_util, _U.c.charged_gpu_seconds), else_=0.0)).label("eff_weight"))
                .where(part_day).group_by(_U.c.user_name, _U.c.gpu_type, has_gpu, measured)).all()
            rest = s.execute(sa.select(_U).where(crossing)).all() + s.execute(sa.select(_U).where(unsettled)).all()
            return list(days) + list(first), rest

    return db.retrying(run)
