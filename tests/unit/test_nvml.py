"""NVML discovery against a stand-in NVML (the hardware edge); real output is in the README."""

from fractions import Fraction

import pytest

from hub_plugins.gpu.nvml import discover, nominal_gb, short_type
from tests.support.fakenvml import FakeNVML


@pytest.mark.parametrize(
    "model, mib, expect",
    [
        ("NVIDIA A100-SXM4-80GB", 81920, "A100-80GB"),
        ("NVIDIA A100-PCIE-40GB", 40960, "A100-40GB"),
        ("NVIDIA H100 80GB HBM3", 81559, "H100-80GB"),
        ("NVIDIA H200", 143771, "H200-141GB"),
        ("NVIDIA L4", 23034, "L4-24GB"),
        ("Tesla T4", 15360, "T4-16GB"),
        ("Tesla V100-SXM2-32GB", 32768, "V100-32GB"),
        ("NVIDIA GeForce RTX 4090", 24564, "RTX-4090-24GB"),
        ("NVIDIA RTX A6000", 49140, "RTX-A6000-48GB"),
    ],
)
def test_short_type(model, mib, expect):
    assert short_type(model, mib) == expect


def test_nominal_gb_falls_back_to_ceiling():
    assert nominal_gb(70 * 1024) == 70


def test_no_driver_gives_empty_inventory_with_reason():
    inv = discover(FakeNVML([], fail_init="NVML Shared Library Not Found"))
    assert inv.devices == () and "no NVIDIA driver" in inv.note


def test_whole_gpus_and_mig():
    nv = FakeNVML([
        {"name": "NVIDIA A100-SXM4-80GB", "uuid": "GPU-aaa", "memory_mib": 81920, "mig": None},
        {"name": "NVIDIA A100-SXM4-80GB", "uuid": "GPU-bbb", "memory_mib": 81920, "mig": [
            {"name": "NVIDIA A100-SXM4-80GB MIG 3g.40gb", "uuid": "MIG-1", "memory_mib": 40192},
            None,
            {"name": "NVIDIA A100-SXM4-80GB MIG 1g.10gb", "uuid": "MIG-2", "memory_mib": 9728},
        ]},
        {"name": "Tesla T4", "uuid": "GPU-ccc", "memory_mib": 15360},  # not MIG-capable
    ])
    inv = discover(nv)
    assert nv.initialised == 0  # shut down after the scan
    assert inv.summary() == {"A100-80GB": 1, "A100-80GB:3g.40gb": 1, "A100-80GB:1g.10gb": 1, "T4-16GB": 1}
    mig = inv.of_type("A100-80GB:1g.10gb")[0]
    assert (mig.index, mig.uuid, mig.visible_id, mig.weight) == (1, "MIG-2", "MIG-2", Fraction(1, 7))
    assert mig.key == "localhost/gpu1/mig2"
    t4 = inv.of_type("T4-16GB")[0]
    assert (t4.index, t4.visible_id, t4.uuid) == (2, "2", "GPU-ccc")


def test_mig_on_without_instances_offers_nothing_on_that_gpu():
    inv = discover(FakeNVML([{"name": "NVIDIA H100 80GB HBM3", "uuid": "G", "memory_mib": 81559, "mig": []}]))
    assert inv.devices == ()


def test_metrics_readers(tmp_path):
    import json

    from hub_plugins.gpu.metrics import NVMLReader, PrometheusReader, SimulatedReader
    from hub_plugins.gpu.simulated import parse_spec

    inv = parse_spec("2xA100-80GB, 1xA100-80GB+mig(7*1g.10gb)")
    f = tmp_path / "m.json"
    f.write_text(json.dumps({"localhost/gpu0": {"util": 3, "power_w": 60}, "1": 88}))
    got = SimulatedReader(f).read(list(inv.devices))
    assert got["localhost/gpu0"].util == 3 and got["localhost/gpu0"].power_w == 60
    assert got["localhost/gpu1"].util == 88  # by visible id
    assert got["localhost/gpu2/mig0"].util is None  # unknown, never "idle"

    nv = FakeNVML([{"name": "NVIDIA A100-SXM4-80GB", "uuid": "GPU-a", "memory_mib": 81920, "util": 42}])
    nvinv = discover(nv)
    assert NVMLReader(nv).read(list(nvinv.devices))["localhost/gpu0"].util == 42

    resp = {"data": {"result": [
        {"metric": {"UUID": inv.devices[0].uuid}, "value": [0, "17"]},
        {"metric": {"UUID": inv.devices[1].uuid, "GPU_I_ID": "1"}, "value": [0, "99"]},
    ]}}
    pr = PrometheusReader("http://prom", fetch=lambda q: resp)
    out = pr.read(list(inv.devices[:2]))
    assert out[inv.devices[0].key].util == 17 and out[inv.devices[1].key].util is None

    def broken(q):
        raise OSError("down")

    assert PrometheusReader("http://prom", fetch=broken).read(list(inv.devices[:1]))[inv.devices[0].key].util is None
