"""The shared-GPU part of the real-hardware check: two PyTorch servers on one shared GPU.

    python tools/gpu_check_sharing.py [--profile pytorch] [--report sharing.json]

On a machine with an NVIDIA GPU, a real hub (local backend, ``gpus.inventory: auto``) shares GPU 0
two ways (``gpus.sharing``) and two users start the PyTorch profile on a share each. Checks:

1. both servers run on the same physical GPU (the UUID PyTorch reports is GPU 0's, for both);
2. each is held to its memory cap: PyTorch's per-process memory fraction is the one gpulab set
   (``GPULAB_GPU_MEMORY_FRACTION``, applied by the startup hook when CUDA initialises); an
   allocation within the cap succeeds, one beyond it fails with an out-of-memory error;
3. utilisation is attributed to the right server: while one kernel runs a matmul loop, the
   culler's samples (NVML per-process utilisation, attributed through /proc) show that server's
   share busy and the other's idle.

Without a GPU (the CPU path, runnable anywhere): a simulated H200 is shared instead and the
checks that need CUDA are reported as skipped; what remains is checked for real (both servers on
GPU 0 with their share's variables, the hook loaded in each kernel with its cap).

This is written to plug into the GPU check of the environments issue (``tools/gpu_check.py`` on
the ``envs`` branch): :func:`check_sharing` takes the hub, the inventory, a ``run(user, code)``
that returns a kernel's last stdout line as JSON, and ``record``; there, pass its ``kernel_json``
and ``record``. Standing alone, it runs kernels with the small client below. Prints one line per
check and exits 1 if one failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hub_plugins.gpu.nvml import discover  # noqa: E402
from tests.support.hubproc import Hub  # noqa: E402

RESULTS: list[dict] = []
THRESHOLD = 5  # culler.gpu_idle_threshold for the run

PROBE = """
import json, os, sys
out = {"visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "fraction": os.environ.get("GPULAB_GPU_MEMORY_FRACTION"),
       "share": os.environ.get("GPULAB_GPU_SHARE"), "hook": type(sys.meta_path[0]).__name__}
try:
    import torch
except ImportError:
    torch = None
out["torch"] = torch.__version__ if torch else None
if torch is not None and torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    out["uuid"] = str(p.uuid)
    total = p.total_memory
    cap = float(out["fraction"]) * total
    keep = torch.empty(int(cap * 0.5), dtype=torch.uint8, device="cuda")  # within the cap
    try:
        torch.empty(int(cap * 0.7), dtype=torch.uint8, device="cuda")  # 1.2x the cap together
        out["over_cap"] = "allowed"
    except torch.cuda.OutOfMemoryError as e:
        out["over_cap"] = "refused: " + str(e).splitlines()[0][:160]
    out["reserved_gb"] = round(torch.cuda.memory_reserved(0) / 2**30, 2)
    out["cap_gb"] = round(cap / 2**30, 2)
    del keep
    torch.cuda.empty_cache()
print(json.dumps(out))
"""
LOOP_START = """
import threading, torch, json
stop = threading.Event()
def burn():
    a = torch.randn(4096, 4096, device="cuda")
    while not stop.is_set():
        a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()
threading.Thread(target=burn, daemon=True).start()
print(json.dumps({"started": True}))
"""
LOOP_STOP = 'stop.set(); import json, time; time.sleep(2); print(json.dumps({"stopped": True}))'


def record(check: str, ok: bool | None, detail: str) -> None:
    RESULTS.append({"check": check, "result": {True: "pass", False: "FAIL", None: "skipped"}[ok], "detail": detail})
    print(f"[{RESULTS[-1]['result']:7}] {check}: {detail}", flush=True)


class Kernels:
    """Run code in a server's kernel through its REST API and kernel websocket (as JupyterLab
    does); one kernel per user, kept for the check."""

    def __init__(self, hub: Hub):
        self.hub, self.open = hub, {}

    def run(self, user: str, code: str, timeout: float = 300) -> dict:
        import websocket  # websocket-client, a dependency of jupyter_server

        if user not in self.open:
            url, token = f"{self.hub.url}/user/{user}/", self.hub.user_token(user)
            r = requests.post(url + "api/kernels", headers={"Authorization": f"token {token}"},
                              json={"name": "python3"}, timeout=120)
            r.raise_for_status()
            ws = websocket.create_connection(url.replace("http://", "ws://", 1) + f"api/kernels/{r.json()['id']}/channels",
                                             header=[f"Authorization: token {token}"], timeout=timeout)
            self.open[user] = ws
        ws = self.open[user]
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({"header": {"msg_id": msg_id, "username": user, "session": uuid.uuid4().hex,
                                       "msg_type": "execute_request", "version": "5.3"},
                            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                            "content": {"code": code, "silent": False, "store_history": False,
                                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
        out, error, deadline = [], None, time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = json.loads(ws.recv())
            if m.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if m["msg_type"] == "stream" and m["content"]["name"] == "stdout":
                out.append(m["content"]["text"])
            elif m["msg_type"] == "error":
                error = "\n".join(m["content"].get("traceback", []))[-2000:]
            elif m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                break
        if error:
            raise RuntimeError(error)
        return json.loads("".join(out).strip().splitlines()[-1])

    def close(self):
        for ws in self.open.values():
            ws.close()


def share_samples(hub: Hub, key: str, since: float) -> list[float]:
    import datetime as dt

    import sqlalchemy as sa

    eng = sa.create_engine(hub.gpulab_db_url)
    try:
        with eng.connect() as c:
            rows = c.execute(sa.text("SELECT at, util FROM gpulab_gpu_samples WHERE device_key = :k ORDER BY at"),
                             {"k": key}).all()
    finally:
        eng.dispose()
    start = dt.datetime.fromtimestamp(since, dt.timezone.utc).replace(tzinfo=None)
    return [u for at, u in rows if at >= start]


def check_sharing(hub: Hub, gpu: bool, run, profile: str = "pytorch") -> None:
    """The checks, on a started hub whose GPU 0 is shared two ways (see :func:`hub_for`)."""
    hub.create_users("share1", "share2")
    servers = {u: hub.start_server(u, {"profile": profile, "gpus": 1, "gpu_type": shared_type(hub)}, timeout=300)
               for u in ("share1", "share2")}
    probes = {u: run(u, PROBE) for u in servers}
    devices = {u: s["state"]["gpu_devices"][0] for u, s in servers.items()}
    same = all(s["state"]["gpus"] == ["0"] for s in servers.values()) and len(set(devices.values())) == 2
    detail = "; ".join(f"{u}: {devices[u]}, share {p['share']}, fraction {p['fraction']}, hook {p['hook']}"
                       for u, p in probes.items())
    if gpu:
        uuids = {p.get("uuid") for p in probes.values()}
        record("two servers on one shared GPU", same and len(uuids) == 1 and None not in uuids,
               f"{detail}; torch sees {uuids}")
        capped = all(p.get("over_cap", "").startswith("refused") and p["hook"] == "AfterImport" for p in probes.values())
        record("each within its memory cap", capped,
               "; ".join(f"{u}: cap {p.get('cap_gb')} GB, reserved {p.get('reserved_gb')} GB, beyond the cap "
                         f"{p.get('over_cap')}" for u, p in probes.items()))
        since = time.time()
        run("share1", LOOP_START)
        busy_key, idle_key = devices["share1"], devices["share2"]
        deadline, busy, idle = time.monotonic() + 120, [], []
        while time.monotonic() < deadline:
            busy, idle = share_samples(hub, busy_key, since), share_samples(hub, idle_key, since)
            if any(u > THRESHOLD for u in busy) and idle:
                break
            time.sleep(3)
        run("share1", LOOP_STOP)
        record("utilisation attributed to the right server",
               any(u > THRESHOLD for u in busy) and bool(idle) and all(u <= THRESHOLD for u in idle),
               f"share1 (matmul loop) {busy[-5:]}, share2 (idle) {idle[-5:]} (threshold {THRESHOLD}%)")
    else:
        ok = same and all(p["hook"] == "AfterImport" and p["share"] == "1/2" for p in probes.values())
        record("two servers on one shared GPU (CPU path)", ok, detail)
        record("each within its memory cap", None, "needs a GPU and PyTorch with CUDA")
        record("utilisation attributed to the right server", None, "needs a GPU (NVML per-process samples)")
    for u in servers:
        hub.stop_server(u)


def shared_type(hub: Hub) -> str:
    """The shared type of GPU 0: a simulated H200's, or what NVML calls GPU 0."""
    if hub.config["gpus"]["inventory"] != "auto":
        return "H200-141GB:shared"
    return f"{next(d for d in discover().devices if d.index == 0).gpu_type}:shared"


def hub_for(workdir: Path, gpu: bool, envs_dir: str | None) -> Hub:
    extra = {"gpus": {"sharing": [{"gpus": [0], "shares": 2}]},
             "culler": {"interval_seconds": 5, "gpu_idle_threshold": THRESHOLD,
                        "metrics": {"source": "nvml" if gpu else "auto"}}}
    if envs_dir:
        extra["environments"] = {"dir": envs_dir, "build_missing": False}
    local = {"system_user_prefix": "gpushr-", "home_root": str(workdir / "homes")} if os.geteuid() == 0 else {}
    return Hub(workdir / "hub", inventory="auto" if gpu else "1xH200-141GB",
               quotas={"default": {"max_gpus": 1, "max_servers": 2}}, local=local, extra=extra)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="pytorch", help="the profile both servers run (its environment installed)")
    ap.add_argument("--envs-dir", default=None, help="environments.dir, where the environments branch has it")
    ap.add_argument("--report", help="write the results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the hub's directory (logs)")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    gpu = bool(discover().devices)
    workdir = Path(tempfile.mkdtemp(prefix="gpulab-gpushare-"))
    (workdir / "homes").mkdir()
    for d in (workdir, workdir / "homes"):
        d.chmod(0o755)
    hub = hub_for(workdir, gpu, args.envs_dir)
    kernels = None
    try:
        hub.start(timeout=120)
        kernels = Kernels(hub)
        check_sharing(hub, gpu, kernels.run, args.profile if gpu else "minimal")
    except Exception as e:  # a check that crashed is a failed check
        record("hub", False, f"{type(e).__name__}: {e}"[:3000])
    finally:
        if kernels:
            kernels.close()
        hub.close()
        if os.geteuid() == 0:
            import pwd
            import subprocess

            for pw in pwd.getpwall():
                if pw.pw_name.startswith("gpushr-"):
                    subprocess.run(["userdel", "-r", pw.pw_name], capture_output=True)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    failed = [r for r in RESULTS if r["result"] == "FAIL"]
    if args.report:
        Path(args.report).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "gpu": gpu,
                                                 "seconds": round(time.monotonic() - t0, 1), "checks": RESULTS}, indent=1))
    print(f"gpu-check (sharing): {len(RESULTS) - len(failed)} passed or skipped, {len(failed)} failed, "
          f"in {time.monotonic() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
