"""The real nvidia-ml-py, no stand-in: on a host without a driver the inventory is empty and says
why (the hub then serves CPU profiles); on a GPU host it lists what nvidia-smi lists."""

import shutil
import subprocess

import pytest

from hub_plugins.gpu.nvml import discover


def nvidia_smi_gpus():
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid,memory.total", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        return None
    return [tuple(x.strip() for x in line.split(",")) for line in out.stdout.strip().splitlines()]


@pytest.mark.gpu
def test_real_nvml_matches_nvidia_smi_or_reports_no_driver():
    inv = discover()
    smi = nvidia_smi_gpus()
    if smi is None:  # no driver here: empty, with the reason the hub logs
        assert inv.devices == () and "no NVIDIA driver" in inv.note
        return
    assert {d.index for d in inv.devices} == {int(i) for i, _, _ in smi}  # every GPU, MIG or not
    by_index = {int(i): u for i, u, _ in smi}
    for d in inv.devices:
        if d.kind != "mig":  # a MIG-mode GPU is listed as its instances (MIG-... UUIDs)
            assert d.uuid == by_index[d.index]
    for d in inv.devices:
        assert d.memory_mib > 0 and d.gpu_type
