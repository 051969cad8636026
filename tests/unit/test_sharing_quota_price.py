"""A share weighs 1/N GPU in quotas, prices, charges and availability (pure, tables)."""

import datetime as dt
from fractions import Fraction

import pytest

from hub_plugins.accounting.pricing import Pricing, charge
from hub_plugins.gpu.availability import availability
from hub_plugins.gpu.simulated import parse_spec
from hub_plugins.quota import Ask, QuotaConfig, ServerUse, check, resolve
from hub_plugins.spawn.messages import capacity_message
from hub_plugins.store.allocator import NoCapacity

NOW = dt.datetime(2026, 11, 29, 12, tzinfo=dt.timezone.utc)
INV = parse_spec("1xH200-141GB+shared(4), 1xH200-141GB")
SHARE = INV.of_type("H200-141GB:shared")[0]


@pytest.mark.parametrize(
    "rates, count, hourly",
    [
        ({"H200-141GB": 4.0}, 1, 1.0),  # a share costs its weight of the GPU's rate
        ({"H200-141GB": 4.0}, 2, 2.0),  # two shares of one GPU: half of it
        ({"H200-141GB": 4.0, "H200-141GB:shared": 1.5}, 1, 1.5),  # a rate of its own wins
        ({"*": 2.0}, 1, 0.5),  # the default rate, weighted the same way
    ],
)
def test_share_prices(rates, count, hourly):
    pricing = Pricing.from_config({"rates": rates})
    assert pricing.hourly(SHARE.gpu_type, count, SHARE.weight) == pytest.approx(hourly)


def test_a_share_hour_is_a_quarter_gpu_hour():
    got = charge(started_at=NOW, ended_at=NOW + dt.timedelta(hours=1), ready=True,
                 equivalents=SHARE.weight, rate_per_hour=1.0, minimum_seconds=60)
    assert (got.seconds, got.gpu_seconds, got.cost) == (3600, 900.0, 1.0)


QUOTA = QuotaConfig.from_config({"default": {"max_gpus": 1, "max_servers": 8}})


def _ask(n_servers_held: int, count: int = 1):
    eff = resolve(QUOTA, "ann", [], NOW, ())
    usage = [ServerUse(f"s{i}", "minimal", SHARE.gpu_type, 1, Fraction(1, 4)) for i in range(n_servers_held)]
    return check(Ask("new", "minimal", SHARE.gpu_type, count, SHARE.weight * count), eff, usage)


@pytest.mark.parametrize("held, allowed", [(0, True), (1, True), (3, True), (4, False)])
def test_four_shares_fill_a_one_gpu_quota(held, allowed):
    assert _ask(held).allowed is allowed


def test_the_fifth_share_is_refused_in_fractions():
    d = _ask(4)
    assert d.reason == "gpus"
    assert d.message.startswith("You asked for 1 share of a shared H200-141GB (0.25 GPU); the default quota "
                                "allows 1 GPU at a time and you use 1 (servers 's0', 's1', 's2', 's3').")


def test_availability_counts_shares_and_says_what_one_is():
    taken = {f"localhost/gpu0/share{n}" for n in range(3)}
    rows = {a.gpu_type: a.as_dict() for a in availability(INV, taken)}
    assert rows["H200-141GB:shared"] == {
        "gpu_type": "H200-141GB:shared", "kind": "shared", "total": 4, "free": 1, "largest": 1, "host_max": 4,
        "gpu_equivalents_each": 0.25, "memory_gb": 35.2,
        "description": "1/4 of an H200: up to 35 GB, compute shared with 3 others",
    }
    assert rows["H200-141GB"]["free"] == 1 and rows["H200-141GB"]["description"] == "a whole H200 (141 GB)"


def test_a_capacity_refusal_names_sharing():
    taken = {f"localhost/gpu0/share{n}" for n in range(4)}
    msg = capacity_message(NoCapacity("H200-141GB:shared", 1, 0, 4), availability(INV, taken))
    assert msg == ("Not enough free GPU shares for 1 share of a shared H200-141GB right now: 0 of 4 shares are "
                   "free (each H200-141GB is shared by 4 servers). Free now: 1 H200-141GB GPU. Wait in the "
                   "queue, ask for another type (or a whole GPU), or try again later.")
