"""What hub tests share besides the hub itself: waiting for a condition, and reading gpulab's own
tables (typed through their SQLAlchemy definitions, so datetimes are datetimes on every database)."""

from __future__ import annotations

import time

import sqlalchemy as sa


def wait_for(cond, timeout: float = 60, what: str = "condition", every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def gpulab_rows(hub, table: str, user: str | None = None, order_by: str | None = "id") -> list[dict]:
    """Rows of one of gpulab's tables (``gpulab_usage``, ``gpulab_events``, ``gpulab_queue``, ...)."""
    from hub_plugins.store import models

    t = models.Base.metadata.tables[table]
    q = sa.select(t).order_by(t.c[order_by]) if order_by else sa.select(t)
    if user is not None:
        q = q.where(t.c.user_name == user)
    eng = sa.create_engine(hub.gpulab_db_url)
    try:
        with eng.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]
    finally:
        eng.dispose()
