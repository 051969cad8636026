"""Core statements on SQLite's own cursor (``store/driver.py``): what they store and read is what
the ORM stores and reads, their IN lists take any length, and a driver error is SQLAlchemy's."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest
import sqlalchemy as sa

from hub_plugins.store.db import Database
from hub_plugins.store.driver import DriverStatements
from hub_plugins.store.models import ServerRecord, UsageRecord
from hub_plugins.store.release import _OPEN_USAGE_OF, CLOSE_USAGE, DROP_SERVERS, _SERVERS_OF

_U = UsageRecord.__table__


@pytest.fixture
def db(tmp_path):
    d = Database(f"sqlite:///{tmp_path}/g.sqlite")
    d.upgrade()
    yield d
    d.dispose()


def _usage(s, uid: int, spawn: str, **kw) -> UsageRecord:
    now = dt.datetime(2026, 12, 3, 12, 0, 0, 123456)
    rec = UsageRecord(spawn_id=spawn, user_id=uid, user_name=f"u{uid}", server_name="", profile="minimal",
                      gpu_type="A100-80GB", gpu_count=1, started_at=now, last_seen_at=now, **kw)
    s.add(rec)
    return rec


def _server(s, uid: int, spawn: str) -> None:
    s.add(ServerRecord(spawn_id=spawn, user_id=uid, user_name=f"u{uid}", server_name="", profile="minimal",
                       gpu_type="A100-80GB", gpu_count=1))


@pytest.mark.parametrize("end", [dt.datetime(2026, 12, 3, 13, 4, 5, 678901), dt.datetime(2026, 12, 3, 13, 4, 5)])
def test_a_datetime_is_stored_as_the_orm_stores_it(db, end):
    """Even one without microseconds, whose isoformat() would drop them: SQLite compares the
    text, so a different form would sort the billing's ranges wrongly."""
    with db.write() as s:
        _usage(s, 1, "a")
        _usage(s, 2, "b", stopped_at=end)  # through the ORM
    run = DriverStatements(db.engine.dialect)
    with db.write_conn() as conn:
        rid = conn.execute(sa.select(_U.c.id).where(_U.c.spawn_id == "a")).scalar_one()
        run.many(conn, CLOSE_USAGE, [dict(rid=rid, end=end, why="user", by="admin")])
    with db.engine.connect() as conn:
        texts = dict(conn.exec_driver_sql("SELECT spawn_id, stopped_at FROM gpulab_usage").all())
    assert texts["a"] == texts["b"] and isinstance(texts["a"], str)
    with db.read() as s:
        assert s.scalars(sa.select(UsageRecord.stopped_at).where(UsageRecord.spawn_id == "a")).one() == end


def test_rows_read_by_name_with_their_datetimes(db):
    with db.write() as s:
        _usage(s, 1, "a", ready_at=dt.datetime(2026, 12, 3, 12, 0, 1), pending_reason="culled: idle")
        _usage(s, 1, "b")
        _usage(s, 2, "c")
    run = DriverStatements(db.engine.dialect)
    with db.write_conn() as conn:
        rows = run.all(conn, _OPEN_USAGE_OF, {"uids": [1]})
    assert [r.spawn_id for r in rows] == ["a", "b"]
    assert rows[0].ready_at == dt.datetime(2026, 12, 3, 12, 0, 1) and rows[1].ready_at is None
    assert rows[0].last_seen_at == dt.datetime(2026, 12, 3, 12, 0, 0, 123456)
    assert rows[0].pending_reason == "culled: idle"


def test_in_lists_of_any_length_one_statement_each(db):
    with db.write() as s:
        for uid in range(1, 6):
            _server(s, uid, f"s{uid}")
    run = DriverStatements(db.engine.dialect)
    with db.write_conn() as conn:
        for uids in ([3], [1, 2, 5], [], [4], list(range(1, 6))):
            assert [r.user_id for r in run.all(conn, _SERVERS_OF, {"uids": uids})] == uids
        assert run.all(conn, DROP_SERVERS, {"ids": [1, 2]}) == []  # returns nothing
        assert [r.user_id for r in run.all(conn, _SERVERS_OF, {"uids": list(range(1, 6))})] == [3, 4, 5]
    assert len({k[0] for k in run._shapes}) == 2  # the two statements, each kept by shape


def test_a_driver_error_is_sqlalchemys(db, tmp_path):
    """``Database.retrying`` and ``release_many_now`` decide on SQLAlchemy's errors."""
    run = DriverStatements(db.engine.dialect)
    with db.write() as s:
        _usage(s, 1, "a")
    other = sqlite3.connect(f"{tmp_path}/g.sqlite", timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with db.write_now() as conn:
            assert conn is None  # its own check: the lock is taken
        with db.engine.connect() as conn:  # a plain reader: its write is what fails
            conn.exec_driver_sql("PRAGMA busy_timeout=0")
            with pytest.raises(sa.exc.OperationalError) as e:
                run.many(conn, CLOSE_USAGE, [dict(rid=1, end=dt.datetime(2026, 1, 1), why="user", by="")])
            assert isinstance(e.value.orig, sqlite3.OperationalError) and "locked" in str(e.value.orig)
    finally:
        other.execute("ROLLBACK")
        other.close()
    with db.write_conn() as conn, pytest.raises(sa.exc.IntegrityError):
        run.all(conn, sa.update(_U).values(user_name=sa.bindparam("v")).where(_U.c.id == 1), {"v": None})
