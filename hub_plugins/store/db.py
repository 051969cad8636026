"""Database access for gpulab's tables: engines, serialised write transactions, retries and
migrations. Works the same on SQLite and PostgreSQL.

Write transactions that make decisions (allocate, queue) are *serialised* across every process
that shares the database:

- SQLite: ``BEGIN IMMEDIATE`` takes the database's write lock when the transaction starts, so
  the read-decide-write sequence cannot interleave with another writer. Writers of one process
  queue on a lock of their own first: SQLite's busy handler makes a waiting writer sleep in
  growing steps (up to 100 ms) however soon the lock is free, which under a burst of spawns
  costs more than the transactions themselves.
- PostgreSQL: ``pg_advisory_xact_lock`` on a fixed key, held until commit. The commit itself is
  asynchronous (``synchronous_commit=off`` for that transaction only), so the lock is free as
  soon as the commit record is written, not after its fsync; a second, tiny transaction then
  waits for the WAL to reach disk before the caller answers ("early lock release"). Every
  answered decision is still on disk, and the fsyncs of concurrent writers are grouped instead
  of queued one after another behind the lock. Another writer may *read* a decision a few
  milliseconds before it is on disk; its own commit comes later in the same WAL, so after a
  crash either both survive or it was never answered.

A decision's cost on PostgreSQL is mostly round trips (each one a wake-up of the client and of a
server process), so the serialised path makes as few as it can: the connection runs in the
driver's autocommit mode there, so that ``BEGIN`` travels with the lock in one query instead of
on its own, and the flush is a one-statement transaction (one round trip, not three). A pooled
connection is checked for life without a round trip too (``_alive``).

On top of that, unique keys make double allocation impossible even for code that skips the lock.
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.orm import Session

log = logging.getLogger("gpulab.db")

ADVISORY_KEY = 0x6770756C6162  # "gpulab"
MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "gpulab_alembic_version"
# one round trip (the simple query protocol takes several statements when there are no
# parameters): the transaction, the lock, and an asynchronous commit for this transaction only
_SERIAL_PG = (f"BEGIN; SELECT set_config('synchronous_commit', 'off', true), "
              f"pg_advisory_xact_lock({ADVISORY_KEY})")
# a transaction that writes one WAL record and commits synchronously: its fsync covers every
# earlier commit of the WAL, the serialised one included (a read-only transaction flushes nothing).
# Run in autocommit mode, it is a transaction by itself.
_FLUSH_PG = "SELECT pg_logical_emit_message(true, 'gpulab', 'flush')"


def _sqlite_setup(engine: sa.Engine, now: bool = False) -> None:
    """``now``: the connection of :meth:`Database.write_now`, which never waits for the write
    lock and never checkpoints (the other connections' commits do)."""
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's implicit BEGIN is DEFERRED).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # WAL: readers never block the writer; NORMAL: a commit survives a killed process
        # (what "hub killed" means), fsync happens at checkpoints.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={0 if now else WRITER_WAIT_SECONDS * 1000}")
        if now:
            cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        write = now or conn.get_execution_options().get("gpulab_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


# the SQLite busy timeout (connect_args below) and the longest wait for this process's writers
WRITER_WAIT_SECONDS = 30


class Database:
    """An engine plus the few transaction shapes gpulab uses."""

    def __init__(self, url: str, echo: bool = False):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # one process's SQLite writers, in turn (see the module's docstring); re-entrant, so a
        # nested write waits on SQLite as it always did rather than on itself
        self._writers = threading.RLock() if self.is_sqlite else None
        self._now_engine: sa.Engine | None = None  # write_now's, made on first use
        if self.is_sqlite:
            # a connection per worker thread kept open (the core's pool has 16): opening one
            # costs more than a transaction
            self.engine = sa.create_engine(
                url, echo=echo, pool_size=20, connect_args={"check_same_thread": False, "timeout": WRITER_WAIT_SECONDS}
            )
            _sqlite_setup(self.engine)
        else:
            self.engine = sa.create_engine(url, echo=echo, pool_size=10, max_overflow=20)
            event.listen(self.engine, "checkout", _alive)

    def dispose(self) -> None:
        self.engine.dispose()
        if self._now_engine is not None:
            self._now_engine.dispose()

    @contextlib.contextmanager
    def _in_turn(self):
        """Wait for this process's other SQLite writers, but never longer than SQLite itself
        would wait (its busy timeout): past that the transaction goes ahead and SQLite decides,
        so one stuck writer cannot queue every other one behind it for 30 s each."""
        if self._writers is None:
            yield
            return
        got = self._writers.acquire(timeout=WRITER_WAIT_SECONDS)
        try:
            yield
        finally:
            if got:
                self._writers.release()

    @contextlib.contextmanager
    def read(self):
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            yield s

    @contextlib.contextmanager
    def write(self):
        """A write transaction through the ORM. Decisions that must be serialised against every
        other process take :meth:`write_conn` with ``serial=True`` (bare statements, the hot path)."""
        with self._in_turn(), self.engine.connect() as conn:
            if self.is_sqlite:
                conn = conn.execution_options(gpulab_write=True)
            with Session(bind=conn, expire_on_commit=False) as s, s.begin():
                yield s

    @contextlib.contextmanager
    def write_conn(self, serial: bool = False):
        """A write transaction on a bare Connection (the allocator's hot path skips the ORM);
        ``serial=True`` also serialises it against every other serial writer."""
        with self._in_turn(), self.engine.connect() as conn:
            if self.is_sqlite:
                conn = conn.execution_options(gpulab_write=True)
            early = serial and not self.is_sqlite
            if early:
                _autocommit(conn)
            with conn.begin():
                if early:
                    conn.exec_driver_sql(_SERIAL_PG)
                yield conn
            if early:
                conn.exec_driver_sql(_FLUSH_PG)

    @contextlib.contextmanager
    def write_now(self):
        """A SQLite write transaction on the caller's thread that never waits: a Connection, or
        None when the write lock is not free this moment (another writer of this process or of
        another) or the database is PostgreSQL; the caller then writes in a worker thread.

        For the hub's loop, where a transaction of a few statements costs less than the trip to
        a worker thread: in a worker each statement gives the GIL up and waits to get it back
        from the busy loop (``release.py``). JupyterHub writes its own SQLite on the loop too.
        Its connection never checkpoints the WAL (that may fsync): the others' commits do."""
        if self._writers is None or not self._writers.acquire(blocking=False):
            yield None
            return
        try:
            if self._now_engine is None:
                self._now_engine = sa.create_engine(self.url, poolclass=sa.pool.StaticPool,
                                                    connect_args={"check_same_thread": False, "timeout": 0})
                _sqlite_setup(self._now_engine, now=True)
            with self._now_engine.connect() as conn:
                try:
                    tx = conn.begin()
                except OperationalError:  # locked by another process ("database is locked")
                    conn.rollback()
                    yield None
                    return
                with tx:
                    yield conn
        finally:
            self._writers.release()

    def retrying(self, fn, *, attempts: int = 8, first_delay: float = 0.05):
        """Run ``fn()`` again when the database is briefly unreachable (restart, failover).

        Only connection-level failures are retried; ``fn`` must be a whole transaction.
        """
        delay = first_delay
        for attempt in range(1, attempts + 1):
            try:
                return fn()
            except (OperationalError, DBAPIError) as e:
                if not (getattr(e, "connection_invalidated", False) or _transient(e)) or attempt == attempts:
                    raise
                log.warning("database unavailable (%s); retry %d/%d in %.2fs", e.orig, attempt, attempts, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def upgrade(self, revision: str = "head") -> None:
        """Bring gpulab's tables to the newest migration (idempotent, safe to race); ``revision``:
        an older one (tests of a migration)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn = conn.execution_options(gpulab_write=True)
            with conn.begin():
                if not self.is_sqlite:
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_KEY})
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)


def _autocommit(conn: sa.Connection) -> None:
    """The driver's autocommit mode for this checkout (SQLAlchemy restores the pool's level when
    the connection goes back): the driver sends no ``BEGIN`` of its own, ours comes with the lock
    (``_SERIAL_PG``). Its commit and rollback still end the transaction that ``BEGIN`` opened."""
    conn.execution_options(isolation_level="AUTOCOMMIT")


def _alive(dbapi_conn, _record, _proxy) -> None:
    """A pooled PostgreSQL connection is checked before use without a round trip (SQLAlchemy's
    ``pool_pre_ping`` costs one per checkout, as much as a statement): an idle connection's
    socket has nothing to read unless the server ended the session (restart, terminated
    backend: the goodbye or the closed socket makes it readable). Such a connection is
    replaced before anyone uses it; one the server dropped silently fails at its first statement
    and the transaction is retried (``Database.retrying``)."""
    pgconn = getattr(dbapi_conn, "pgconn", None)
    if pgconn is None:  # not psycopg: its first statement tells
        return
    try:
        dead = dbapi_conn.closed or bool(_readable(pgconn.socket))
    except Exception:  # noqa: BLE001 - a socket libpq no longer has is a lost connection
        dead = True
    if dead:
        raise DisconnectionError("the database server closed this connection")


def _readable(fd: int) -> list:
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return poller.poll(0)


def _transient(e: DBAPIError) -> bool:
    text = str(getattr(e, "orig", e)).lower()
    return any(
        s in text
        for s in (
            "database is locked",
            "server closed the connection",
            "connection refused",
            "terminating connection",
            "could not connect",
            "connection already closed",
            "the database system is shutting down",
            "the database system is starting up",
        )
    )
