"""How few round trips a PostgreSQL decision makes (store/db.py), and that the shortcuts keep the
guarantees: the serialised transaction in the driver's autocommit mode is still one transaction,
the pool gets its connections back as it lent them, and a pooled connection the server closed
(a restart) is replaced before anyone uses it, without a ping per checkout."""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa

from hub_plugins.store.db import ADVISORY_KEY, Database

pytestmark = pytest.mark.postgres


@pytest.fixture
def db(pg):
    d = Database(pg.create_db(f"trips_{random.getrandbits(40):x}"))
    with d.engine.begin() as c:
        c.execute(sa.text("CREATE TABLE t (k integer PRIMARY KEY)"))
    yield d
    d.dispose()


def rows(db: Database) -> list[int]:
    with db.engine.connect() as c:
        return list(c.execute(sa.text("SELECT k FROM t ORDER BY k")).scalars())


def queries(db: Database) -> list[str]:
    """Every query the driver sends from now on (BEGIN and COMMIT it sends itself: not seen)."""
    sent: list[str] = []
    sa.event.listen(db.engine, "before_cursor_execute", lambda _c, _cur, q, *_: sent.append(q.split()[0]))
    return sent


def test_a_serialised_write_is_one_transaction_that_rolls_back_whole(db):
    with db.write_conn(serial=True) as c:
        c.execute(sa.text("INSERT INTO t VALUES (1)"))
    with pytest.raises(RuntimeError):
        with db.write_conn(serial=True) as c:
            c.execute(sa.text("INSERT INTO t VALUES (2)"))
            c.execute(sa.text("INSERT INTO t VALUES (3)"))
            raise RuntimeError("the decision failed half-way")
    assert rows(db) == [1]


def test_the_lock_is_held_until_the_commit(db, pg):
    """Another session cannot take the serialising lock while a serialised write is open."""
    other = sa.create_engine(pg.url(db.engine.url.database), isolation_level="AUTOCOMMIT")
    try:
        with db.write_conn(serial=True) as c:
            c.execute(sa.text("INSERT INTO t VALUES (1)"))
            with other.connect() as o:
                got = o.execute(sa.text("SELECT pg_try_advisory_lock(CAST(:k AS bigint))"),
                                {"k": ADVISORY_KEY}).scalar()
            assert got is False
        with other.connect() as o:
            assert o.execute(sa.text("SELECT pg_try_advisory_xact_lock(CAST(:k AS bigint))"),
                             {"k": ADVISORY_KEY}).scalar() is True
    finally:
        other.dispose()


def test_the_pool_gets_its_connections_back_out_of_autocommit(db):
    """After a serialised write, the next plain write on the same pooled connection is again a
    transaction: a failure rolls back its first statement too."""
    with db.write_conn(serial=True) as c:
        pid = c.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    with pytest.raises(RuntimeError):
        with db.write_conn() as c:
            assert c.execute(sa.text("SELECT pg_backend_pid()")).scalar() == pid  # the same connection
            c.execute(sa.text("INSERT INTO t VALUES (7)"))
            raise RuntimeError("fails after its first write")
    assert rows(db) == []


def test_a_serialised_write_sends_its_begin_with_the_lock_and_flushes_in_one_query(db):
    sent = queries(db)
    with db.write_conn(serial=True) as c:
        c.execute(sa.text("INSERT INTO t VALUES (1)"))
    # the driver sends no BEGIN or COMMIT of its own around the flush, and no ping before
    assert sent == ["BEGIN;", "INSERT", "SELECT"]


def test_a_pooled_connection_the_server_closed_is_replaced_before_use(db, pg):
    """A restart ends every session; the pool must not hand out the dead ones. The check is a
    look at the socket, not a query: no statement is sent for it."""
    with db.engine.connect() as c:
        before = c.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    pg.restart()
    sent = queries(db)
    with db.engine.connect() as c:  # not retried: a dead connection here would raise
        after = c.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    assert after != before
    assert sent == ["SELECT"]
    with db.write_conn(serial=True) as c:
        c.execute(sa.text("INSERT INTO t VALUES (5)"))
    assert rows(db) == [5]
