"""Pricing and budgets over windows, table-driven."""

import datetime as dt
from fractions import Fraction

import pytest

from hub_plugins.accounting.budgets import Period, Usage, by_day, status
from hub_plugins.accounting.pricing import Pricing, charge, money

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 10, 9, 0, tzinfo=UTC)  # a Tuesday
H = dt.timedelta(hours=1)


PRICING = Pricing.from_config({"rates": {"A100-80GB": 2.8, "H100-80GB:1g.10gb": 0.9, "*": 1.0},
                               "cpu_rate": 0.07, "minimum_charge_seconds": 60})


@pytest.mark.parametrize(
    "gpu_type, count, weight, hourly",
    [
        ("A100-80GB", 2, 1, 5.6),
        ("A100-80GB:1g.10gb", 1, Fraction(1, 7), 0.4),  # parent rate x weight
        ("A100-80GB:shared", 1, Fraction(1, 4), 0.7),
        ("H100-80GB:1g.10gb", 2, Fraction(1, 7), 1.8),  # its own rate
        ("V100-32GB", 1, 1, 1.0),  # the '*' rate
        ("", 0, 0, 0.07),  # CPU-only
    ],
)
def test_hourly(gpu_type, count, weight, hourly):
    assert PRICING.hourly(gpu_type, count, weight) == pytest.approx(hourly)


@pytest.mark.parametrize(
    "seconds, ready, charged, cost",
    [
        (0.2, True, 60, 5.6 / 60),  # minimum charge
        (59.0, True, 60, 5.6 / 60),
        (60.0, True, 60, 5.6 / 60),
        (60.1, True, 61, 5.6 * 61 / 3600),  # per second, rounded up
        (7200, True, 7200, 11.2),
        (300, False, 0, 0.0),  # a failed start is not charged
    ],
)
def test_charge(seconds, ready, charged, cost):
    c = charge(started_at=T0, ended_at=T0 + dt.timedelta(seconds=seconds), ready=ready,
               equivalents=2, rate_per_hour=5.6, minimum_seconds=60)
    assert c.seconds == charged and c.cost == pytest.approx(cost) and c.gpu_seconds == 2 * charged


def test_money_rounding():
    assert money(0.125) == 0.13 and money(0.124) == 0.12 and money(2.0049) == 2.0


def u(start, hours, eq=1.0, rate=2.0, end=True, ready=True):
    return Usage(start, start + hours * H if end else None, ready, eq, rate)


@pytest.mark.parametrize(
    "period, now, start",
    [
        ("week", T0, dt.datetime(2026, 11, 9, tzinfo=UTC)),
        ("month", T0, dt.datetime(2026, 11, 1, tzinfo=UTC)),
        ("rolling:7d", T0, T0 - 7 * 24 * H),
    ],
)
def test_window_start(period, now, start):
    assert Period.parse(period).start_of(now) == start


def test_bad_period():
    with pytest.raises(ValueError):
        Period.parse("fortnight")


def test_month_budget_spans_boundary_and_says_when_to_retry():
    # 10 h before the month started + 6 h inside it, 2 GPUs
    usages = [u(dt.datetime(2026, 10, 31, 20, tzinfo=UTC), 10, eq=2)]
    now = dt.datetime(2026, 11, 1, 6, tzinfo=UTC)
    st = status(12, usages, Period.parse("month"), "gpu_hours", now)
    assert st.used == pytest.approx(12) and st.left == pytest.approx(0) and st.spent
    assert st.retry_at == dt.datetime(2026, 12, 1, tzinfo=UTC) == st.resets_at


def test_running_servers_are_charged_as_they_run():
    now = T0 + 3 * H
    st = status(10, [u(T0, 0, eq=2, end=False)], Period.parse("week"), "gpu_hours", now)
    assert st.used == pytest.approx(6)  # 2 GPUs x 3 h so far
    st = status(5, [u(T0, 0, eq=2, end=False)], Period.parse("week"), "gpu_hours", now)
    assert st.spent


def test_money_unit():
    st = status(100, [u(T0, 2, rate=5.6)], Period.parse("week"), "money", T0 + 3 * H)
    assert st.used == pytest.approx(11.2)


def test_rolling_window_retry_at():
    # 30 GPU-hours 9 days ago and 10 GPU-hours 2 days ago, limit 35 over 10 days
    now = T0
    usages = [u(now - 9 * 24 * H, 30), u(now - 2 * 24 * H, 10)]
    st = status(35, usages, Period.parse("rolling:10d"), "gpu_hours", now)
    assert st.used == pytest.approx(40) and st.spent
    # below 35 once 5+ of the old 30 hours have left the window: 9 days + 5 h + after now - 10 d
    expect = now - 9 * 24 * H + 5 * H + 10 * 24 * H
    assert abs((st.retry_at - expect).total_seconds()) <= 2


def test_credits_refill_daily_up_to_the_cap():
    day0 = dt.datetime(2026, 11, 1, tzinfo=UTC)
    p = Period.parse("credits", refill_per_day=10)
    # spend 50 on day 0, nothing after: 50 left, then +10/day capped at 100
    usages = [u(day0 + H, 1, eq=50)]
    assert status(100, usages, p, "gpu_hours", day0 + 12 * H, day0).left == pytest.approx(50)
    assert status(100, usages, p, "gpu_hours", day0 + 3 * 24 * H + H, day0).left == pytest.approx(80)
    assert status(100, usages, p, "gpu_hours", day0 + 9 * 24 * H, day0).left == pytest.approx(100)
    # overspend: -15 on day 0 -> retry after 2 refills
    st = status(100, [u(day0 + H, 1, eq=115)], p, "gpu_hours", day0 + 20 * H, day0)
    assert st.spent and st.retry_at == day0 + 2 * 24 * H


def test_unlimited_and_by_day():
    st = status(None, [u(T0, 2)], Period.parse("month"), "gpu_hours", T0 + 5 * H)
    assert st.left is None and not st.spent and st.used == pytest.approx(2)
    days = by_day([u(T0 + 11 * H, 6, eq=1)], "gpu_hours", T0, T0 + 30 * H)
    assert [round(v, 3) for _, v in days] == [4.0, 2.0]  # 20:00-02:00 split at midnight


def test_minimum_charge_counts_in_windows():
    st = status(1, [u(T0, 0.001)], Period.parse("week"), "gpu_hours", T0 + H)
    assert st.used == pytest.approx(60 / 3600)


def test_a_fresh_minimum_charge_counts_in_full_at_once():
    st = status(1, [u(T0, 0.001, end=False)], Period.parse("week"), "gpu_hours", T0 + dt.timedelta(seconds=10))
    assert st.used == pytest.approx(60 / 3600)
