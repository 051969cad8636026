"""Placement: whole GPUs of the requested type, fewest fragments first (table-driven)."""

import pytest

from hub_plugins.gpu.placement import fragments, most_on_one_host, place, runs
from hub_plugins.gpu.simulated import parse_spec


def free_of(spec, taken_indices=(), host="localhost"):
    inv = parse_spec(spec)
    taken = {d.key for d in inv.devices if d.host == host and d.index in taken_indices and d.kind == "gpu"}
    return inv, inv.free(taken)


def test_runs():
    assert runs([5, 0, 1, 3, 4, 7]) == [[0, 1], [3, 4, 5], [7]]


@pytest.mark.parametrize(
    "taken, count, expect",
    [
        ((), 1, [0]),  # lowest first
        ((), 2, [0, 1]),
        ((), 4, [0, 1, 2, 3]),
        ((1,), 1, [0]),  # fill the 1-gap, keep 2-7 whole
        ((1,), 2, [0, 2]),  # use up the lone {0}, trim 2..7 from its end: one fragment left
        ((3,), 2, [0, 1]),  # {0,1,2} {4..7}: trimming an end keeps two fragments, chosen contiguous
        ((1, 2), 1, [0]),
        ((2, 5), 2, [0, 1]),  # runs {0,1} {3,4} {6,7}: shortest fitting, lowest
        ((0, 2, 4, 6), 2, [1, 3]),  # no run fits: use up singles, leaving fewest fragments
        ((0, 1, 2, 3, 4, 5, 6), 1, [7]),
        ((0, 1, 2, 3, 4, 5, 6, 7), 1, None),
        ((0, 1, 2, 3, 4), 4, None),
    ],
)
def test_whole_gpu_placement(taken, count, expect):
    _, free = free_of("8xA100-80GB", taken)
    got = place(free, count, "A100-80GB")
    assert (None if got is None else [d.index for d in got]) == expect


def test_fewest_fragments_property():
    """Whatever is taken, no other choice of devices would leave fewer free fragments."""
    import itertools

    inv = parse_spec("8xA100-80GB")
    for mask in range(256):
        taken = {d.key for d in inv.devices if mask >> d.index & 1}
        free = inv.free(taken)
        for count in (1, 2, 3):
            got = place(free, count, "A100-80GB")
            if len(free) < count:
                assert got is None
                continue
            left = fragments(d for d in free if d not in got)
            best = min(fragments(d for d in free if d not in combo)
                       for combo in itertools.combinations(free, count))
            assert left == best, (sorted(taken), count, [d.index for d in got])


def test_type_is_respected():
    inv = parse_spec("2xA100-80GB, 2xH100-80GB")
    got = place(inv.free(set()), 2, "H100-80GB")
    assert [d.gpu_type for d in got] == ["H100-80GB", "H100-80GB"]
    assert place(inv.free(set()), 3, "H100-80GB") is None
    assert place(inv.free(set()), 1, "V100-32GB") is None
    assert place(inv.free(set()), 0, "H100-80GB") == ()


def test_one_host_best_fit():
    inv = parse_spec("8xA100-80GB@big, 2xA100-80GB@small")
    got = place(inv.free(set()), 2, "A100-80GB")
    assert {d.host for d in got} == {"small"}  # keep the big host whole
    got = place(inv.free(set()), 3, "A100-80GB")
    assert {d.host for d in got} == {"big"}
    # 4 free in total but at most 2 on one host: does not fit
    inv = parse_spec("2xA100-80GB@a, 2xA100-80GB@b")
    assert place(inv.free(set()), 3, "A100-80GB") is None
    assert most_on_one_host(inv.free(set()), "A100-80GB") == 2


def test_mig_packs_onto_used_gpu():
    inv = parse_spec("2xA100-80GB+mig(7*1g.10gb)")
    first = place(inv.free(set()), 1, "A100-80GB:1g.10gb")
    taken = {d.key for d in first}
    second = place(inv.free(taken), 2, "A100-80GB:1g.10gb")
    assert {d.index for d in first} == {d.index for d in second} == {0}  # GPU 1 stays whole


def test_shared_gpu_shares():
    inv = parse_spec("2xA100-80GB+shared(2)")
    a = place(inv.free(set()), 1, "A100-80GB:shared")
    b = place(inv.free({d.key for d in a}), 1, "A100-80GB:shared")
    assert a[0].index == b[0].index == 0 and a[0].key != b[0].key


def test_large_host_strategy_is_also_optimal(monkeypatch):
    """The enumeration-free path (used for hosts with many GPUs) finds the same optimum."""
    import itertools
    import random

    import hub_plugins.gpu.placement as placement

    monkeypatch.setattr(placement, "EXACT_LIMIT", 0)
    inv = parse_spec("12xA100-80GB")
    rng = random.Random(7)
    for _ in range(400):
        taken = {d.key for d in inv.devices if rng.random() < 0.45}
        free = inv.free(taken)
        count = rng.randint(1, 4)
        got = placement.place(free, count, "A100-80GB")
        if len(free) < count:
            assert got is None
            continue
        left = fragments(d for d in free if d not in got)
        best = min(fragments(d for d in free if d not in c) for c in itertools.combinations(free, count))
        assert left == best


def test_one_gpu_is_the_enumeration_s_choice():
    """A single GPU is chosen in one pass: the very GPU the enumeration of every choice picks
    (fewest fragments left, then lowest index), on random free sets of hosts up to 16 GPUs."""
    import random

    from hub_plugins.gpu.placement import _whole_gpus, runs

    rng = random.Random(11)
    for _ in range(2000):
        inv = parse_spec(f"{rng.randint(1, 16)}xA100-80GB")
        free = [d for d in inv.devices if rng.random() < 0.6] or list(inv.devices[:1])
        ix = sorted(d.index for d in free)
        want = min(ix, key=lambda i: (len(runs(set(ix) - {i})), i))
        assert [d.index for d in _whole_gpus(free, 1)] == [want], ix


# -- shares of shared GPUs ------------------------------------------------------------------------
SHARED = "3xH200-141GB+shared(4), 1xH200-141GB"  # GPUs 0-2 shared 4 ways, GPU 3 whole


def _taken(inv, shares: dict[int, int]) -> set[str]:
    """{GPU index: shares held} -> the keys of that many shares of each GPU."""
    return {f"localhost/gpu{i}/share{n}" for i, k in shares.items() for n in range(k)}


@pytest.mark.parametrize(
    "held, count, expect",
    [
        ({}, 1, (0, 1)),  # nothing shared yet: the lowest GPU
        ({1: 1}, 1, (1, 1)),  # fill the partly shared GPU before opening another
        ({0: 3, 1: 1}, 1, (0, 1)),  # the fullest one that still has room
        ({0: 4, 1: 2}, 1, (1, 1)),
        ({0: 3, 1: 2}, 2, (1, 2)),  # all of a server's shares on one GPU: GPU 0 has only 1 left
        ({0: 3, 1: 3, 2: 3}, 2, None),  # 3 shares free, but never 2 on one GPU
        ({0: 4, 1: 4, 2: 4}, 1, None),  # every share taken (the whole GPU 3 is not for sharers)
        ({}, 4, (0, 4)),
    ],
)
def test_share_placement(held, count, expect):
    inv = parse_spec(SHARED)
    got = place(inv.free(_taken(inv, held)), count, "H200-141GB:shared")
    if expect is None:
        assert got is None
        return
    assert {d.index for d in got} == {expect[0]} and len(got) == expect[1] == count


def test_whole_gpus_never_land_on_shared_ones():
    inv = parse_spec(SHARED)
    free = inv.free(set())
    assert [d.index for d in place(free, 1, "H200-141GB")] == [3]
    assert place(free, 2, "H200-141GB") is None  # the shared GPUs are not whole GPUs
    assert most_on_one_host(free, "H200-141GB") == 1


def test_the_largest_share_request_is_per_gpu():
    inv = parse_spec(SHARED)
    free = inv.free(_taken(inv, {0: 1, 1: 2, 2: 3}))
    assert most_on_one_host(free, "H200-141GB:shared") == 3


def test_a_schedulers_shares_count_per_node():
    """SLURM shards / device-plugin replicas: the scheduler picks the GPU, gpulab only the node."""
    from dataclasses import replace

    inv = parse_spec("2xH200-141GB+shared(4)@n1")
    cluster = [replace(d, addressable=False, index=i) for i, d in enumerate(inv.devices)]
    assert most_on_one_host(cluster, "H200-141GB:shared") == 8
    assert len(place(cluster, 6, "H200-141GB:shared")) == 6
