"""Simulated inventories parse exactly like real ones look; bad specs name their problem."""

from fractions import Fraction

import pytest

from hub_plugins.gpu.devices import format_devices, format_equivalents, kind_of, mig_slices
from hub_plugins.gpu.simulated import SpecError, parse_spec


@pytest.mark.parametrize(
    "spec, types",
    [
        ("4xA100-80GB", {"A100-80GB": 4}),
        ("A100-80GB", {"A100-80GB": 1}),
        ("2xA100-80GB, 2xH100-80GB", {"A100-80GB": 2, "H100-80GB": 2}),
        ("1xA100-80GB+mig(3g.40gb,2*2g.20gb)", {"A100-80GB:3g.40gb": 1, "A100-80GB:2g.20gb": 2}),
        ("1xA100-80GB+shared(4)", {"A100-80GB:shared": 4}),
        ("2xH100-80GB@n1, 2xH100-80GB@n2", {"H100-80GB": 4}),
        ("none", {}),
    ],
)
def test_spec_types(spec, types):
    assert parse_spec(spec).summary() == types


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("", "empty"),
        ("4xA100-80GB+mig(7g.80gb,1g.10gb)", "8 compute slices"),
        ("1xT4+mig(1g.10gb)", "does not support MIG"),
        ("1xA100-80GB+mig(2x.10gb)", "MIG profile"),
        ("1xA100-80GB+shared(1)", "from 2 to 64"),
        ("0xA100-80GB", "at least 1"),
        ("4xA100-80GB, ??", "cannot read '??'"),
        ("1xA100-80GB+mig(1g.10gb", "unbalanced"),
        ("99999xA100-80GB", "typo"),
    ],
)
def test_bad_specs(spec, fragment):
    with pytest.raises(SpecError) as e:
        parse_spec(spec)
    assert fragment in str(e.value)


def test_devices_look_like_nvml():
    inv = parse_spec("2xA100-80GB, 1xA100-80GB+mig(3g.40gb, 4*1g.10gb)")
    gpu0, gpu1 = inv.of_type("A100-80GB")
    assert (gpu0.index, gpu1.index) == (0, 1)
    assert gpu0.visible_id == "0" and gpu0.uuid.startswith("GPU-") and gpu0.memory_mib == 80 * 1024
    migs = inv.of_type("A100-80GB:1g.10gb")
    assert len(migs) == 4 and all(m.index == 2 for m in migs)
    # MIG instances are addressed by UUID in CUDA_VISIBLE_DEVICES
    assert all(m.visible_id.startswith("MIG-") and m.visible_id == m.uuid for m in migs)
    assert len({m.uuid for m in migs}) == 4
    assert migs[0].weight == Fraction(1, 7) and inv.of_type("A100-80GB:3g.40gb")[0].weight == Fraction(3, 7)
    assert inv.gpu_equivalents() == 2 + Fraction(7, 7)
    # the same spec always yields the same ids (state survives restarts)
    assert parse_spec("2xA100-80GB, 1xA100-80GB+mig(3g.40gb, 4*1g.10gb)") == inv


def test_free_excludes_taken_and_external():
    inv = parse_spec("4xA100-80GB")
    inv = type(inv)(inv.devices, external_busy=frozenset({"localhost/gpu3"}))
    assert [d.index for d in inv.free({"localhost/gpu0"})] == [1, 2]


def test_duplicate_keys_rejected():
    inv = parse_spec("2xA100-80GB")
    with pytest.raises(ValueError):
        type(inv)(inv.devices + inv.devices[:1])


@pytest.mark.parametrize(
    "value, text",
    [(1, "1 GPU"), (2, "2 GPUs"), (Fraction(2, 7), "0.29 GPU"), (Fraction(3, 2), "1.50 GPU")],
)
def test_format_equivalents(value, text):
    assert format_equivalents(value) == text


def test_names():
    assert mig_slices("3g.40gb") == 3
    assert kind_of("A100-80GB") == "gpu" and kind_of("A100-80GB:1g.10gb") == "mig"
    assert kind_of("A100-80GB:shared") == "shared"
    assert format_devices("A100-80GB:1g.10gb", 2) == "2 A100-80GB:1g.10gb MIG slices"
    assert format_devices("A100-80GB:shared", 1) == "1 share of a shared A100-80GB"
    assert format_devices("A100-80GB:shared", 2) == "2 shares of a shared A100-80GB"
