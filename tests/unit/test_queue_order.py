"""Start estimates for waiting requests (the order and who starts: test_queue_discipline.py)."""

import datetime as dt

from hub_plugins.queue.order import Running, Waiting, estimate_start, typical_duration

T0 = dt.datetime(2026, 11, 22, 12, tzinfo=dt.timezone.utc)
M = dt.timedelta(minutes=1)


def w(i, user, minutes_ago, count=1, recent=0.0, types=("A100-80GB",)):
    return Waiting(i, user, T0 - minutes_ago * M, count, types, recent)


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
    assert typical_duration([dt.timedelta(minutes=m) for m in (10, 30, 90) * 4]) == dt.timedelta(minutes=30)
    # too few to go by (a new hub's tries of a minute): an hour, not "starting soon"
    assert typical_duration([dt.timedelta(minutes=1)] * 9) == dt.timedelta(hours=1)
    assert typical_duration([]) == dt.timedelta(hours=1)
