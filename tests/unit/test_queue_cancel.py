"""Cancelling waiting requests (billing API, queue page): a request whose spawn still waits is
marked (the spawn ends at its next look); one nobody looks at any more is removed at once."""

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from traitlets.config import Config

from hub_plugins.core import GPULab
from hub_plugins.store.allocator import Owner
from hub_plugins.store.models import QueueEntry

ROOT = Path(__file__).resolve().parents[2]
Q = QueueEntry.__table__


@pytest.fixture
def core(tmp_path):
    GPULab.clear_instance()
    c = Config()
    c.GPULab.inventory_spec = "2xA100-80GB"
    c.GPULab.db_url = f"sqlite:///{tmp_path}/gpulab.sqlite"
    c.GPULab.profiles_dir = str(ROOT / "profiles")
    c.GPULab.queue_settings = {"lost_after_seconds": 60}
    yield GPULab(config=c)
    GPULab.clear_instance()


def states(core):
    with core.db.engine.connect() as conn:
        return {r.server_name: r.state for r in conn.execute(sa.select(Q.c.server_name, Q.c.state))}


def test_cancel_marks_live_and_removes_stale(core):
    q = core.queue
    live, _ = q.enqueue(Owner(1, "ann", "live"), {}, ["A100-80GB"], 1)
    stale, _ = q.enqueue(Owner(1, "ann", "lost"), {}, ["A100-80GB"], 1)
    q.enqueue(Owner(2, "bob", ""), {}, ["A100-80GB"], 1)
    old = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(minutes=5)
    with core.db.engine.begin() as conn:
        conn.execute(sa.update(Q).where(Q.c.id == stale).values(heartbeat_at=old))
    assert q.cancel("ann") == 2  # all of ann's, not bob's
    assert states(core) == {"live": "cancelled", "": "waiting"}
    assert q.cancel("ann") == 0  # nothing waiting any more
