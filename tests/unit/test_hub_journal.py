"""JupyterHub's own SQLite file is put in write-ahead-log mode before JupyterHub opens it
(settings/hubapp.py ``journal_ahead``): one sync a commit instead of several, in the hub's one
event-loop thread. Only a SQLite file is touched. Its connections then sync at checkpoints, not
at every commit (``hub.sqlite_synchronous``), where the file is in WAL mode."""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa
from traitlets.config import Config

from hub_plugins.settings.apply import update_hub
from hub_plugins.settings.hubapp import SyncAtCheckpoints, sqlite_file, use_wal
from hub_plugins.settings.loader import load
from tests.unit.test_settings import write


@pytest.mark.parametrize("url, path", [
    ("sqlite:///jupyterhub.sqlite", "jupyterhub.sqlite"),
    ("sqlite:////srv/state/jupyterhub.sqlite", "/srv/state/jupyterhub.sqlite"),
    ("sqlite+pysqlite:////srv/hub.db", "/srv/hub.db"),
    ("sqlite://", None),
    ("sqlite:///:memory:", None),
    ("sqlite:///file:hub?mode=memory&uri=true", None),
    ("postgresql://hub@db/jupyterhub", None),
    ("not a url", None),
])
def test_which_urls_name_a_sqlite_file(url, path):
    assert sqlite_file(url) == path


def test_a_new_file_and_an_old_one_end_in_wal_and_keep_their_rows(tmp_path):
    new = tmp_path / "new.sqlite"
    assert use_wal(str(new)) == "wal"
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as c:  # an existing hub's file, in the default rollback journal
        c.execute("CREATE TABLE users (name TEXT)")
        c.execute("INSERT INTO users VALUES ('ann')")
    c.close()
    assert use_wal(str(old)) == "wal"
    assert use_wal(str(old)) == "wal"  # once set, it stays: nothing to do
    c = sqlite3.connect(old)
    try:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert c.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL, SQLite's and JupyterHub's
        assert c.execute("SELECT name FROM users").fetchall() == [("ann",)]
    finally:
        c.close()


def test_a_file_held_by_a_writer_keeps_its_mode_and_says_why(tmp_path):
    held = tmp_path / "held.sqlite"
    other = sqlite3.connect(held, isolation_level=None)
    try:
        other.execute("CREATE TABLE t (k INTEGER)")
        other.execute("BEGIN EXCLUSIVE")
        mode = use_wal(str(held), timeout=0.1)
        assert mode not in (None, "wal") and "locked" in mode
    finally:
        other.close()


def test_a_file_that_cannot_be_opened_is_left_to_jupyterhub(tmp_path):
    assert use_wal(str(tmp_path / "missing-dir" / "hub.sqlite")) is None


def test_jupyterhubs_connections_sync_at_checkpoints_only_in_wal_mode(tmp_path):
    """``hub.sqlite_synchronous: normal``: NORMAL (1) on a WAL file; a file with a rollback
    journal keeps FULL (2), where NORMAL could corrupt it on a power cut."""
    rollback = tmp_path / "rollback.sqlite"
    conn = sqlite3.connect(rollback, factory=SyncAtCheckpoints)
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    conn.close()
    wal = tmp_path / "wal.sqlite"
    assert use_wal(str(wal)) == "wal"
    conn = sqlite3.connect(wal, factory=SyncAtCheckpoints)
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()
    assert sqlite3.connect(wal).execute("SELECT x FROM t").fetchall() == [(1,)]


@pytest.mark.parametrize("hub, factory", [
    ({}, True),  # the default: JupyterHub's SQLite file in state_dir
    ({"sqlite_synchronous": "full"}, False),
    ({"db_url": "postgresql://hub@db/jupyterhub"}, False),  # not SQLite: nothing to set
])
def test_which_hubs_get_the_checkpoint_sync(tmp_path, hub, factory):
    c = Config()
    update_hub(c, load(write(tmp_path, {"hub": hub})))
    connect_args = c.JupyterHub.db_kwargs.get("connect_args", {}) if "db_kwargs" in c.JupyterHub else {}
    assert (connect_args.get("factory") is SyncAtCheckpoints) is factory
    if factory:  # JupyterHub's own default for SQLite, which db_kwargs replaces, is kept
        assert connect_args["check_same_thread"] is False


def test_jupyterhub_opens_its_database_through_the_checkpoint_sync(tmp_path):
    from jupyterhub import orm

    path = tmp_path / "jupyterhub.sqlite"
    use_wal(str(path))
    factory = orm.new_session_factory(f"sqlite:///{path}", connect_args={"check_same_thread": False,
                                                                         "factory": SyncAtCheckpoints})
    db = factory()
    try:
        assert db.execute(sa.text("PRAGMA synchronous")).scalar() == 1
        db.add(orm.User(name="ada"))
        db.commit()
    finally:
        db.close()
    assert sqlite3.connect(path).execute("SELECT name FROM users").fetchall() == [("ada",)]
