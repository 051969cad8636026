"""Shared GPUs on the Docker backend, against a real engine through a real hub, with MPS on: one
MPS daemon container per shared GPU, the sharers in its IPC namespace with its pipe directory,
their parts of the GPU in their environment, the memory-cap hook loading in the image's Python,
and the daemon gone with the last sharer.

No GPU here: the engine's NVIDIA hook is the stub of tests/docker (device requests start), and
the driver's ``nvidia-cuda-mps-control -f`` is stood in for by a command that does what the
sharers can observe of it here: it stays in the foreground and makes its control pipe."""

from __future__ import annotations

import secrets
import time

import pytest

from hub_plugins.spawners.docker import mps
from tests.docker.conftest import docker_hub_config

pytestmark = [pytest.mark.docker, pytest.mark.hub]

STAND_IN = ["sh", "-c", 'mkfifo "$CUDA_MPS_PIPE_DIRECTORY/control" && exec sleep infinity']
SHARED = {"profile": "minimal", "gpus": 1, "gpu_type": "H200-141GB:shared"}


@pytest.fixture(scope="module")
def prefix():
    return f"gs{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def hub(module_hub_factory, docker_engine, base_image, prefix):
    extra = docker_hub_config(docker_engine, prefix, mps={"enabled": True, "control_command": STAND_IN})
    extra.update(gpus={"sharing": [{"gpus": [0], "shares": 4}]}, culler={"enabled": False})
    return module_hub_factory(inventory="2xH200-141GB", quotas={"default": {"max_gpus": 1, "max_servers": 2}},
                              extra=extra)


def env_of(c) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in c.attrs["Config"]["Env"])


def sh(c, cmd: str) -> str:
    r = c.exec_run(["sh", "-c", cmd])
    assert r.exit_code == 0, r.output
    return r.output.decode().strip()


def daemons(client, prefix):
    return [c for c in client.containers.list(all=True, filters={"label": "gpulab.kind=mps"})
            if c.name.startswith(f"{prefix}-mps-")]


def test_sharers_join_one_mps_daemon_per_gpu(hub, docker_client, prefix):
    hub.create_users("ann", "bob", "cy")
    a = hub.start_server("ann", SHARED)
    b = hub.start_server("bob", SHARED)
    c = hub.start_server("cy", {"profile": "minimal", "gpus": 1, "gpu_type": "H200-141GB"})  # a whole GPU
    assert a["state"]["gpus"] == b["state"]["gpus"] == ["0"] and c["state"]["gpus"] == ["1"]
    (daemon,) = daemons(docker_client, prefix)
    ca, cb, cc = (docker_client.containers.get(f"{prefix}-{u}") for u in ("ann", "bob", "cy"))

    # the daemon: the GPU, an IPC namespace to share, no network, the sharers' one UID
    hc = daemon.attrs["HostConfig"]
    assert daemon.status == "running" and (hc["IpcMode"], hc["NetworkMode"]) == ("shareable", "none")
    assert daemon.attrs["Config"]["User"] == "1000" and [r["DeviceIDs"] for r in hc["DeviceRequests"]] == [["0"]]
    assert daemon.labels[mps.LABEL_MPS] == ca.labels[mps.LABEL_MPS] == cb.labels[mps.LABEL_MPS]

    for s in (ca, cb):
        assert s.attrs["HostConfig"]["IpcMode"] in (f"container:{daemon.name}", f"container:{daemon.id}")
        assert s.attrs["Config"]["User"] == "1000"
        env = env_of(s)
        assert env["CUDA_MPS_PIPE_DIRECTORY"] == mps.PIPE_DIR
        assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25"
        assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=35584M"
        assert env["GPULAB_GPU_MEMORY_FRACTION"] == "0.2464" and env["PYTHONPATH"].startswith("/opt/gpulab/startup")
        assert {m["Destination"] for m in s.attrs["Mounts"]} >= {mps.PIPE_DIR, "/opt/gpulab/startup"}
    # what the sharers really see: the daemon's control pipe, its IPC namespace, the hook loading
    assert sh(ca, f"ls -l {mps.PIPE_DIR}/control").startswith("p")
    ipc = {x.name: sh(x, "readlink /proc/1/ns/ipc") for x in (daemon, ca, cb, cc)}
    assert ipc[ca.name] == ipc[cb.name] == ipc[daemon.name] != ipc[cc.name]
    assert sh(ca, "python3 -c 'import sys, sitecustomize; print(type(sys.meta_path[0]).__name__)'") == "AfterImport"
    # the whole-GPU server is in none of it
    assert not cc.attrs["HostConfig"]["IpcMode"].startswith("container:") and "CUDA_MPS_PIPE_DIRECTORY" not in env_of(cc)

    # the daemon stays while a sharer is left, and goes (with its pipe volume) with the last
    hub.stop_server("ann")
    assert [d.name for d in daemons(docker_client, prefix)] == [daemon.name]
    hub.stop_server("bob")
    assert daemons(docker_client, prefix) == []
    assert [v for v in docker_client.volumes.list() if v.name == daemon.labels[mps.LABEL_PIPE]] == []
    hub.stop_server("cy")


def test_a_dead_daemon_is_replaced_for_the_next_sharer(hub, docker_client, prefix):
    hub.create_users("dee", "eve")
    hub.start_server("dee", SHARED)
    (first,) = daemons(docker_client, prefix)
    first.kill()  # as a fatal fault would end it
    hub.start_server("eve", SHARED)
    (second,) = daemons(docker_client, prefix)
    assert second.status == "running" and second.id != first.id
    # with a fresh pipe directory: dee keeps the dead daemon's, eve joins the new one's
    assert second.labels[mps.LABEL_PIPE] != first.labels[mps.LABEL_PIPE]
    hub.stop_server("dee")
    hub.stop_server("eve")
    assert daemons(docker_client, prefix) == []


def test_a_daemon_left_without_sharers_is_swept_by_the_reconcile(hub, docker_client, prefix, base_image):
    """A hub that died between a daemon's start and its sharer's container leaves a daemon no
    sharer uses: the Docker runtime's reconcile round removes it, the used daemon stays."""
    hub.create_users("fay")
    hub.start_server("fay", SHARED)
    (used,) = daemons(docker_client, prefix)
    left = docker_client.containers.run(
        base_image, ["sleep", "600"], name=f"{prefix}-mps-left", detach=True, network_mode="none",
        labels={"gpulab.hub": used.labels["gpulab.hub"], "gpulab.kind": "mps", mps.LABEL_MPS: "GPU-left-1"},
    )
    deadline = time.monotonic() + 60  # the reconcile runs every poll interval (2 s here)
    while time.monotonic() < deadline and left.name in {c.name for c in daemons(docker_client, prefix)}:
        time.sleep(0.5)
    assert [c.name for c in daemons(docker_client, prefix)] == [used.name]
    hub.stop_server("fay")
    assert daemons(docker_client, prefix) == []
