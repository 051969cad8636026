"""The allocator on real databases: SQLite and a throwaway PostgreSQL.

Race safety is shown with concurrent threads *and* separate processes hammering one database:
no device is ever held by two servers at once.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import sqlite3
import threading
import time
from collections import defaultdict
from fractions import Fraction

import pytest
import sqlalchemy as sa

from hub_plugins.gpu.simulated import parse_spec
from hub_plugins.quota import Decision
from hub_plugins.accounting.pricing import Pricing
from hub_plugins.store.allocator import Allocator, NoCapacity, Owner, QuotaRefused, ReservationPlan, UsageTerms
from hub_plugins.store.db import Database
from hub_plugins.store.release import ReleaseRequest
from hub_plugins.store.models import DeviceAllocation, ServerRecord, UsageRecord, utcnow

INV = parse_spec("8xA100-80GB")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/gpulab.sqlite"
    pg = request.getfixturevalue("pg")
    return pg.create_db(f"alloc_{random.getrandbits(40):x}")


@pytest.fixture
def alloc(db_url):
    db = Database(db_url)
    db.upgrade()
    db.upgrade()  # idempotent
    yield Allocator(db)
    db.dispose()


def test_allocate_release_cycle(alloc):
    a = alloc.allocate(Owner(1, "ann"), "minimal", "A100-80GB", 2, INV)
    assert [d.index for d in a.devices] == [0, 1] and a.equivalents == 2
    b = alloc.allocate(Owner(2, "bob", "exp"), "minimal", "A100-80GB", 3, INV)
    assert [d.index for d in b.devices] == [2, 3, 4]
    snap = alloc.snapshot()
    assert set(snap.taken) == {d.key for d in a.devices + b.devices}
    assert [u.name for u in snap.usage_of(2)] == ["exp"]
    assert alloc.release(Owner(1, "ann")) == ["localhost/gpu0", "localhost/gpu1"]
    assert alloc.release(Owner(1, "ann")) == []  # idempotent
    c = alloc.allocate(Owner(3, "cat"), "minimal", "A100-80GB", 2, INV)
    assert [d.index for d in c.devices] == [0, 1]


def test_cpu_only_server_is_recorded(alloc):
    a = alloc.allocate(Owner(1, "ann", "cpu"), "minimal", "", 0, INV)
    assert a.devices == () and a.equivalents == 0
    assert [(u.name, u.count) for u in alloc.snapshot().usage_of(1)] == [("cpu", 0)]


def test_capacity_refusal_says_what_is_free(alloc):
    alloc.allocate(Owner(1, "ann"), "minimal", "A100-80GB", 4, INV)
    alloc.allocate(Owner(2, "bob"), "minimal", "A100-80GB", 3, INV)
    with pytest.raises(NoCapacity) as e:
        alloc.allocate(Owner(3, "cat"), "minimal", "A100-80GB", 2, INV)
    assert (e.value.free, e.value.total) == (1, 8)
    assert [u.name for u in alloc.snapshot().usage_of(3)] == []  # nothing left behind


def test_quota_check_sees_other_servers_of_the_user(alloc):
    alloc.allocate(Owner(1, "ann", "a"), "minimal", "A100-80GB", 1, INV)
    seen = []

    def check(usage, gpu_type):
        seen.append([(u.name, u.equivalents) for u in usage])
        return Decision(False, "gpus", "no more")

    with pytest.raises(QuotaRefused, match="no more"):
        alloc.allocate(Owner(1, "ann", "b"), "minimal", "A100-80GB", 1, INV, quota_check=check)
    assert seen == [[("a", Fraction(1))]]


def test_stale_row_of_same_server_is_reclaimed(alloc):
    alloc.allocate(Owner(1, "ann"), "minimal", "A100-80GB", 2, INV)
    again = alloc.allocate(Owner(1, "ann"), "minimal", "A100-80GB", 1, INV)
    assert len(alloc.snapshot().servers) == 1 and [d.index for d in again.devices] == [0]


def test_database_refuses_double_allocation_even_without_the_lock(alloc):
    a = alloc.allocate(Owner(1, "ann"), "minimal", "A100-80GB", 1, INV)
    with pytest.raises(sa.exc.IntegrityError):
        with alloc.db.write() as s:
            row = ServerRecord(user_id=9, user_name="x", server_name="", spawn_id="dup", profile="m",
                               gpu_type="A100-80GB", gpu_count=1, equivalents="1", host="localhost")
            s.add(row)
            s.flush()
            s.add(DeviceAllocation(device_key=a.devices[0].key, server_id=row.id, host="localhost",
                                   gpu_type="A100-80GB", visible_id="0", weight="1"))
            s.flush()


def test_reconcile_frees_only_dead_and_old(alloc):
    alloc.allocate(Owner(1, "ann"), "minimal", "A100-80GB", 1, INV)
    alloc.allocate(Owner(2, "bob"), "minimal", "A100-80GB", 1, INV)
    cut = utcnow()
    time.sleep(0.01)
    alloc.allocate(Owner(3, "cat"), "minimal", "A100-80GB", 1, INV)  # after the snapshot
    gone = alloc.reconcile(lambda r: r.user_id == 1, cut)
    assert [r.user_name for r in gone] == ["bob"]
    assert sorted(s.user_name for s in alloc.snapshot().servers) == ["ann", "cat"]


def test_type_is_chosen_inside_the_transaction(alloc):
    inv = parse_spec("2xA100-80GB, 4xH100-80GB")
    a = alloc.allocate(Owner(1, "ann"), "m", ["A100-80GB", "H100-80GB"], 2, inv)
    assert a.gpu_type == "A100-80GB"
    b = alloc.allocate(Owner(2, "bob"), "m", ["A100-80GB", "H100-80GB"], 2, inv)
    assert b.gpu_type == "H100-80GB"  # the first type is full: the next one that fits
    with pytest.raises(NoCapacity) as e:
        alloc.allocate(Owner(3, "cat"), "m", ["A100-80GB", "H100-80GB"], 3, inv)
    assert e.value.gpu_type == "H100-80GB"  # refusal names the type with the most room


def test_mig_and_whole_share_the_table():
    inv = parse_spec("1xA100-80GB, 1xA100-80GB+mig(7*1g.10gb)")
    db = Database("sqlite://")
    db.upgrade()
    a = Allocator(db)
    x = a.allocate(Owner(1, "a"), "m", "A100-80GB:1g.10gb", 3, inv)
    assert x.equivalents == Fraction(3, 7) and all(v.startswith("MIG-") for v in x.visible_ids)


def _hammer(url, worker, rounds, out):
    """One process: allocate 1-2 GPUs, hold briefly, release; record (device, t0, t1)."""
    db = Database(url)
    alloc = Allocator(db)
    rng = random.Random(worker)
    held = []
    refused = 0
    for i in range(rounds):
        owner = Owner(1000 + worker, f"w{worker}", f"s{i}")
        try:
            a = alloc.allocate(owner, "m", "A100-80GB", rng.choice((1, 2)), INV)
        except NoCapacity:
            refused += 1
            continue
        t0 = time.monotonic()
        time.sleep(rng.random() * 0.004)
        t1 = time.monotonic()
        alloc.release(owner)
        held += [(d.key, t0, t1) for d in a.devices]
    db.dispose()
    out.put((held, refused))


@pytest.mark.slow
def test_processes_never_share_a_device(alloc, db_url):
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(db_url, w, 60, out)) for w in range(8)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    intervals = defaultdict(list)
    for held, _ in results:
        for key, t0, t1 in held:
            intervals[key].append((t0, t1))
    granted = sum(len(v) for v in intervals.values())
    assert granted > 100  # the test really competed for devices
    for key, spans in intervals.items():
        spans.sort()
        for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
            assert b0 >= a1, f"{key} held twice: {a0:.4f}-{a1:.4f} and {b0:.4f}-{b1:.4f}"
    assert alloc.snapshot().servers == []  # everything released


def test_threads_200_concurrent_requests_on_8_gpus(alloc):
    results, lock = [], threading.Lock()

    def one(i):
        try:
            a = alloc.allocate(Owner(i, f"u{i}"), "m", "A100-80GB", 1, INV)
            with lock:
                results.append(a.devices[0].key)
        except NoCapacity:
            with lock:
                results.append(None)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    granted = [r for r in results if r]
    assert len(granted) == 8 and len(set(granted)) == 8 and results.count(None) == 192


@pytest.mark.postgres
def test_survives_a_postgres_restart(pg):
    url = pg.create_db(f"restart_{random.getrandbits(40):x}")
    db = Database(url)
    db.upgrade()
    alloc = Allocator(db)
    alloc.allocate(Owner(1, "ann"), "m", "A100-80GB", 1, INV)
    pg.restart()  # every pooled connection is now dead
    b = alloc.allocate(Owner(2, "bob"), "m", "A100-80GB", 1, INV)
    assert [d.index for d in b.devices] == [1]  # ann's allocation survived the restart
    assert alloc.release(Owner(1, "ann")) == ["localhost/gpu0"]
    db.dispose()


def test_engine_placement_counts_without_reserving(alloc):
    """SLURM/Kubernetes place devices themselves: gpulab records the count for quotas and
    accounting, reserves no device and never refuses for capacity."""
    a = alloc.allocate(Owner(1, "ann"), "m", ["A100-80GB"], 8, INV, reserve=False)
    b = alloc.allocate(Owner(2, "bob"), "m", ["A100-80GB"], 8, INV, reserve=False)  # cluster "full"
    assert a.devices == () and a.count == 8 and a.equivalents == 8 and b.count == 8
    assert alloc.snapshot().taken == {}
    assert [u.equivalents for u in alloc.snapshot().usage_of(1)] == [8]  # quotas still see it


@pytest.mark.postgres
def test_a_serialised_decision_is_on_disk_before_it_is_answered(pg):
    """On PostgreSQL the serialised transaction commits asynchronously (its lock is free before
    the fsync) and the allocator then waits for the WAL: an answered decision is on disk. The
    WAL writer is slowed to 10 s here, so only that wait can have flushed what the decision
    wrote; without it, the flushed position stays behind."""
    db = Database(pg.create_db(f"flush_{random.getrandbits(40):x}"))
    db.upgrade()
    admin = sa.create_engine(pg.url(), isolation_level="AUTOCOMMIT")
    lsn = sa.text("SELECT pg_current_wal_flush_lsn() >= CAST(:w AS pg_lsn)")
    with admin.connect() as c:
        c.execute(sa.text("ALTER SYSTEM SET wal_writer_delay = '10s'"))
        c.execute(sa.text("SELECT pg_reload_conf()"))
    try:
        time.sleep(0.5)  # the WAL writer reads its new setting at its next round
        plan = ReservationPlan("m", ("A100-80GB",), 1, INV)
        for user in range(1, 6):
            with db.write_conn(serial=True) as c:
                a = Allocator(db).allocate_in(c, Owner(user, f"u{user}"), plan)
                assert c.execute(sa.text("SHOW synchronous_commit")).scalar() == "off"
                written = c.execute(sa.text("SELECT pg_current_wal_insert_lsn()")).scalar()
            with admin.connect() as c:
                assert c.execute(lsn, {"w": written}).scalar(), f"decision {user} answered before it was on disk"
            assert [d.index for d in a.devices] == [user - 1]
    finally:
        with admin.connect() as c:
            c.execute(sa.text("ALTER SYSTEM RESET wal_writer_delay"))
            c.execute(sa.text("SELECT pg_reload_conf()"))
        admin.dispose()
        db.dispose()


def test_a_checked_release_frees_what_it_looked_at_or_changes_nothing(alloc):
    """A stop's one transaction (``Allocator.release_checked``): told False it keeps every row
    and the open usage record; told when the spawns were last alive it frees them."""
    terms = UsageTerms(Pricing({}, 0.0, 0.0, 0, "EUR"))
    a = alloc.allocate(Owner(1, "ann"), "minimal", "A100-80GB", 2, INV, usage=terms)
    looked = []

    def keep(spawns):
        looked.append(spawns)
        return False

    assert alloc.release_checked(Owner(1, "ann"), keep) == ([a.spawn_id], None)
    assert looked == [[a.spawn_id]] and set(alloc.snapshot().taken) == {d.key for d in a.devices}
    with alloc.db.read() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(UsageRecord).where(UsageRecord.stopped_at.is_(None))) == 1
    seen = utcnow()
    assert alloc.release_checked(Owner(1, "ann"), lambda spawns: {s: seen for s in spawns}, "crashed") == (
        [a.spawn_id], ["localhost/gpu0", "localhost/gpu1"])
    assert alloc.snapshot().taken == {}
    with alloc.db.read() as s:
        rec = s.scalars(sa.select(UsageRecord)).one()
    assert rec.stopped_at is not None and rec.stop_reason == "failed"  # never ready: not charged
    assert alloc.release_checked(Owner(1, "ann"), lambda spawns: {}) == ([], [])  # idempotent


def test_releases_written_together_free_each_as_alone_would(alloc):
    """Group commit (``store/release.py``): one transaction for several stops frees what each
    would have freed alone; a request told False keeps its rows, one whose look raised fails
    alone, and a second request for an owner finds nothing left."""
    terms = UsageTerms(Pricing({}, 0.0, 0.0, 0, "EUR"))
    ann = alloc.allocate(Owner(1, "ann"), "minimal", "A100-80GB", 2, INV, usage=terms)
    bob = alloc.allocate(Owner(2, "bob", "exp"), "minimal", "A100-80GB", 1, INV, usage=terms)
    cat = alloc.allocate(Owner(3, "cat"), "minimal", "A100-80GB", 1, INV, usage=terms)
    dan = alloc.allocate(Owner(4, "dan"), "minimal", "A100-80GB", 1, INV, usage=terms)
    cpu = alloc.allocate(Owner(2, "bob"), "minimal", "A100-80GB", 0, INV, usage=terms)
    looked = {}

    def look(name, answer):
        def alive_for(spawns):
            looked[name] = spawns
            if isinstance(answer, Exception):
                raise answer
            return answer
        return alive_for

    seen = utcnow()
    results = alloc.release_many([
        ReleaseRequest(Owner(1, "ann"), look("ann", None), "user", "admin"),
        ReleaseRequest(Owner(2, "bob", "exp"), look("bob", False)),
        ReleaseRequest(Owner(3, "cat"), look("cat", RuntimeError("engine away"))),
        ReleaseRequest(Owner(4, "dan"), look("dan", {dan.spawn_id: seen}), "crashed"),
        ReleaseRequest(Owner(1, "ann"), look("ann again", None)),
        ReleaseRequest(Owner(2, "bob"), look("bob cpu", None)),
    ])
    assert results[0] == ([ann.spawn_id], sorted(d.key for d in ann.devices))
    assert results[1] == ([bob.spawn_id], None)
    assert isinstance(results[2], RuntimeError) and str(results[2]) == "engine away"
    assert results[3] == ([dan.spawn_id], [dan.devices[0].key])
    assert results[4] == ([], [])
    assert results[5] == ([cpu.spawn_id], [])
    assert looked == {"ann": [ann.spawn_id], "bob": [bob.spawn_id], "cat": [cat.spawn_id],
                      "dan": [dan.spawn_id], "ann again": [], "bob cpu": [cpu.spawn_id]}
    assert set(alloc.snapshot().taken) == {bob.devices[0].key, cat.devices[0].key}
    with alloc.db.read() as s:
        recs = {r.spawn_id: r for r in s.scalars(sa.select(UsageRecord))}
    assert recs[ann.spawn_id].stopped_at is not None and recs[ann.spawn_id].stopped_by == "admin"
    assert recs[bob.spawn_id].stopped_at is None and recs[cat.spawn_id].stopped_at is None
    assert recs[dan.spawn_id].stop_reason == "failed"  # crashed before it was ever ready: not charged
    assert recs[cpu.spawn_id].stopped_at is not None
    # what a group left is released alone afterwards as ever
    assert alloc.release_checked(Owner(3, "cat"), lambda spawns: None) == (
        [cat.spawn_id], [cat.devices[0].key])


def test_a_group_whose_transaction_fails_is_written_again_one_by_one(alloc, monkeypatch):
    a = alloc.allocate(Owner(1, "ann"), "minimal", "A100-80GB", 1, INV)
    b = alloc.allocate(Owner(2, "bob"), "minimal", "A100-80GB", 1, INV)
    real, groups = alloc._release, []

    def only_alone(requests):
        groups.append(len(requests))
        if len(requests) > 1:
            raise sa.exc.IntegrityError("UPDATE", {}, Exception("constraint"))
        return real(requests)

    monkeypatch.setattr(alloc, "_release", only_alone)
    out = alloc.release_many([ReleaseRequest(Owner(1, "ann"), lambda s: None),
                              ReleaseRequest(Owner(2, "bob"), lambda s: None)])
    assert out == [([a.spawn_id], [a.devices[0].key]), ([b.spawn_id], [b.devices[0].key])]
    assert groups == [2, 1, 1] and alloc.snapshot().taken == {}


def test_a_release_is_written_at_once_only_where_the_write_lock_is_free(alloc, db_url):
    """``release_many_now`` (the hub's loop: ``Database.write_now``) never waits: a writer of
    another process or of another thread holding SQLite's lock makes it answer None, changing
    nothing; on PostgreSQL (round trips) it is never written at once."""
    a = alloc.allocate(Owner(1, "ann"), "minimal", "A100-80GB", 1, INV)
    req = [ReleaseRequest(Owner(1, "ann"), lambda spawns: None)]
    if not alloc.db.is_sqlite:
        assert alloc.release_many_now(req) is None
        return
    other = sqlite3.connect(db_url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's writer
    t0 = time.perf_counter()
    assert alloc.release_many_now(req) is None
    assert time.perf_counter() - t0 < 1  # not SQLite's busy timeout of 30 s
    other.execute("ROLLBACK")
    other.close()
    held, go = threading.Event(), threading.Event()

    def worker():  # this process's other writer, in a worker thread
        with alloc.db.write_conn():
            held.set()
            go.wait(10)

    th = threading.Thread(target=worker)
    th.start()
    assert held.wait(10)
    assert alloc.release_many_now(req) is None
    go.set()
    th.join()
    assert set(alloc.snapshot().taken) == {a.devices[0].key}  # nothing changed
    assert alloc.release_many_now(req) == [([a.spawn_id], [a.devices[0].key])]
    assert alloc.snapshot().taken == {}
    with alloc.db._now_engine.connect() as conn:  # its commits never checkpoint (may fsync)
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
