"""Servers of the real PyTorch and VS Code environments, spawned through a real hub (local
backend, system users when root, MLflow on): in a kernel started through the server's own REST
API torch and mlflow import and a matmul runs, with CUDA_VISIBLE_DEVICES = the allocation; the GPU
dashboard and resource-usage endpoints answer; VS Code answers at /user/<name>/vscode/ for its
owner only, sits in the JupyterLab launcher, and its processes see the server's GPUs and MLflow."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import requests
import websocket

from tests.support.hubproc import TEST_ENVS_DIR, Hub
from tests.support.kernel import Kernel

pytestmark = [pytest.mark.hub, pytest.mark.envs, pytest.mark.slow]


@pytest.fixture(scope="module")
def hub(tmp_path_factory, local_backend):
    h = Hub(tmp_path_factory.mktemp("hub"), inventory="2xA100-80GB", local=dict(local_backend),
            quotas={"default": {"max_gpus": 2, "max_servers": 2}},
            extra={"mlflow": {"enabled": True}, "environments": {"dir": TEST_ENVS_DIR}})
    h.start(timeout=180)  # four services (MLflow's server among them) start one after the other
    h.create_users("ann", "bob", "eve")
    yield h
    h.close()


def proc_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(p.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


MATMUL = """
import json, os, sys, torch, torchvision, mlflow
a = torch.randn(256, 256)
b = a @ a.T
print(json.dumps({"cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "torch": torch.__version__,
                  "torchvision": torchvision.__version__, "mlflow": mlflow.__version__,
                  "symmetric": bool(torch.allclose(b, b.T, atol=1e-3)), "python": sys.executable,
                  "tracking": os.environ.get("MLFLOW_TRACKING_URI"), "cuda": torch.cuda.is_available()}))
"""


@pytest.fixture(scope="module")
def torch_server(hub, pytorch_env):
    return hub.start_server("ann", {"profile": "pytorch", "gpus": 1}, timeout=240)


def test_pytorch_server_runs_torch_in_a_kernel(hub, pytorch_env, torch_server):
    server = torch_server
    gpus = server["state"]["gpus"]
    assert len(gpus) == 1
    token = hub.user_token("ann")
    kernel = Kernel(f"{hub.url}/user/ann/", token)
    try:
        out = json.loads(kernel.run(MATMUL).strip().splitlines()[-1])
    finally:
        kernel.close()
    spec = pytorch_env.environment
    assert out["cuda_visible"] == ",".join(gpus)  # the allocation, in the kernel itself
    assert out["torch"].split("+")[0] == spec.version("torch")
    assert out["torchvision"].split("+")[0] == spec.version("torchvision")
    assert out["mlflow"] == spec.version("mlflow-skinny") and out["symmetric"]
    assert out["python"].startswith(os.path.join(TEST_ENVS_DIR, spec.dirname) + "/")
    assert out["tracking"] == f"{hub.url}/services/mlflow"


def test_gpu_dashboard_and_resource_usage_answer(hub, torch_server):
    token = hub.user_token("ann")
    h = {"Authorization": f"token {token}"}
    r = requests.get(f"{hub.url}/user/ann/api/metrics/v1", headers=h, timeout=30)
    assert r.status_code == 200 and r.json()["rss"] > 0, r.text[:300]
    r = requests.get(f"{hub.url}/user/ann/nvdashboard/accelerators/check", headers=h, timeout=30)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["ngpus"] == 0  # no GPU on this machine; on a GPU host: tools/gpu_check.py
    ws = websocket.create_connection(f"{hub.url.replace('http', 'ws', 1)}/user/ann/nvdashboard/cpu_resource",
                                     header=[f"Authorization: token {token}"], timeout=30)
    try:
        first = json.loads(ws.recv())
        sample = json.loads(ws.recv())  # the dashboard's CPU panel streams samples
    finally:
        ws.close()
    assert first == {"status": "connected"} and 0 <= sample["cpu_utilization"] <= 100, sample
    assert sample["memory_usage"] > 0
    # another user's token gets nothing from ann's server
    eve = {"Authorization": f"token {hub.user_token('eve')}"}
    assert requests.get(f"{hub.url}/user/ann/api/metrics/v1", headers=eve, timeout=30).status_code in (403, 404)


def wait_code_server(url: str, headers: dict, timeout: float = 120) -> requests.Response:
    """jupyter-server-proxy starts code-server on the first request."""
    deadline = time.monotonic() + timeout
    while True:
        r = requests.get(url, headers=headers, timeout=60)
        if r.status_code == 200 or time.monotonic() > deadline:
            return r
        time.sleep(1)


def test_vscode_for_its_owner_only(hub, vscode_env):
    server = hub.start_server("bob", {"profile": "vscode", "gpus": 1}, timeout=240)
    gpus = server["state"]["gpus"]
    bob = {"Authorization": f"token {hub.user_token('bob')}"}
    # the profile's default URL: the server sends its owner to VS Code
    r = requests.get(f"{hub.url}/user/bob/", headers=bob, allow_redirects=False, timeout=30)
    assert r.status_code == 302 and r.headers["Location"].rstrip("?").endswith("/user/bob/vscode/"), r.headers
    r = wait_code_server(f"{hub.url}/user/bob/vscode/", bob)
    assert r.status_code == 200 and "code-server" in r.text.lower(), (r.status_code, r.text[:500])
    # in the JupyterLab launcher (jupyter-server-proxy's list of launcher entries)
    r = requests.get(f"{hub.url}/user/bob/server-proxy/servers-info", headers=bob, timeout=30)
    entries = {s["name"]: s for s in r.json()["server_processes"]}
    assert entries["vscode"]["launcher_entry"]["title"] == "VS Code", entries
    # another user is refused, with or without a token
    eve = {"Authorization": f"token {hub.user_token('eve')}"}
    r = requests.get(f"{hub.url}/user/bob/vscode/", headers=eve, allow_redirects=False, timeout=30)
    assert r.status_code in (403, 404) and "code-server" not in r.text.lower(), (r.status_code, r.text[:300])
    r = requests.get(f"{hub.url}/user/bob/vscode/", allow_redirects=False, timeout=30)
    assert r.status_code == 302 and "/hub/" in r.headers["Location"], (r.status_code, r.headers)
    # code-server (and so its terminals) runs with the server's GPUs and MLflow settings, on a
    # private socket (no TCP port another user of this machine could connect to)
    procs = [p for p in descendants(server["state"]["pid"]) if "code-server" in cmdline(p)]
    assert procs, "code-server is not running under bob's server"
    env = proc_env(procs[0])
    assert env["CUDA_VISIBLE_DEVICES"] == ",".join(gpus) and env["GPULAB_GPUS"] == ",".join(gpus)
    assert env["MLFLOW_TRACKING_URI"] == f"{hub.url}/services/mlflow" and env["MLFLOW_TRACKING_PASSWORD"]
    assert any("--socket" in cmdline(p) for p in procs) and not any("--port" in cmdline(p) for p in procs)
