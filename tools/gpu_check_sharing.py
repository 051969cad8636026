"""The shared-GPU part of the real-hardware check: two PyTorch servers on one shared GPU.

Run by ``tools/gpu_check.py`` (``make gpu-check``) after its other checks, with a hub of its own;
or alone: ``python tools/gpu_check_sharing.py [--envs-dir DIR] [--report sharing.json]``.

On a machine with an NVIDIA GPU, a real hub (local backend, ``gpus.inventory: auto``) shares GPU 0
two ways (``gpus.sharing``) and two users start the PyTorch profile on a share each. Checks:

1. both servers run on the same physical GPU (the UUID PyTorch reports is GPU 0's, for both);
2. each is held to its memory cap: the startup hook queued PyTorch's per-process memory fraction
   (``GPULAB_GPU_MEMORY_FRACTION``) for its CUDA initialisation; an allocation within the cap
   succeeds, one beyond it fails with an out-of-memory error;
3. utilisation is attributed to the right server: while one kernel runs a matmul loop, the
   culler's samples (NVML per-process utilisation, attributed through /proc) show that server's
   share busy and the other's idle.

Without a GPU (the CPU path): a simulated H200 is shared instead; checked for real: both servers
on GPU 0 with their share's variables, the hook loaded in each kernel with its cap and, when the
profile's PyTorch is there, the memory fraction queued for its CUDA initialisation; the checks that
need CUDA are reported as skipped. Prints one line per check; exits 1 if one failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hub_plugins.gpu.nvml import discover  # noqa: E402
from tests.support.hubproc import Hub  # noqa: E402
from tests.support.kernel import Kernel  # noqa: E402

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
if torch is not None and not torch.cuda.is_initialized():  # the hook's call, queued for CUDA's init
    out["queued"] = any("cap_torch" in getattr(c[0], "__qualname__", "") for c in torch.cuda._queued_calls)
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


def kernels(hub: Hub, users) -> dict:
    """One kernel per user, kept for the whole check (the matmul loop lives in it)."""
    return {u: Kernel(f"{hub.url}/user/{u}/", hub.user_token(u)) for u in users}


def run_json(kernel: Kernel, code: str) -> dict:
    return json.loads(kernel.run(code, timeout=300).strip().splitlines()[-1])


def share_samples(hub: Hub, key: str, since: float) -> list[float]:
    import datetime as dt

    import sqlalchemy as sa

    from hub_plugins.store.models import GPUSample

    # through the model, so that SQLite's text timestamps come back as datetimes
    start = dt.datetime.fromtimestamp(since, dt.timezone.utc).replace(tzinfo=None)
    eng = sa.create_engine(hub.gpulab_db_url)
    try:
        with eng.connect() as c:
            rows = c.execute(sa.select(GPUSample.util).where(GPUSample.device_key == key, GPUSample.at >= start)
                             .order_by(GPUSample.at)).all()
    finally:
        eng.dispose()
    return [u for (u,) in rows]


def check_sharing(hub: Hub, gpu: bool, profile: str = "pytorch", record=record) -> None:
    """The checks, on a started hub whose GPU 0 is shared two ways (see :func:`hub_for`)."""
    users = ("share1", "share2")
    hub.create_users(*users)
    servers = {u: hub.start_server(u, {"profile": profile, "gpus": 1, "gpu_type": shared_type(hub)}, timeout=300)
               for u in users}
    ks = kernels(hub, users)
    try:
        probes = {u: run_json(ks[u], PROBE) for u in users}
        devices = {u: s["state"]["gpu_devices"][0] for u, s in servers.items()}
        same = all(s["state"]["gpus"] == ["0"] for s in servers.values()) and len(set(devices.values())) == 2
        hooked = all(p["hook"] == "AfterImport" and p["share"] == "1/2" for p in probes.values())
        detail = "; ".join(f"{u}: {devices[u]}, share {p['share']}, fraction {p['fraction']}, hook {p['hook']}, "
                           f"torch {p['torch']}" for u, p in probes.items())
        if not gpu:
            record("two servers on one shared GPU (CPU path)", same and hooked, detail)
            with_torch = [p for p in probes.values() if p["torch"]]
            record("PyTorch's memory fraction queued for its CUDA init (CPU path)",
                   all(p.get("queued") for p in with_torch) if with_torch else None,
                   "queued in both kernels" if with_torch else f"no PyTorch in profile '{profile}'")
            record("each within its memory cap", None, "needs a GPU")
            record("utilisation attributed to the right server", None, "needs a GPU (NVML per-process samples)")
            return
        uuids = {p.get("uuid") for p in probes.values()}
        record("two servers on one shared GPU", same and hooked and len(uuids) == 1 and None not in uuids,
               f"{detail}; torch sees {uuids}")
        capped = all(p.get("over_cap", "").startswith("refused") for p in probes.values())
        record("each within its memory cap", capped,
               "; ".join(f"{u}: cap {p.get('cap_gb')} GB, reserved {p.get('reserved_gb')} GB, beyond the cap "
                         f"{p.get('over_cap')}" for u, p in probes.items()))
        since = time.time()
        run_json(ks["share1"], LOOP_START)
        deadline, busy, idle = time.monotonic() + 120, [], []
        while time.monotonic() < deadline:
            busy, idle = share_samples(hub, devices["share1"], since), share_samples(hub, devices["share2"], since)
            if any(u > THRESHOLD for u in busy) and idle:
                break
            time.sleep(3)
        run_json(ks["share1"], LOOP_STOP)
        record("utilisation attributed to the right server",
               any(u > THRESHOLD for u in busy) and bool(idle) and all(u <= THRESHOLD for u in idle),
               f"share1 (matmul loop) {busy[-5:]}, share2 (idle) {idle[-5:]} (threshold {THRESHOLD}%)")
    finally:
        for k in ks.values():
            k.close()
        for u in servers:
            hub.stop_server(u)


def adopt_env(prefix: str, profile: str, into: Path) -> str:
    """A copy of profiles/ in which ``profile`` runs from ``prefix``, an existing Python environment
    (``--python-env``; a GPU image's own PyTorch, on a machine that cannot download the pinned one).
    It needs ``jupyterhub-singleuser`` and ``ipykernel`` installed there. Returns the directory."""
    into.mkdir(parents=True, exist_ok=True)
    for src in (ROOT / "profiles").glob("*.yaml"):
        data = yaml.safe_load(src.read_text())
        if src.stem == profile:
            data["local"] = {"prefix": os.path.abspath(prefix)}
        (into / src.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return str(into)


def shared_type(hub: Hub) -> str:
    """The shared type of GPU 0: a simulated H200's, or what NVML calls GPU 0."""
    if hub.config["gpus"]["inventory"] != "auto":
        return "H200-141GB:shared"
    return f"{next(d for d in discover().devices if d.index == 0).gpu_type}:shared"


def hub_for(workdir: Path, gpu: bool, envs_dir: str, prefix: str = "gpushr-", profiles_dir: str | None = None) -> Hub:
    """A hub of its own whose GPU 0 is shared two ways (a simulated H200 without a GPU)."""
    home = workdir / "homes"
    home.mkdir(parents=True, exist_ok=True)
    for d in (workdir, home):
        d.chmod(0o755)
    local = {"system_user_prefix": prefix, "home_root": str(home)} if os.geteuid() == 0 else {}
    return Hub(workdir / "hub", inventory="auto" if gpu else "1xH200-141GB",
               quotas={"default": {"max_gpus": 1, "max_servers": 2}}, local=local, profiles_dir=profiles_dir,
               extra={"gpus": {"sharing": [{"gpus": [0], "shares": 2}]},
                      "environments": {"dir": envs_dir, "build_missing": False},
                      "culler": {"interval_seconds": 5, "gpu_idle_threshold": THRESHOLD,
                                 "metrics": {"source": "nvml" if gpu else "auto"}}})


def run_check(workdir: Path, gpu: bool, envs_dir: str, profile: str = "pytorch", record=record,
              prefix: str = "gpushr-", profiles_dir: str | None = None) -> None:
    """:func:`check_sharing` on a hub of its own, closed (and its system users removed) after."""
    hub = hub_for(workdir, gpu, envs_dir, prefix, profiles_dir)
    try:
        hub.start(timeout=120)
        check_sharing(hub, gpu, profile, record)
    except Exception as e:  # a check that crashed is a failed check
        record("shared GPU", False, f"{type(e).__name__}: {e}"[:3000])
    finally:
        hub.close()
        if os.geteuid() == 0:
            import pwd
            import subprocess

            for pw in pwd.getpwall():
                if pw.pw_name.startswith(prefix):
                    subprocess.run(["userdel", "-r", pw.pw_name], capture_output=True)


def main(argv=None) -> int:
    from hub_plugins.envs.manager import default_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="pytorch", help="the profile both servers run (its environment built)")
    ap.add_argument("--envs-dir", default=os.environ.get("GPULAB_ENVS_DIR") or default_dir(os.geteuid() == 0, os.path.expanduser("~")))
    ap.add_argument("--python-env", help="run the profile from this existing Python environment (see gpu_check.py)")
    ap.add_argument("--report", help="write the results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the hub's directory (logs)")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    gpu = bool(discover().devices)
    workdir = Path(tempfile.mkdtemp(prefix="gpulab-gpushare-"))
    try:
        profiles_dir = adopt_env(args.python_env, args.profile, workdir / "profiles") if args.python_env else None
        run_check(workdir, gpu, args.envs_dir, args.profile, profiles_dir=profiles_dir)
    finally:
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
