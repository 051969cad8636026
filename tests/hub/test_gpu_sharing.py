"""Shared GPUs through a real hub (local backend): four sharers of one GPU get the same device and
a quarter each of quota and price, a fifth is refused or waits with a message that names sharing,
and the memory caps reach the kernels' environment (read from /proc) and load there."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests

from hub_plugins.gpu.sharing import STARTUP_DIR
from tests.support.polling import gpulab_rows, wait_for

pytestmark = [pytest.mark.hub, pytest.mark.slow]

SHARED = {"gpu_type": "H200-141GB:shared", "gpus": 1, "profile": "minimal"}
# 141 GB / 4 = 36096 MiB a share, less the 512 MiB context reserve; as a fraction of the GPU
CAP_MIB, FRACTION = 36096 - 512, "0.2464"


@pytest.fixture(scope="module")
def hub(module_hub_factory):
    return module_hub_factory(
        inventory="2xH200-141GB",
        quotas={"default": {"max_gpus": 1, "max_servers": 3}},
        extra={"gpus": {"sharing": [{"gpus": [0], "shares": 4}]},
               "billing": {"rates": {"H200-141GB": 4.0}},
               "culler": {"enabled": False}},
    )


def proc_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def kernel_pid(kernel_id: str) -> int | None:
    """The kernel process: its command line names its connection file, kernel-<id>.json."""
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if f"kernel-{kernel_id}.json".encode() in (p / "cmdline").read_bytes():
                    return int(p.name)
            except OSError:
                continue
    return None


def test_four_sharers_one_gpu_a_quarter_each(hub):
    users = ["sa", "sb", "sc", "sd", "se"]
    hub.create_users(*users)
    servers = [hub.start_server(u, SHARED) for u in users[:4]]
    # the same physical GPU for all four, each on its own share
    assert [s["state"]["gpus"] for s in servers] == [["0"]] * 4
    assert sorted(s["state"]["gpu_devices"][0] for s in servers) == [f"localhost/gpu0/share{n}" for n in range(4)]
    for s in servers:
        env = proc_env(s["state"]["pid"])
        assert env["CUDA_VISIBLE_DEVICES"] == "0" and env["GPULAB_GPU_TYPE"] == "H200-141GB:shared"
        assert (env["GPULAB_GPU_SHARES"], env["GPULAB_GPU_SHARE"]) == ("4", "1/4")
        assert (env["GPULAB_GPU_MEMORY_LIMIT_MIB"], env["GPULAB_GPU_MEMORY_FRACTION"]) == (str(CAP_MIB), FRACTION)
    # a quarter of the quota and of the price each
    rows = {r["user_name"]: r for r in hub.servers_table()}
    assert all(rows[u]["equivalents"] == "1/4" for u in users[:4])
    usage = {r["user_name"]: r for r in gpulab_rows(hub, "gpulab_usage")}
    assert all(usage[u]["rate_per_hour"] == pytest.approx(1.0) for u in users[:4])  # 4.0 per GPU-hour / 4
    # the whole GPU 1 is untouched by sharers, and still free for a whole-GPU server
    assert {a["visible_id"] for a in hub.allocations()} == {"0"}
    # metrics in GPU-equivalents: four quarter shares held are one GPU of two
    hub.wait_service("billing", "metrics")
    m = hub.service("billing", "metrics").text
    assert 'gpulab_gpu_equivalents_allocated{gpu_type="H200-141GB:shared"} 1.0' in m
    assert 'gpulab_gpu_equivalents_total{gpu_type="H200-141GB"} 1.0' in m
    assert 'gpulab_gpus_allocated{gpu_type="H200-141GB:shared"} 4.0' in m
    assert 'gpulab_shares_per_gpu{gpu_type="H200-141GB:shared"} 4.0' in m

    # a fifth sharer: refused at once, with a message that names sharing
    st, body = hub.spawn("se", {**SHARED, "queue": False})
    assert st == 409, (st, body)
    assert "Not enough free GPU shares for 1 share of a shared H200-141GB right now: 0 of 4 shares are free " \
           "(each H200-141GB is shared by 4 servers)" in body["message"]
    assert "Free now: 1 H200-141GB GPU" in body["message"]

    # ... or it waits in the queue, and starts on the share a sharer gives back
    st, body = hub.spawn("se", {**SHARED, "queue": True})  # the API answers after slow_spawn_timeout
    assert st in (201, 202), (st, body)
    assert hub.server_model("se")["pending"] == "spawn"
    assert [(q["user_name"], q["gpu_types"]) for q in gpulab_rows(hub, "gpulab_queue")] == [("se", "H200-141GB:shared")]
    hub.stop_server("sb")
    fifth = hub.wait_ready("se", timeout=60)
    assert fifth["state"]["gpus"] == ["0"]
    assert fifth["state"]["gpu_devices"] == [next(s["state"]["gpu_devices"][0] for s in servers[1:2])]
    for u in ("sa", "sc", "sd", "se"):
        hub.stop_server(u)


def test_a_sharer_over_quota_is_told_in_fractions(hub):
    hub.create_users("sf")
    hub.start_server("sf", SHARED, server="one")
    hub.start_server("sf", {**SHARED, "gpus": 3}, server="three")  # 1/4 + 3/4: the whole quota
    st, body = hub.spawn("sf", SHARED, server="five")
    assert st == 403 and "You asked for 1 share of a shared H200-141GB (0.25 GPU)" in body["message"], body
    assert "allows 1 GPU at a time and you use 1" in body["message"]
    three = hub.server_model("sf", "three")["state"]
    assert three["gpus"] == ["0"] and len(three["gpu_devices"]) == 3  # three shares of one GPU, one device
    assert proc_env(three["pid"])["GPULAB_GPU_SHARE"] == "3/4"
    hub.stop_server("sf", "one")
    hub.stop_server("sf", "three")


def test_the_memory_cap_reaches_the_kernel_and_loads_there(hub):
    hub.create_users("sg")
    hub.start_server("sg", SHARED)
    token = hub.user_token("sg")
    r = requests.post(f"{hub.url}/user/sg/api/kernels", headers={"Authorization": f"token {token}"},
                      json={"name": "python3"}, timeout=60)
    assert r.status_code == 201, r.text
    pid = None

    def found():
        nonlocal pid
        pid = kernel_pid(r.json()["id"])
        return pid is not None

    wait_for(found, timeout=30, what="the kernel process")
    env = proc_env(pid)
    assert env["GPULAB_GPU_MEMORY_FRACTION"] == FRACTION == env["XLA_PYTHON_CLIENT_MEM_FRACTION"]
    assert env["GPULAB_GPU_MEMORY_LIMIT_MIB"] == str(CAP_MIB) and env["CUDA_VISIBLE_DEVICES"] == "0"
    assert env["PYTHONPATH"].split(":")[0] == str(STARTUP_DIR)
    # the kernel's own interpreter, in the kernel's own environment, loads the hook with that cap
    probe = ("import sys, sitecustomize as s; f = sys.meta_path[0]; "
             "print(json.dumps([s.__file__, type(f).__name__, sorted(f.hooks), s.caps_from_env(__import__('os').environ), "
             "'torch' in sys.modules]))")
    out = subprocess.run([f"/proc/{pid}/exe", "-c", "import json; " + probe], env=env, capture_output=True,
                         text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    file, finder, hooks, caps, torch_loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert file == str(STARTUP_DIR / "sitecustomize.py") and finder == "AfterImport"
    assert hooks == ["tensorflow", "torch"] and caps == [float(FRACTION), CAP_MIB] and not torch_loaded
    hub.stop_server("sg")


def test_whole_gpu_servers_do_not_get_share_variables(hub):
    hub.create_users("sh")
    s = hub.start_server("sh", {"gpus": 1, "gpu_type": "H200-141GB"})
    env = proc_env(s["state"]["pid"])
    assert s["state"]["gpus"] == ["1"] and "GPULAB_GPU_MEMORY_FRACTION" not in env
    assert str(STARTUP_DIR) not in env.get("PYTHONPATH", "")
    hub.stop_server("sh")
