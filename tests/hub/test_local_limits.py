"""Local servers held to their limits by the kernel (issue 10), on a real hub as root with the
host's cgroups: a server that allocates past its memory limit is stopped alone and the hub says
why; a CPU-bound server stays within its CPU share; a server cannot open another server's GPU
device node (fake nodes made with mknod, major 195 as NVIDIA's). Servers are a stand-in
(tests/support/probe_server.py) that allocates, spins or opens a node when asked; every outcome is
read from outside: /proc, the hub's tables, its log.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import require
from tests.support.hubproc import Hub
from tests.support.polling import gpulab_rows, wait_for

pytestmark = [pytest.mark.hub, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MEM_MB, CPUS = 160, 0.25


def cgroups_available() -> bool:
    from hub_plugins.isolation import Enforcer

    return os.geteuid() == 0 and Enforcer.detect("cgroup").controls == {"memory", "cpu", "devices"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory, local_backend):
    require(cgroups_available(), "root with the cgroup memory, cpu and devices controllers")
    # readable by the system users servers run as: a world-searchable directory
    root = Path(tempfile.mkdtemp(prefix="gpulab-limits-", dir="/tmp"))
    root.chmod(0o755)
    env = root / "probe-env" / "bin"
    env.mkdir(parents=True)
    exe = env / "jupyterhub-singleuser"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {ROOT / 'tests/support/probe_server.py'} \"$@\"\n")
    exe.chmod(0o755)
    for d in (root / "probe-env", env):
        d.chmod(0o755)
    profiles = root / "profiles"
    profiles.mkdir(mode=0o755)
    (profiles / "probe.yaml").write_text(
        f"display_name: Probe\ndefault: true\nlocal:\n  prefix: {root / 'probe-env'}\n"
        f"gpus:\n  counts: [0, 1]\nresources:\n  cpu_limit: {CPUS}\n  mem_limit: {MEM_MB}M\n")
    devices = root / "dev"
    devices.mkdir(mode=0o755)
    for i in range(4):  # what the NVIDIA driver creates: character devices 195:<index>
        os.mknod(devices / f"nvidia{i}", 0o666 | 0o020000, os.makedev(195, i))
        os.chmod(devices / f"nvidia{i}", 0o666)
    hub = Hub(tmp_path_factory.mktemp("hub"), inventory="4xA100-80GB", local=dict(local_backend),
              profiles_dir=str(profiles), quotas={"default": {"max_gpus": 1, "max_servers": 2}},
              extra={"culler": {"enabled": False}, "default_profile": "probe"})
    hub.start(extra_args=[f"--LocalGPUSpawner.device_dir={devices}"])
    hub.devices = devices
    hub.create_users("ann", "bob")
    yield hub
    hub.close()
    import shutil

    shutil.rmtree(root, ignore_errors=True)


def probe(hub, user, what, timeout=30, **params):
    return requests.get(f"{hub.url}/user/{user}/api/probe/{what}", params=params, timeout=timeout,
                        headers={"Authorization": f"token {hub.token}"})


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (what the kernel charged it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_startup_says_what_is_enforced(lab):
    log = lab.log_path.read_text()
    assert "local servers are held to their memory, CPU, GPU devices limits (cgroup v1)" in log


def test_a_server_cannot_open_another_servers_gpu(lab):
    lab.start_server("ann", {"gpus": 1})
    lab.start_server("bob", {"gpus": 1})
    mine = {u: lab.server_model(u)["state"]["gpus"][0] for u in ("ann", "bob")}
    assert mine["ann"] != mine["bob"]
    for user, other in (("ann", "bob"), ("bob", "ann")):
        own = probe(lab, user, "open", path=f"{lab.devices}/nvidia{mine[user]}").json()
        theirs = probe(lab, user, "open", path=f"{lab.devices}/nvidia{mine[other]}").json()
        spare = probe(lab, user, "open", path=f"{lab.devices}/nvidia3").json()
        # its own node passes the kernel's device check (no NVIDIA driver answers here: ENXIO);
        # the others' are refused by the device cgroup before any driver is asked (EPERM)
        assert own["errno"] == "ENXIO", (user, own)
        assert theirs["errno"] == "EPERM" and spare["errno"] == "EPERM", (user, theirs, spare)
        assert probe(lab, user, "open", path="/dev/null").json()["ok"]
    lab.stop_server("ann")
    lab.stop_server("bob")
    # a CPU-only server opens no GPU at all
    lab.start_server("ann", {"gpus": 0})
    assert probe(lab, "ann", "open", path=f"{lab.devices}/nvidia0").json()["errno"] == "EPERM"
    lab.stop_server("ann")


def test_a_cpu_bound_server_stays_within_its_cpu_limit(lab):
    lab.start_server("ann", {"gpus": 0})
    pids = probe(lab, "ann", "spin", seconds=8, procs=2).json()["pids"]
    time.sleep(1.5)  # spinning
    t0, c0 = time.monotonic(), sum(cpu_seconds(p) for p in pids)
    time.sleep(4)
    share = (sum(cpu_seconds(p) for p in pids) - c0) / (time.monotonic() - t0)
    # two busy processes would take up to 2 CPUs; the CFS quota holds them to 0.25 together
    assert share <= CPUS * 1.2 + 0.02, share
    assert share > 0.05, share  # they did run
    lab.stop_server("ann")


def test_a_memory_hog_is_stopped_alone_and_the_hub_says_why(lab):
    lab.start_server("bob", {"gpus": 0})
    bob_pid = lab.server_model("bob")["state"]["pid"]
    lab.start_server("ann", {"gpus": 1})
    ann_pid = lab.server_model("ann")["state"]["pid"]
    try:  # the kernel stops it mid-request: the proxy answers an error, or the connection drops
        r = probe(lab, "ann", "alloc", mb=4 * MEM_MB)
        assert r.status_code >= 500, r.text
    except requests.RequestException:
        pass
    wait_for(lambda: not alive(ann_pid), timeout=30, what="ann's server to be stopped by the kernel")
    lab.wait_gone("ann", timeout=30)
    # alone: bob's server and the hub live on
    assert alive(bob_pid) and lab.proc.poll() is None and lab.server_model("bob")["ready"]
    # the hub says why: in its log, and as the stop reason of the usage record
    wait_for(lambda: "used more than its memory limit of 160 MB" in lab.log_path.read_text(), timeout=20,
             what="the hub to log why")
    rec = gpulab_rows(lab, "gpulab_usage", "ann")[-1]  # the latest server of ann's
    assert rec["stopped_at"] and rec["gpu_count"] == 1 and rec["stop_reason"] == "oom", rec
    assert not [a for a in lab.allocations() if a["user_name"] == "ann"]  # its GPU is free again
    lab.stop_server("bob")
