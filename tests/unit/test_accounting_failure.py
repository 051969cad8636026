"""When usage cannot be read, billing.on_accounting_failure decides: open lets the spawn go (and
counts it), closed refuses it. A real failure: the usage table is gone."""

from pathlib import Path

import pytest
import sqlalchemy as sa
from traitlets.config import Config

from hub_plugins.accounting.keeper import BudgetRefused
from hub_plugins.core import GPULab
from hub_plugins.spawn.request import parse

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def core(tmp_path):
    def make(policy, budget=100):
        GPULab.clear_instance()
        c = Config()
        c.GPULab.inventory_spec = "2xA100-80GB"
        c.GPULab.db_url = f"sqlite:///{tmp_path}/{policy}.sqlite"
        c.GPULab.profiles_dir = str(ROOT / "profiles")
        c.GPULab.quotas = {"default": {"max_gpus": 2, "budget": budget}}
        c.GPULab.billing = {"on_accounting_failure": policy}
        core = GPULab(config=c)
        with core.db.engine.begin() as conn:  # accounting breaks
            conn.execute(sa.text("DROP TABLE gpulab_usage"))
        return core

    yield make
    GPULab.clear_instance()


def test_fail_open_lets_the_spawn_check_pass_and_counts_it(core):
    c = core("open")
    req = parse({"gpus": 1}, c.catalog, c.inventory().types)
    c.check_budget("ann", c.effective("ann", []), req, "")
    assert c.fail_open_count == 1


def test_fail_closed_refuses(core):
    c = core("closed")
    req = parse({"gpus": 1}, c.catalog, c.inventory().types)
    with pytest.raises(BudgetRefused, match="Usage accounting is unavailable right now"):
        c.check_budget("ann", c.effective("ann", []), req, "")


def test_without_a_budget_nothing_is_read_so_nothing_fails(core):
    """No personal budget: the check reads no usage (a spawn's check used to read the person's
    whole period of records for a budget that is not there), so even 'closed' lets it go."""
    c = core("closed", budget=None)
    req = parse({"gpus": 1}, c.catalog, c.inventory().types)
    c.check_budget("ann", c.effective("ann", []), req, "")
    assert c.fail_open_count == 0
