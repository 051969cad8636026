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
