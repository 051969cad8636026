"""The overhead benchmark's own noise (``benchmarks/spawn_overhead.py``: stock against itself,
its rounds split in two halves): pure arithmetic, checked with small tables."""

import pytest

from benchmarks.spawn_overhead import CPU, LATENCIES, noise


def _round(spawn: float, stop: float, cpu: float = 10.0) -> dict:
    # one round: every spawn and stop the same, so a round's percentiles are those values
    return {"spawn": [spawn] * 10, "stop": [stop] * 10, "spawn_wall": 1.0, "stop_wall": 1.0,
            "failed": [], "spawn_cpu": cpu * 10 / 1000, "stop_cpu": cpu * 10 / 1000}


@pytest.mark.parametrize("rounds, key, expected", [
    # the same rounds: nothing moved
    ([_round(1.0, 2.0), _round(1.0, 2.0)], "stop_p50", 1.0),
    # two rounds: the one split, either way round
    ([_round(1.0, 2.0), _round(1.1, 2.0)], "spawn_p50", 1.1),
    ([_round(1.1, 2.0), _round(1.0, 2.0)], "spawn_p50", 1.1),
    # four rounds, three splits ({0,1}, {0,2}, {0,3} against the rest): the median of 3.0, 1.0, 1.0
    ([_round(1.0, 1.0), _round(1.0, 1.0), _round(3.0, 3.0), _round(3.0, 3.0)], "stop_p99", 1.0),
    # the hub's CPU per server is split the same way
    ([_round(1.0, 1.0, cpu=10.0), _round(1.0, 1.0, cpu=14.0)], "stop_cpu_ms", 1.4),
])
def test_noise_is_how_far_one_half_of_stocks_rounds_is_from_the_other(rounds, key, expected):
    assert noise(rounds)[key] == pytest.approx(expected)


def test_noise_needs_two_rounds_and_covers_the_latencies_and_the_cpu():
    assert noise([_round(1.0, 1.0)]) is None
    assert set(noise([_round(1.0, 1.0), _round(1.0, 1.0)])) == set(LATENCIES + CPU)
