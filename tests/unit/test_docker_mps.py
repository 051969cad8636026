"""The Docker backend's MPS parts for shared GPUs, as plain data (the daemon, its pipe volume,
what a sharer's container gets). Against a real engine: tests/docker/test_docker_sharing.py."""

from __future__ import annotations

import pytest

from hub_plugins.gpu.sharing import ShareCaps
from hub_plugins.gpu.simulated import parse_spec
from hub_plugins.spawners.docker import mps, spec

SHARE = parse_spec("1xH200-141GB+shared(4)").devices[0]


def test_one_daemon_per_gpu_named_after_it():
    d = mps.with_pipe(mps.daemon_for("gpulab", "hub1", SHARE.uuid, SHARE.visible_id, 4), "ab12")
    assert d.name.startswith("gpulab-mps-gpu") and d.volume == f"{d.name}-pipe-ab12"
    assert spec.DOCKER_NAME_RE.match(d.name) and len(d.name) <= 40
    assert d.labels == {spec.LABEL_HUB: "hub1", spec.LABEL_KIND: "mps", mps.LABEL_MPS: SHARE.uuid,
                        mps.LABEL_PIPE: d.volume}
    other = parse_spec("2xH200-141GB+shared(4)").devices[4]
    assert mps.daemon_for("gpulab", "hub1", other.uuid, other.visible_id, 4).name != d.name
    with pytest.raises(spec.SpecError):
        mps.daemon_for("Bad Prefix", "hub1", SHARE.uuid, "0", 4)


def test_the_daemon_holds_the_gpu_in_an_ipc_namespace_of_its_own():
    d = mps.with_pipe(mps.daemon_for("gpulab", "hub1", SHARE.uuid, "0", 4), "ab12")
    c = mps.daemon_create(d, mps.MPSSettings(enabled=True), "gpulab/base:0.1.0")
    assert c["command"] == ["nvidia-cuda-mps-control", "-f"] and c["user"] == "1000"
    assert c["image"] == "gpulab/base:0.1.0" and c["name"] == d.name
    assert c["environment"]["CUDA_MPS_PIPE_DIRECTORY"] == mps.PIPE_DIR and c["environment"]["NVIDIA_VISIBLE_DEVICES"] == "0"
    hc = c["host_config"]
    assert (hc["ipc_mode"], hc["network_mode"], hc["shm_size"]) == ("shareable", "none", 4 * 2**30)
    assert hc["binds"] == {d.volume: {"bind": mps.PIPE_DIR, "mode": "rw"}}
    assert [r["DeviceIDs"] for r in hc["device_requests"]] == [["0"]]
    assert mps.pipe_volume(d, mps.MPSSettings(uid=1234))["driver_opts"]["o"] == "uid=1234,gid=1234,mode=0700,size=16m"


@pytest.mark.parametrize(
    "caps, env",
    [
        (ShareCaps(4, 1, 141 * 1024), {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "25", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=35584M"}),
        (ShareCaps(4, 2, 141 * 1024), {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "50", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=71680M"}),
        (ShareCaps(3, 1, 0), {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "33"}),  # memory unknown: no pin limit
    ],
)
def test_a_sharers_part_of_the_gpu(caps, env):
    assert mps.client_env(caps.thread_percentage, caps.memory_mib) == {"CUDA_MPS_PIPE_DIRECTORY": mps.PIPE_DIR, **env}


def test_a_sharer_joins_its_daemon():
    d = mps.with_pipe(mps.daemon_for("gpulab", "hub1", SHARE.uuid, "0", 4), "ab12")
    res = spec.Resources(mem_limit=2**30, shm_size=2**29)
    host = spec.host_config(volume="gpulab-home-ann", home="/home/jovyan", gpus=["0"], res=res)
    joined = mps.client_host_config(d, host)
    assert joined["ipc_mode"] == f"container:{d.name}" and "shm_size" not in joined
    assert joined["binds"][d.volume] == {"bind": mps.PIPE_DIR, "mode": "rw"}
    assert joined["binds"]["gpulab-home-ann"] == host["binds"]["gpulab-home-ann"]
    assert joined["device_requests"] == host["device_requests"]  # the sharer still needs the device
