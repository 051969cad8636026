"""The real-hardware check, one command on a machine with an NVIDIA GPU (< 8 minutes with one GPU
and the environments built): ``make gpu-check`` (or ``python tools/gpu_check.py``).

1. NVML's inventory (what gpulab allocates) against ``nvidia-smi -L``, with the driver version.
2. A real hub (local backend, ``gpus.inventory: auto``) spawns the PyTorch profile with 1 GPU; in
   a kernel started through the server's REST API ``torch.cuda.device_count() == 1`` and the
   device's UUID is the allocated one.
3. A matmul loop in that kernel shows in the culler's utilisation samples above
   ``culler.gpu_idle_threshold``, and falls below it after the loop stops.
4. The TensorFlow profile sees its GPU.
5. With MIG on: a server on one MIG instance sees exactly that instance.
6. A server without GPUs sees none; with CUDA_VISIBLE_DEVICES removed it reaches none either,
   where the host restricts GPU devices (else the hub said at start that it does not).
7. Two PyTorch servers on one shared GPU, on a hub of its own (``gpu_check_sharing.py``): both on
   the same GPU, each refused beyond its memory cap, utilisation attributed to the right server.

Without a GPU (the CPU path, what the test suite runs): step 1 reports why NVML found nothing, the
hub runs on a simulated inventory and step 2 checks that the kernel runs torch with
CUDA_VISIBLE_DEVICES set to its allocation; the GPU-only checks are reported as skipped. The
environments come from ``environments.dir`` (``--envs-dir``); where the registries are reachable
they are built first (``make envs``); a GPU machine without network needs them built beforehand.
Prints one line per check and a JSON report (``--report``); exits 1 if a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hub_plugins.envs.manager import EnvDir  # noqa: E402
from hub_plugins.gpu.nvml import discover  # noqa: E402
from hub_plugins.spawn.profiles import load_dir  # noqa: E402
from tests.support.hubproc import Hub  # noqa: E402
from tests.support.kernel import Kernel  # noqa: E402
from tools.gpu_check_sharing import adopt_env  # noqa: E402
from tools.gpu_check_sharing import run_check as check_shared_gpu  # noqa: E402
from tools.gpu_check_sharing import share_samples as samples  # noqa: E402

RESULTS: list[dict] = []
SMI_LINE = re.compile(r"^\s*(GPU|MIG)\b.*\(UUID: (?P<uuid>[^)]+)\)")


def record(check: str, ok: bool | None, detail: str) -> None:
    """ok: True passed, False failed, None skipped."""
    RESULTS.append({"check": check, "result": {True: "pass", False: "FAIL", None: "skipped"}[ok], "detail": detail})
    print(f"[{RESULTS[-1]['result']:7}] {check}: {detail}", flush=True)


def smi_uuids(text: str) -> set[str]:
    """UUIDs listed by ``nvidia-smi -L`` (GPUs and MIG instances) (pure)."""
    return {m["uuid"].strip() for line in text.splitlines() if (m := SMI_LINE.match(line))}


def check_inventory():
    inv = discover()
    smi = shutil.which("nvidia-smi")
    if not inv.devices:
        record("NVML inventory vs nvidia-smi -L", None if not smi else False,
               f"NVML found no GPU ({inv.note or 'no reason given'})" + ("" if smi else "; no nvidia-smi either"))
        return inv
    listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60).stdout
    driver = subprocess.run([smi, "--query-gpu=driver_version,name", "--format=csv,noheader"],
                            capture_output=True, text=True, timeout=60).stdout.strip()
    ours = {d.uuid for d in inv.devices if d.uuid}
    theirs = smi_uuids(listed)
    record("NVML inventory vs nvidia-smi -L", ours == theirs,
           f"{len(ours)} devices ({', '.join(sorted({d.gpu_type for d in inv.devices}))}); driver/name: {driver}"
           + ("" if ours == theirs else f"; only NVML: {sorted(ours - theirs)}, only nvidia-smi: {sorted(theirs - ours)}"))
    return inv


def ensure_envs(envs_dir: str, names: list[str], build: bool, python_env: str | None = None) -> dict:
    if python_env:  # --python-env: the PyTorch profile runs from it, nothing is built
        ok = os.access(os.path.join(python_env, "bin", "jupyterhub-singleuser"), os.X_OK)
        if not ok:
            record("pytorch environment", False, f"{python_env}/bin/jupyterhub-singleuser is missing "
                   "(install jupyterhub and ipykernel there)")
        return {"pytorch": ok}
    catalog = load_dir(ROOT / "profiles")
    envdir, out = EnvDir(envs_dir), {}
    for name in names:
        spec = catalog.get(name).environment
        st = envdir.read_state(spec)
        if st.state != "ready" and build:
            t0 = time.monotonic()
            st = envdir.ensure(spec, log=lambda m: print("  " + m, flush=True))
            print(f"  built {name} in {time.monotonic() - t0:.0f} s", flush=True)
        out[name] = st.state == "ready"
        if not out[name]:
            record(f"{name} environment", False, f"not built in {envs_dir} ({st.state}: {st.error or 'run make envs'})")
    return out


def kernel_json(hub: Hub, user: str, code: str, timeout: float = 300) -> dict:
    k = Kernel(f"{hub.url}/user/{user}/", hub.user_token(user))
    try:
        return json.loads(k.run(code, timeout=timeout).strip().splitlines()[-1])
    finally:
        k.close()


TORCH = """
import json, os, torch
n = torch.cuda.device_count()
uuid = str(torch.cuda.get_device_properties(0).uuid) if n else None
print(json.dumps({"count": n, "uuid": uuid, "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                  "name": torch.cuda.get_device_name(0) if n else None, "torch": torch.__version__}))
"""
LOOP_START = """
import threading, time, torch, json
stop = threading.Event()
def burn():
    a = torch.randn(8192, 8192, device="cuda")
    while not stop.is_set():
        a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()
threading.Thread(target=burn, daemon=True).start()
print(json.dumps({"started": True}))
"""
LOOP_STOP = 'stop.set(); import time, json; time.sleep(2); print(json.dumps({"stopped": True}))'
# a server without GPUs: none visible; with the variable removed, none reachable where the host
# restricts GPU devices (a process can clear CUDA_VISIBLE_DEVICES; only the kernel can say no)
NO_GPU = """
import json, os, subprocess, sys
env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
r = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"], env=env,
                   capture_output=True, text=True, timeout=120)
import torch
print(json.dumps({"visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "count": torch.cuda.device_count(),
                  "unset": (r.stdout.strip() or r.stderr.strip()[-200:]).splitlines()[-1:]}))
"""
TF = """
import json, os, tensorflow as tf
print(json.dumps({"gpus": [d.name for d in tf.config.list_physical_devices("GPU")], "tf": tf.__version__,
                  "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}))
"""


def devices_restricted(hub: Hub) -> bool:
    """Whether the hub said at start that local servers are held to their GPU devices."""
    line = next((ln for ln in hub.log_path.read_text(errors="replace").splitlines()
                 if "gpulab: local servers are" in ln), "")
    return "GPU devices" in line.split("; NOT")[0] and "NOT held to any" not in line


def check_no_gpu_server(hub: Hub) -> None:
    hub.start_server("gpucheck2", {"profile": "pytorch", "gpus": 0}, timeout=300)
    got = kernel_json(hub, "gpucheck2", NO_GPU)
    restricted = devices_restricted(hub)
    unset = got["unset"][0] if got["unset"] else ""
    ok = got["count"] == 0 and (unset != "1" if restricted else True)
    record("a server without GPUs", ok,
           f"CUDA_VISIBLE_DEVICES={got['visible']!r}, torch sees {got['count']}; with the variable removed it sees "
           f"{unset or '?'}" + (" (GPU devices restricted by the kernel)" if restricted else
                                " (this host does not restrict GPU devices, as the hub said at start)"))
    hub.stop_server("gpucheck2")


def wait_sample(hub, key, since, pred, timeout) -> list[float]:
    deadline = time.monotonic() + timeout
    seen: list[float] = []
    while time.monotonic() < deadline:
        seen = samples(hub, key, since)
        if any(pred(u) for u in seen):
            return seen
        time.sleep(2)
    return seen


def run(args) -> int:
    t_start = time.monotonic()
    inv = check_inventory()
    gpu = bool(inv.devices)
    envs = ensure_envs(args.envs_dir, ["pytorch"] + (["tensorflow"] if gpu or args.tensorflow else []), args.build,
                       args.python_env)
    if not envs.get("pytorch"):
        return finish(args, t_start)
    workdir = Path(tempfile.mkdtemp(prefix="gpulab-gpucheck-"))
    profiles_dir = adopt_env(args.python_env, "pytorch", workdir / "profiles") if args.python_env else None
    threshold = 5
    # as root, servers run as throwaway system users (as in production), removed at the end
    homes = workdir / "homes"
    homes.mkdir()
    workdir.chmod(0o755)
    homes.chmod(0o755)
    local = {"system_user_prefix": "gpuchk-", "home_root": str(homes)} if os.geteuid() == 0 else {}
    hub = Hub(workdir / "hub", inventory="auto" if gpu else "1xH200-141GB",
              quotas={"default": {"max_gpus": 2, "max_servers": 3}}, local=local, profiles_dir=profiles_dir,
              extra={"environments": {"dir": args.envs_dir, "build_missing": False},
                     "culler": {"interval_seconds": 5, "gpu_idle_threshold": threshold,
                                "metrics": {"source": "nvml" if gpu else "auto"}}})
    try:
        hub.start(timeout=120)
        hub.create_users("gpucheck", "gpucheck2")
        t0 = time.monotonic()
        server = hub.start_server("gpucheck", {"profile": "pytorch", "gpus": 1}, timeout=300)
        got = kernel_json(hub, "gpucheck", TORCH)
        allocated = server["state"]["gpus"]
        key = server["state"]["gpu_devices"][0]
        detail = f"ready in {time.monotonic() - t0:.1f} s; CUDA_VISIBLE_DEVICES={got['visible']} (allocated {allocated})"
        if gpu:
            want = next(d.uuid for d in inv.devices if d.key == key)
            ok = got["count"] == 1 and got["uuid"] is not None and want.endswith(got["uuid"].replace("GPU-", ""))
            record("PyTorch server with 1 GPU", ok and got["visible"] == ",".join(allocated),
                   f"{detail}; torch {got['torch']} sees {got['count']} device(s): {got['name']} {got['uuid']} "
                   f"(allocated {want})")
        else:
            record("PyTorch server with 1 GPU (CPU path)", got["visible"] == ",".join(allocated) and got["count"] == 0,
                   f"{detail}; torch {got['torch']} sees no CUDA device, as expected without a GPU")
        if gpu:
            since = time.time()
            kernel = Kernel(f"{hub.url}/user/gpucheck/", hub.user_token("gpucheck"))
            try:
                kernel.run(LOOP_START)
                busy = wait_sample(hub, key, since, lambda u: u > threshold, 90)
                kernel.run(LOOP_STOP)
                stopped = time.time()
                idle = wait_sample(hub, key, stopped + 5, lambda u: u <= threshold, 90)
            finally:
                kernel.close()
            record("matmul loop in the culler's samples", any(u > threshold for u in busy)
                   and any(u <= threshold for u in idle),
                   f"busy samples {busy[-5:]}, after the loop {idle[-5:]} (idle threshold {threshold}%)")
        else:
            record("matmul loop in the culler's samples", None, "needs a GPU (NVML utilisation)")
        hub.stop_server("gpucheck")
        if gpu:
            check_no_gpu_server(hub)
        else:
            record("a server without GPUs", None, "needs a GPU")
        if envs.get("tensorflow"):
            hub.start_server("gpucheck", {"profile": "tensorflow", "gpus": 1}, timeout=300)
            tf = kernel_json(hub, "gpucheck", TF)
            record("TensorFlow sees its GPU", len(tf["gpus"]) == 1 if gpu else tf["gpus"] == [],
                   f"tensorflow {tf['tf']}: {tf['gpus']} (CUDA_VISIBLE_DEVICES={tf['visible']})")
            hub.stop_server("gpucheck")
        else:
            record("TensorFlow sees its GPU", None, "not with --python-env (PyTorch only)" if args.python_env
                   else "the tensorflow environment is not built (make envs PROFILES=tensorflow)")
        mig_types = sorted({d.gpu_type for d in inv.devices if d.mig_profile})
        if mig_types:
            server = hub.start_server("gpucheck2", {"profile": "pytorch", "gpus": 1, "gpu_type": mig_types[0]}, timeout=300)
            got = kernel_json(hub, "gpucheck2", TORCH)
            want = next(d.uuid for d in inv.devices if d.key == server["state"]["gpu_devices"][0])
            record("MIG instance", got["count"] == 1 and got["visible"] == want,
                   f"{mig_types[0]}: CUDA_VISIBLE_DEVICES={got['visible']}, torch sees {got['count']} ({got['name']})")
            hub.stop_server("gpucheck2")
        else:
            record("MIG instance", None, "no GPU with MIG on" if gpu else "needs a GPU")
    except Exception as e:  # a check that crashed is a failed check, with the hub's log
        record("hub", False, f"{type(e).__name__}: {e}"[:3000])
    finally:
        hub.close()
        if os.geteuid() == 0:
            import pwd

            for pw in pwd.getpwall():
                if pw.pw_name.startswith("gpuchk-"):
                    subprocess.run(["userdel", "-r", pw.pw_name], capture_output=True)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    # 6. two PyTorch servers on one shared GPU (docs/sharing.md), on a hub whose GPU 0 is shared
    share_dir = Path(tempfile.mkdtemp(prefix="gpulab-gpushare-"))
    try:
        check_shared_gpu(share_dir, gpu, args.envs_dir, "pytorch", record,
                         profiles_dir=adopt_env(args.python_env, "pytorch", share_dir / "profiles") if args.python_env else None)
    finally:
        if not args.keep:
            shutil.rmtree(share_dir, ignore_errors=True)
    return finish(args, t_start)


def finish(args, t_start: float) -> int:
    took = time.monotonic() - t_start
    report = {"date": time.strftime("%Y-%m-%d"), "seconds": round(took, 1), "checks": RESULTS}
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=1))
    failed = [r for r in RESULTS if r["result"] == "FAIL"]
    print(f"gpu-check: {len(RESULTS) - len(failed)} passed or skipped, {len(failed)} failed, in {took:.0f} s")
    return 1 if failed else 0


def main(argv=None) -> int:
    from hub_plugins.envs.manager import default_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs-dir", default=os.environ.get("GPULAB_ENVS_DIR") or default_dir(os.geteuid() == 0, os.path.expanduser("~")))
    ap.add_argument("--no-build", dest="build", action="store_false", help="never build missing environments")
    ap.add_argument("--tensorflow", action="store_true", help="also the TensorFlow check without a GPU")
    ap.add_argument("--python-env", help="run the PyTorch profile from this existing Python environment instead of "
                    "the built one: a GPU machine that cannot download the pins but whose image holds PyTorch (it "
                    "needs jupyterhub and ipykernel installed there); the TensorFlow check is then skipped")
    ap.add_argument("--report", help="write the results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the hub's directory (logs)")
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
