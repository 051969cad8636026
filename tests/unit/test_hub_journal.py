"""JupyterHub's own SQLite file is put in write-ahead-log mode before JupyterHub opens it
(settings/hubapp.py ``journal_ahead``): one sync a commit instead of several, in the hub's one
event-loop thread. Only a SQLite file is touched; a commit is still on disk when it returns."""

from __future__ import annotations

import sqlite3

import pytest

from hub_plugins.settings.hubapp import sqlite_file, use_wal


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
