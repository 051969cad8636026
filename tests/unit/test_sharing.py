"""Shared GPUs (pure, tables): the sharing rules of gpulab.yaml, the one split both inventory
paths (NVML and simulated) go through, what a share promises, and how it is described."""

from fractions import Fraction

import pytest

from hub_plugins.gpu.devices import Inventory
from hub_plugins.gpu.nvml import discover
from hub_plugins.gpu.sharing import (
    CONTEXT_RESERVE_MIB, ShareCaps, apply_sharing, caps_of, describe, rules_from_config, share_gpu,
)
from hub_plugins.gpu.simulated import SpecError, parse_spec
from tests.support.fakenvml import FakeNVML

UUID0 = "GPU-6A1C43E8-0F7E-4D2B-9A55-0F3C2D1E0A01"


def shared_summary(inv: Inventory) -> dict:
    """{GPU index: shares (1 = whole, 'mig' = MIG)} for one host."""
    out: dict = {}
    for d in inv.devices:
        out[d.index] = "mig" if d.kind == "mig" else int(1 / d.weight) if d.kind == "shared" else 1
    return out


@pytest.mark.parametrize(
    "rules, expect",
    [
        ([], {0: 1, 1: 1, 2: 1, 3: 1}),
        ([{"gpus": "A100-80GB", "shares": 4}], {0: 4, 1: 4, 2: 1, 3: 1}),
        ([{"gpus": "*", "shares": 2}], {0: 2, 1: 2, 2: 2, 3: 2}),
        ([{"gpus": [2], "shares": 3}], {0: 1, 1: 1, 2: 3, 3: 1}),
        ([{"gpus": ["GPU-" + UUID0[4:].lower()], "shares": 7}], {0: 7, 1: 1, 2: 1, 3: 1}),  # hex in any case
        # first match wins: GPU 0 by index, GPU 1 by type, the H100s by '*'
        ([{"gpus": [0], "shares": 2}, {"gpus": "A100-80GB", "shares": 2}, {"gpus": "*", "shares": 4}],
         {0: 2, 1: 2, 2: 4, 3: 4}),
        ([{"gpus": [0, 3], "shares": 2}], {0: 2, 1: 1, 2: 1, 3: 2}),
    ],
)
def test_rules_choose_the_gpus(rules, expect):
    # GPUs 0, 1: A100; 2, 3: H100 (as NVML would report them)
    inv = discover(FakeNVML([
        {"name": "NVIDIA A100-SXM4-80GB", "uuid": UUID0, "memory_mib": 81920, "mig": None},
        {"name": "NVIDIA A100-SXM4-80GB", "uuid": "GPU-1", "memory_mib": 81920, "mig": None},
        {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-2", "memory_mib": 81559},
        {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-3", "memory_mib": 81559},
    ]))
    got = apply_sharing(inv, rules_from_config(rules))
    assert shared_summary(got) == expect
    assert got.gpu_equivalents() == 4  # sharing never changes how much GPU there is


@pytest.mark.parametrize(
    "item, fragment",
    [
        ({"gpus": "A100-80GB", "shares": 1}, "from 2 to 64"),
        ({"gpus": "A100-80GB", "shares": 65}, "from 2 to 64"),
        ({"gpus": "A100-80GB:1g.10gb", "shares": 2}, "name the GPU type ('A100-80GB')"),
        ({"gpus": [-1], "shares": 2}, "neither a GPU index"),
        ({"gpus": ["MIG-abc"], "shares": 2}, "neither a GPU index"),
        ({"gpus": [], "shares": 2}, "names no GPU"),
        ({"shares": 2}, "gpus.sharing[0]"),
    ],
)
def test_bad_rules_name_the_item(item, fragment):
    with pytest.raises(ValueError) as e:
        rules_from_config([item])
    assert fragment in str(e.value) and "gpus.sharing[0]" in str(e.value)


def test_simulated_and_discovered_gpus_share_through_the_same_split():
    """`+shared(4)` and a rule on a discovered (or simulated whole) GPU give equal devices."""
    simulated = parse_spec("1xA100-80GB+shared(4)")
    by_rule = apply_sharing(parse_spec("1xA100-80GB"), rules_from_config([{"gpus": [0], "shares": 4}]))
    assert by_rule.devices == simulated.devices
    d = simulated.devices[0]
    assert [s.key for s in simulated.devices] == [f"localhost/gpu0/share{n}" for n in range(4)]
    assert (d.weight, d.memory_mib, d.visible_id, d.gpu_type) == (Fraction(1, 4), 20 * 1024, "0", "A100-80GB:shared")
    assert len({s.uuid for s in simulated.devices}) == 1  # every sharer gets the same physical GPU


def test_mig_is_left_alone_and_said_so():
    inv = discover(FakeNVML([
        {"name": "NVIDIA A100-SXM4-80GB", "uuid": "GPU-a", "memory_mib": 81920, "mig": [
            {"name": "NVIDIA A100-SXM4-80GB MIG 3g.40gb", "uuid": "MIG-1", "memory_mib": 40192}]},
        {"name": "NVIDIA A100-SXM4-80GB", "uuid": "GPU-b", "memory_mib": 81920, "mig": None},
    ]))
    got = apply_sharing(inv, rules_from_config([{"gpus": [0, 1], "shares": 2}]))
    assert shared_summary(got) == {0: "mig", 1: 2}
    assert "GPU 0 is in MIG mode, so it is not shared" in got.note


def test_one_number_of_shares_per_type():
    inv = parse_spec("3xA100-80GB")
    got = apply_sharing(inv, rules_from_config([{"gpus": [0], "shares": 4}, {"gpus": "A100-80GB", "shares": 2}]))
    assert shared_summary(got) == {0: 4, 1: 1, 2: 1}
    assert "GPU 1 (A100-80GB) is not shared 2 ways" in got.note and "(4, as GPU 0)" in got.note
    with pytest.raises(SpecError, match="different numbers of shares"):
        parse_spec("1xA100-80GB+shared(4), 1xA100-80GB+shared(2)")


def test_a_cluster_scheduler_shares_its_own_gpus():
    from dataclasses import replace

    inv = parse_spec("2xA100-80GB")
    cluster = replace(inv, devices=tuple(replace(d, addressable=False) for d in inv.devices))
    assert apply_sharing(cluster, rules_from_config([{"gpus": "*", "shares": 4}])) == cluster


@pytest.mark.parametrize(
    "devices",
    [
        # one GPU offered whole and shared: a whole-GPU server would land among sharers
        lambda: parse_spec("1xA100-80GB").devices + share_gpu(parse_spec("1xA100-80GB").devices[0], 2),
        # MIG slices and shares on one GPU
        lambda: parse_spec("1xA100-80GB+mig(3g.40gb)").devices + share_gpu(parse_spec("1xA100-80GB").devices[0], 2),
    ],
)
def test_an_inventory_offers_each_gpu_one_way(devices):
    with pytest.raises(ValueError, match="one GPU is offered whole, as MIG slices or as shares"):
        Inventory(tuple(devices()))


@pytest.mark.parametrize(
    "shares, held, memory, cap_mib, fraction, threads",
    [
        (4, 1, 143771, 143771 // 4 - CONTEXT_RESERVE_MIB, 0.2464, 25),  # H200 as NVML reports it
        (4, 2, 81920, 40960 - CONTEXT_RESERVE_MIB, 0.4937, 50),
        (2, 1, 16384, 8192 - CONTEXT_RESERVE_MIB, 0.4687, 50),
        (64, 1, 16384, 256, 0.0156, 1),  # tiny shares keep a floor (and a thread each)
        (3, 1, 0, 0, 0.3333, 33),  # memory unknown: no cap, the fraction is the share
    ],
)
def test_share_caps(shares, held, memory, cap_mib, fraction, threads):
    caps = ShareCaps(shares, held, memory)
    assert (caps.memory_mib, caps.memory_fraction, caps.thread_percentage) == (cap_mib, fraction, threads)
    assert caps.fraction == Fraction(held, shares)


def test_caps_of_an_allocation():
    inv = parse_spec("2xH200-141GB+shared(4), 1xH200-141GB")
    one, two = inv.devices[:2], inv.devices[:1] + inv.devices[4:5]
    assert caps_of(one) == ShareCaps(4, 2, 141 * 1024)
    assert caps_of(two) is None  # shares of two GPUs (placement never does this)
    assert caps_of(inv.of_type("H200-141GB")) is None and caps_of([]) is None


@pytest.mark.parametrize(
    "spec, gpu_type, text",
    [
        ("1xH200-141GB+shared(4)", "H200-141GB:shared", "1/4 of an H200: up to 35 GB, compute shared with 3 others"),
        ("1xT4-16GB+shared(2)", "T4-16GB:shared", "1/2 of a T4: up to 8.0 GB, compute shared with 1 other"),
        ("1xA100-80GB+mig(1g.10gb)", "A100-80GB:1g.10gb", "a 1g.10gb MIG slice of an A100 (10 GB, 1/7 of its compute)"),
        ("1xL4-24GB", "L4-24GB", "a whole L4 (24 GB)"),
        ("1xRTX-4090-24GB+shared(3)", "RTX-4090-24GB:shared", "1/3 of an RTX-4090: up to 8.0 GB, compute shared with 2 others"),
    ],
)
def test_descriptions(spec, gpu_type, text):
    d = parse_spec(spec).of_type(gpu_type)[0]
    assert describe(d.gpu_type, d.weight, d.memory_mib, d.kind) == text


def test_the_core_shares_its_inventory_by_the_rules():
    from hub_plugins.core import GPULab
    from hub_plugins.settings.errors import ConfigError

    core = GPULab(inventory_spec="2xA100-80GB", sharing=[{"gpus": [1], "shares": 4}])
    assert core.inventory().summary() == {"A100-80GB": 1, "A100-80GB:shared": 4}
    core.sharing = []
    assert core.inventory().summary() == {"A100-80GB": 2}
    with pytest.raises(ConfigError, match=r"gpus.sharing\[0\]"):
        GPULab(sharing=[{"gpus": [], "shares": 4}])
