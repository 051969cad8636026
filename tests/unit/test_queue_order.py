"""Queue decisions, table-driven: fair-share order, backfill, starvation protection, estimates."""

import datetime as dt

import pytest

from hub_plugins.queue.order import (Running, Waiting, estimate_start, may_start, order, position,
                                     typical_duration)

T0 = dt.datetime(2026, 11, 22, 12, tzinfo=dt.timezone.utc)
M = dt.timedelta(minutes=1)


def w(i, user, minutes_ago, count=1, recent=0.0, types=("A100-80GB",)):
    return Waiting(i, user, T0 - minutes_ago * M, count, types, recent)


def test_fair_share_then_fcfs():
    items = [w(1, "heavy", 30, recent=50), w(2, "light", 5, recent=1), w(3, "new", 10), w(4, "new2", 20)]
    assert [x.id for x in order(items)] == [4, 3, 2, 1]


@pytest.mark.parametrize(
    "free, backfill, head_age, expect",
    [
        (1, True, 5, {2}),  # head needs 4, only 1 free: the 1-GPU request backfills
        (1, False, 5, set()),  # strict order: nobody starts until 4 are free
        (1, True, 30, set()),  # head waited > 10 min: GPUs are kept for it
        (4, True, 5, {1}),  # head fits: it goes, nobody else
        (0, True, 5, set()),
    ],
)
def test_who_may_start(free, backfill, head_age, expect):
    ordered = order([w(1, "big", head_age, count=4), w(2, "small", 1, count=1), w(3, "small2", 0, count=1)])

    def fits(item):
        return item.count <= free

    got = {i.id for i in ordered if may_start(i.id, ordered, fits, T0, backfill)}
    assert got == expect


def test_position():
    ordered = order([w(1, "a", 3), w(2, "b", 2)])
    assert position(2, ordered) == 2 and position(9, ordered) == 0


def test_estimate():
    typical = dt.timedelta(minutes=60)
    running = [Running("A100-80GB", 2, T0 - 50 * M), Running("A100-80GB", 1, T0 - 10 * M,
                                                                 runtime_limit=dt.timedelta(minutes=20))]
    item = w(5, "x", 1, count=2)
    # 0 free: the 1-GPU server ends at its runtime limit (10 min), the 2-GPU one after 60 min
    assert estimate_start(item, [], running, {}, typical, T0) == T0 + 10 * M
    # one request for 1 GPU ahead: 3 GPUs needed, the last frees at +10 min... then +10 min twice
    assert estimate_start(item, [w(4, "y", 2, count=1)], running, {}, typical, T0) == T0 + 10 * M
    assert estimate_start(item, [], running, {"A100-80GB": 2}, typical, T0) == T0  # fits now
    assert estimate_start(w(6, "z", 1, count=4), [], running, {}, typical, T0) is None  # never
    assert typical_duration([dt.timedelta(minutes=m) for m in (10, 30, 90)]) == dt.timedelta(minutes=30)
