"""Settled charges (a closed record's charge stored once, summed by the database) give exactly
what the charging rule gives record by record: per line, in the admin page's sums and in the
metrics' per-user totals, on SQLite and PostgreSQL, for random records and ranges (a record
inside, across either end, running, failed, with measured power or without)."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from hub_plugins.store.db import Database
from hub_plugins.store.models import UsageRecord
from hub_plugins.store import settled as settling
from hub_plugins.accounting.lines import Export, settled_head, wholly_inside
from hub_plugins.store.settled import settled
from hub_plugins.store.usage import UsageStore, as_usage
from services.billing import report

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 30, 12, tzinfo=UTC)
POWER = {"A100-80GB": 400, "*": 300}
GRID = 350


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/u.sqlite"
    else:
        url = request.getfixturevalue("pg").create_db(f"settle_{random.getrandbits(40):x}")
    db = Database(url)
    db.upgrade()
    yield UsageStore(db)
    db.dispose()


def random_record(rng: random.Random, i: int) -> dict:
    start = (NOW - dt.timedelta(days=rng.uniform(0, 20))).replace(tzinfo=None, microsecond=rng.randrange(10**6))
    running = rng.random() < 0.1
    ready = rng.random() > 0.1
    gpus = rng.choice((0, 1, 2, 4))
    stop = None if running else start + dt.timedelta(seconds=rng.choice((5, 59.5, 61, rng.uniform(60, 3 * 86400))))
    stop = stop and min(stop, NOW.replace(tzinfo=None))  # nothing stops in the future
    return dict(
        spawn_id=f"s{i}", user_id=0, user_name=rng.choice(("ann", "bob", "cat")), server_name="",
        profile="p", project="", gpu_type=rng.choice(("A100-80GB", "H200")) if gpus else "", gpu_count=gpus,
        equivalents=rng.choice(("1", "1/2", "2")) if gpus else "0", devices="", device_keys="", host="",
        rate_per_hour=rng.choice((0.0, 1.5, 2.0)), minimum_seconds=rng.choice((0, 60, 300)), runtime_limit_s=None,
        queued_seconds=0.0, started_at=start, ready_at=start if ready else None, last_seen_at=stop or start,
        stopped_at=stop, stop_reason="user" if ready else "failed", pending_reason="", stopped_by="",
        util_sum=rng.uniform(0, 1000), util_samples=rng.choice((0, 10)),
        energy_wh=rng.choice((0.0, rng.uniform(1, 500))), idle_since=None, warned="")


def fill(store: UsageStore, n: int, seed: int, first: int = 0) -> None:
    rng = random.Random(seed)
    with store.db.write() as s:
        s.add_all(UsageRecord(**random_record(rng, i)) for i in range(first, first + n))


def all_rows(store: UsageStore):
    return store.records()


def fill_and_settle_some(store: UsageStore, n: int, seed: int) -> None:
    """Two thirds of ``n`` records settled, the rest closed (or started) since the last settle."""
    fill(store, 2 * n // 3, seed)
    settling.settle(store.db, limit=10**6)
    fill(store, n - 2 * n // 3, seed + 1000, first=n)


def test_a_settled_line_is_the_rule_s_line():
    rng = random.Random(7)
    for i in range(2000):
        fields = random_record(rng, i)
        if fields["stopped_at"] is None:
            continue
        r = UsageRecord(**fields)
        s = UsageRecord(**fields, **settled(r))
        lo = NOW - dt.timedelta(days=rng.uniform(0, 25))
        hi = lo + dt.timedelta(days=rng.uniform(0.01, 30))
        _same(report.line(s, lo, hi, NOW, POWER, GRID), report.line(r, lo, hi, NOW, POWER, GRID))


def _same(a: report.Line, b: report.Line) -> None:
    for k, v in vars(a).items():
        w = getattr(b, k)
        assert (v == pytest.approx(w, rel=1e-9, abs=1e-6)) if isinstance(v, float) else v == w, (k, v, w)


def test_settle_stores_the_rule_once_and_only_for_closed_records(store):
    fill(store, 300, seed=1)
    assert settling.settle(store.db, limit=100) == 100
    assert settling.settle(store.db) == sum(1 for r in all_rows(store) if r.stopped_at is not None) - 100
    assert settling.settle(store.db) == 0  # nothing left: a scrape after the first settles nothing
    for r in all_rows(store):
        if r.stopped_at is None:
            assert r.charged_until is None  # a running server's charge is still growing
        else:
            want = settled(r)
            assert r.charged_until == want["charged_until"]
            assert r.charged_gpu_seconds == pytest.approx(want["charged_gpu_seconds"])
            assert r.charged_cost == pytest.approx(want["charged_cost"])
            assert as_usage(r).charge(NOW).gpu_seconds == pytest.approx(r.charged_gpu_seconds)


@pytest.mark.parametrize("days", [1, 7, 30])
def test_the_database_s_sums_are_the_lines_sums(store, days):
    fill_and_settle_some(store, 400, seed=days)  # some settled, some not: both paths in one sum
    since, hi = NOW - dt.timedelta(days=days, hours=5.5), NOW + dt.timedelta(days=1)  # not at midnight
    sums, rest = settling.settled_sums(store.db, since, NOW)
    assert sums and rest
    parts = [report.part_of_sum(r, POWER, GRID) for r in sums]
    parts += [report.part_of(ln) for ln in report.charged_lines(rest, since, hi, NOW, POWER, GRID)]
    got = report.summary(parts, lambda u: ["g-" + u])
    lines = report.charged_lines(all_rows(store), since, hi, NOW, POWER, GRID)
    want_totals = report.totals(lines)
    for k, v in want_totals.items():
        # lines round their GPU-hours to 6 places (3.6 ms); the sums are at least as exact
        assert got["totals"][k] == pytest.approx(v, rel=1e-6, abs=0.11 if k == "efficiency_pct" else 0.011), k
    want_users = report.by_key([vars(ln) for ln in lines], lambda ln: [ln["user"]])
    assert [(u["name"], u["servers"]) for u in got["by_user"]] == [(u["name"], u["servers"]) for u in want_users]
    for a, b in zip(got["by_user"], want_users):
        assert a["gpu_hours"] == pytest.approx(b["gpu_hours"], abs=1e-3) and a["cost"] == pytest.approx(b["cost"], abs=0.011)
        assert a["co2_kg"] == pytest.approx(b["co2_kg"], abs=1e-3)
    assert [g["name"] for g in got["by_group"]] == ["g-" + u["name"] for u in want_users]
    # and the settled records the sums used were wholly inside the range, as the rule requires
    assert all(not wholly_inside(r, since, hi) for r in rest)


def test_per_user_totals_are_the_rule_s(store):
    fill_and_settle_some(store, 300, seed=5)
    sums, rest = settling.charged_by_user(store.db)
    got: dict[str, list[float]] = {u: [g, c] for u, (g, c) in sums.items()}
    for r in rest:
        ch = as_usage(r).charge(NOW)
        got.setdefault(r.user_name, [0.0, 0.0])
        got[r.user_name][0] += ch.gpu_seconds
        got[r.user_name][1] += ch.cost
    want: dict[str, list[float]] = {}
    for r in all_rows(store):
        ch = as_usage(r).charge(NOW)
        want.setdefault(r.user_name, [0.0, 0.0])
        want[r.user_name][0] += ch.gpu_seconds
        want[r.user_name][1] += ch.cost
    assert got.keys() == want.keys()
    for u in want:
        assert got[u] == pytest.approx(want[u])


def test_a_closed_record_is_final(store):
    """What settling relies on: a start recorded as failed stays failed (not charged) even if a
    restarted hub then marks that spawn ready, and samples no longer add to a settled record."""
    from hub_plugins.store.samples import Measured, SampleStore

    start = (NOW - dt.timedelta(hours=2)).replace(tzinfo=None)
    with store.db.write() as s:
        s.add(UsageRecord(**{**random_record(random.Random(1), 0), "spawn_id": "late", "ready_at": None,
                             "started_at": start, "stopped_at": start + dt.timedelta(hours=1), "energy_wh": 0.0,
                             "equivalents": "1", "gpu_count": 1, "rate_per_hour": 2.0, "minimum_seconds": 60}))
    settling.settle(store.db)
    store.mark_ready_if_not("late", NOW)
    rec = store.records()[0]
    assert rec.ready_at is None and rec.charged_gpu_seconds == 0  # a failed start is not charged
    SampleStore(store.db).record({}, [Measured(rec.id, 90.0, None, 5.0)], NOW)
    assert store.records()[0].energy_wh == 0.0


def test_settling_at_once_from_many_threads_adds_each_record_once(store):
    """The billing service and the culler both settle: their sums must not count a record twice."""
    from concurrent.futures import ThreadPoolExecutor

    fill(store, 400, seed=3)
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: [settling.settle(store.db, limit=37) for _ in range(20)], range(6)))
    sums, rest = settling.charged_by_user(store.db)
    assert all(r.stopped_at is None for r in rest)
    for user in sums:
        want = sum(settled(r)["charged_gpu_seconds"] for r in all_rows(store)
                   if r.user_name == user and r.stopped_at is not None)
        assert sums[user][0] == pytest.approx(want)


def test_pages_of_an_export_cover_the_range_once_in_order(store):
    fill(store, 333, seed=9)
    since, until = NOW - dt.timedelta(days=10), NOW
    whole = [r.id for r in store.records(None, since, until)]
    paged, after = [], None
    while rows := store.page(None, since, until, after, 50):
        paged += [r.id for r in rows]
        after = (rows[-1].started_at, rows[-1].id)
    assert paged == whole and len(whole) > 100


def test_the_streamed_csv_is_the_report_s_csv(store):
    """The export, read in pages of a few records with some settled and some not, is the CSV of
    the whole report made at once (same lines, same order, same text)."""
    from types import SimpleNamespace

    from services.billing.data import BillingData

    import sqlalchemy as sa

    fill_and_settle_some(store, 250, seed=11)
    with store.db.write() as s:  # settled without the text: worked out as before it was stored
        s.execute(sa.update(UsageRecord).where(UsageRecord.id % 7 == 0).values(report_head=None))
    for currency in ("EUR", 'a "quoted", currency'):
        billing = SimpleNamespace(nominal_power_watts=POWER, grid_intensity_g_per_kwh=GRID,
                                  pricing=SimpleNamespace(currency=currency))
        data = BillingData(None, SimpleNamespace(usage=store, db=store.db, settings=SimpleNamespace(billing=billing)),
                           None)
        for since, until in ((NOW - dt.timedelta(days=30), NOW), (NOW - dt.timedelta(days=9), NOW - dt.timedelta(days=2))):
            streamed = "".join(data.csv_chunks(None, since, until, NOW, size=17))
            whole = report.to_csv(data.usage(None, since, until, NOW))
            assert streamed == whole and whole.count("\n") > 50
            # both ways were taken: stored text (most), and lines worked out
            heads = store.page(None, since, until, None, 10**6, heads_in=(since, min(until, NOW)))
            stored = sum(h.report_head is not None for h in heads)
            assert stored > 50 and len(heads) - stored > 10


def test_a_settled_line_s_stored_text_is_the_line_s_csv():
    """For random closed records and ranges that hold their whole charge, the stored text and the
    settings' part are, byte for byte, what the line worked out gives (a line no report shows:
    nothing)."""
    rng = random.Random(5)
    tested = 0
    for i in range(3000):
        fields = random_record(rng, i)
        if fields["stopped_at"] is None:
            continue
        fields["queued_seconds"] = rng.choice((0.0, rng.uniform(0, 999)))
        fields["borrowed"] = rng.random() < 0.2
        r = UsageRecord(**fields)
        s = UsageRecord(**fields, **settled(r))
        s.report_head = settled_head(s)
        lo = NOW - dt.timedelta(days=rng.uniform(21, 30))
        currency = rng.choice(("EUR", "CHF", "a,b"))
        export = Export(lo, NOW + dt.timedelta(days=1), POWER, GRID, currency)
        assert wholly_inside(s, export.lo, export.hi)
        ln = report.line(s, export.lo, export.hi, NOW, POWER, GRID)
        want = report.csv_rows([vars(ln)], currency) if report.shown(ln) else ""
        assert export.text([s], {}, NOW) == want
        tested += bool(want)
    assert tested > 1000


@pytest.mark.parametrize("days", [1, 7])
def test_the_queue_s_fair_share_is_the_rule_s(store, days):
    """The queue's weights (GPU-hours per user over ``queue.fair_share_days``) from settled sums
    and the rest equal ``gpu_hours_since`` over every record."""
    from hub_plugins.accounting.budgets import gpu_hours_since
    from hub_plugins.queue.store import recent_gpu_hours

    fill_and_settle_some(store, 300, seed=20 + days)
    since = NOW - dt.timedelta(days=days)
    with store.db.read() as s:
        got = recent_gpu_hours(s.connection(), since, NOW)
    want: dict[str, list] = {}
    for r in all_rows(store):
        if r.ready_at is not None and (r.stopped_at is None or r.stopped_at >= since.replace(tzinfo=None)):
            want.setdefault(r.user_name, []).append(as_usage(r))
    want_hours = {u: gpu_hours_since(us, since, NOW) for u, us in want.items()}
    assert {u for u, h in got.items() if h > 1e-9} == {u for u, h in want_hours.items() if h > 1e-9}
    for u, h in want_hours.items():
        assert got.get(u, 0.0) == pytest.approx(h, rel=1e-9, abs=1e-9), u


def test_an_export_page_walks_the_keyset_index(store):
    """A page of an export is read along ix_gpulab_usage_started_id from the last row of the one
    before (the row comparison in the index, no sort), as plain tuples of the reported columns."""
    import sqlalchemy as sa

    from hub_plugins.store.usage import Reported

    fill(store, 60, seed=4)
    first = store.page(None, NOW - dt.timedelta(days=30), NOW, None, 10)
    assert type(first[0]) is Reported and first[0].started_at == min(r.started_at for r in all_rows(store))
    seen = []
    sa.event.listen(store.db.engine, "before_cursor_execute", lambda *a: seen.append(a[2:4]))
    store.page(None, NOW - dt.timedelta(days=30), NOW, (first[-1].started_at, first[-1].id), 10)
    statement, params = next(s for s in seen if s[0].lstrip().upper().startswith("SELECT"))
    with store.db.engine.connect() as c:
        if store.db.is_sqlite:
            plan = " ".join(str(r[-1]) for r in c.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params))
            assert "USING INDEX ix_gpulab_usage_started_id" in plan and "TEMP B-TREE" not in plan, plan
        else:
            c.exec_driver_sql("SET enable_seqscan = off")  # a few rows: as on a year of them
            plan = " ".join(r[0] for r in c.exec_driver_sql("EXPLAIN " + statement, params))
            assert "ix_gpulab_usage_started_id" in plan and "Sort" not in plan, plan
            assert "Index Cond: ((started_at <" in plan and "ROW(started_at, id) > ROW(" in plan, plan
