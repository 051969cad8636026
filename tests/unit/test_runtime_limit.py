"""quotas.*.max_runtime_hours: a longer runtime is refused, and a request that names none (a
REST call) gets the limit, so the culler stops it there. Through the real core and SQLite."""

from pathlib import Path

import pytest
import sqlalchemy as sa
from traitlets.config import Config

from hub_plugins.core import GPULab
from hub_plugins.spawn.request import STANDARD_EXTRAS, RequestError, parse
from hub_plugins.store.allocator import Owner
from hub_plugins.store.models import UsageRecord

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def core(tmp_path):
    GPULab.clear_instance()
    c = Config()
    c.GPULab.inventory_spec = "2xA100-80GB"
    c.GPULab.db_url = f"sqlite:///{tmp_path}/gpulab.sqlite"
    c.GPULab.profiles_dir = str(ROOT / "profiles")
    c.GPULab.quotas = {"default": {"max_gpus": 2, "max_servers": 3},
                       "groups": {"short": {"max_gpus": 2, "max_runtime_hours": 2}}}
    yield GPULab(config=c)
    GPULab.clear_instance()


def runtime_of(core, spawn_id):
    t = UsageRecord.__table__
    with core.db.engine.connect() as conn:
        return conn.execute(sa.select(t.c.runtime_limit_s).where(t.c.spawn_id == spawn_id)).scalar_one()


def request(core, options):
    return parse(options, core.catalog, core.inventory().types, extra_keys=STANDARD_EXTRAS)


def test_no_runtime_asked_gets_the_limit(core):
    alloc = core.allocate(Owner(1, "ann", "a"), request(core, {"gpus": 1}), ["short"])
    assert runtime_of(core, alloc.spawn_id) == 2 * 3600


def test_a_shorter_runtime_is_kept_and_a_longer_one_refused(core):
    alloc = core.allocate(Owner(1, "ann", "b"), request(core, {"gpus": 1, "runtime": "1h"}), ["short"])
    assert runtime_of(core, alloc.spawn_id) == 3600
    with pytest.raises(RequestError, match=r"runtime of 3 h; group 'short' allows at most 2 h"):
        core.allocate(Owner(1, "ann", "c"), request(core, {"gpus": 1, "runtime": "3h"}), ["short"])


def test_no_limit_no_runtime(core):
    alloc = core.allocate(Owner(2, "bob", ""), request(core, {"gpus": 0}), [])
    assert runtime_of(core, alloc.spawn_id) is None
