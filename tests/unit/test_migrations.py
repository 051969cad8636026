"""The migrations build exactly the tables the models describe, on SQLite and PostgreSQL, and
never touch tables that are not gpulab's."""

import random

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from hub_plugins.store.db import VERSION_TABLE, Database
import hub_plugins.store.overrides  # noqa: F401 - its tables are in Base too (alone, this test saw them missing)
from hub_plugins.store.models import Base


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/m.sqlite"
    return request.getfixturevalue("pg").create_db(f"mig_{random.getrandbits(40):x}")


def test_models_match_migrations(url):
    eng = sa.create_engine(url)
    with eng.begin() as c:  # someone else's table in the same database (JupyterHub's, say)
        c.execute(sa.text("CREATE TABLE users (id integer primary key, name varchar(255))"))
    eng.dispose()
    db = Database(url)
    db.upgrade()
    with db.engine.connect() as c:
        ctx = MigrationContext.configure(c, opts={
            "include_name": lambda n, t, _p: t != "table" or (n.startswith("gpulab_") and n != VERSION_TABLE)})
        assert compare_metadata(ctx, Base.metadata) == []
    tables = set(sa.inspect(db.engine).get_table_names())
    assert "users" in tables and all(t.startswith("gpulab_") for t in tables - {"users"})
    db.dispose()


def test_0010_settles_the_history_again_with_each_line_s_text(url):
    """Records settled before 0010 have no stored line text: the upgrade unsettles them and empties
    their sums, and settling again gives the same charges and sums, now with the text."""
    import datetime as dt

    from hub_plugins.store import settled as settling
    from hub_plugins.store.models import UsageRecord

    db = Database(url)
    db.upgrade("0009")
    start = dt.datetime(2026, 11, 2, 8)
    with db.engine.begin() as c:
        # two servers that ran, one that never started (charged nothing: no line)
        for i, (gpus, hours) in enumerate(((1, 2.0), (2, 0.5), (0, 1.0))):
            c.execute(sa.text(
                "INSERT INTO gpulab_usage (spawn_id, user_id, user_name, server_name, profile, project, gpu_type,"
                " gpu_count, equivalents, devices, device_keys, host, rate_per_hour, minimum_seconds, queued_seconds,"
                " started_at, ready_at, last_seen_at, stopped_at, stop_reason, pending_reason, stopped_by, util_sum,"
                " util_samples, energy_wh, warned, borrowed) VALUES (:sid, 0, 'ann', '', 'p', '', :t, :g, :g, '', '',"
                " '', 2.0, 60, 0, :s, :r, :e, :e, 'user', '', '', 0, 0, 0, '', false)"),
                {"sid": f"s{i}", "t": "A100" if gpus else "", "g": gpus, "s": start, "r": start if gpus else None,
                 "e": start + dt.timedelta(hours=hours)})
    # settled as 0007-0009 did: the charge and the sums, no text
    with db.engine.begin() as c:
        c.execute(sa.text("UPDATE gpulab_usage SET charged_until = stopped_at, charged_gpu_seconds = 1, charged_cost = 1"))
        c.execute(sa.text("INSERT INTO gpulab_usage_totals (user_name, gpu_seconds, cost) VALUES ('ann', 3, 3)"))
    db.upgrade()
    with db.read() as s:
        rows = s.scalars(sa.select(UsageRecord)).all()
        assert [r.charged_until for r in rows] == [None] * 3
        assert s.execute(sa.text("SELECT count(*) FROM gpulab_usage_totals")).scalar() == 0
    assert settling.settle(db) == 3
    with db.read() as s:
        rows = s.scalars(sa.select(UsageRecord).order_by(UsageRecord.id)).all()
        assert [r.charged_gpu_seconds for r in rows] == [7200.0, 3600.0, 0.0]
        assert [r.report_head.split(",")[0] for r in rows[:2]] == ["ann", "ann"] and rows[2].report_head == ""
        assert s.execute(sa.text("SELECT gpu_seconds FROM gpulab_usage_totals")).scalar() == 10800.0
    db.dispose()
