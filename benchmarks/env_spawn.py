"""Click-to-ready of the PyTorch profile, gpulab vs stock JupyterHub with the same environment, and
the time to the first ``import torch`` in a kernel.

Same machine, same run, same environment (the pytorch profile's, built by ``make envs``), rounds
interleaved (stock, gpulab, stock, gpulab, ...) so drift hits both. Each round starts one server
through the REST API, as the form's Start button does, and measures:

- click-to-ready: from the POST to the server answering its own API through the hub's proxy
  (what the browser waits for before JupyterLab loads);
- first kernel: from asking the server for a kernel (its REST API) to the kernel answering;
- first ``import torch``: wall time of ``import torch`` inside that fresh kernel.

stock = JupyterHub's SimpleLocalProcessSpawner running the environment's jupyterhub-singleuser;
gpulab = the local backend with the pytorch profile and 1 simulated GPU (quota, placement, the
usage record and MLflow off, as in the stock hub). Both run servers as the hub's own user.

Run: ``make bench-envs`` or ``.venv/bin/python benchmarks/env_spawn.py [--rounds N]``.
Not a test: it prints the figures and, last, the ratio gpulab / stock of the click-to-ready median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import requests  # noqa: E402

from hub_plugins.envs.manager import EnvDir, default_dir  # noqa: E402
from hub_plugins.spawn.profiles import load_dir  # noqa: E402
from tests.support.hubproc import Hub  # noqa: E402
from tests.support.kernel import Kernel  # noqa: E402

IMPORT = "import time, json; t0 = time.perf_counter(); import torch; print(json.dumps(time.perf_counter() - t0))"


def one(hub: Hub, user: str, body) -> dict:
    token = hub.user_token(user)
    t0 = time.perf_counter()
    st, payload = hub.spawn(user, body)
    if st not in (201, 202):
        raise RuntimeError(f"spawn {user}: {st} {payload}")
    url = f"{hub.url}/user/{user}/api"
    while True:  # ready = the server answers through the proxy, with the user's credentials
        try:
            if requests.get(url, headers={"Authorization": f"token {token}"}, timeout=10).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.perf_counter() - t0 > 300:
            raise RuntimeError(f"{user} not ready in 300 s:\n{hub.log_tail()}")
        time.sleep(0.05)
    ready = time.perf_counter() - t0
    t1 = time.perf_counter()
    kernel = Kernel(f"{hub.url}/user/{user}/", token)
    try:
        kernel.run("1")
        first_kernel = time.perf_counter() - t1
        imp = json.loads(kernel.run(IMPORT).strip().splitlines()[-1])
    finally:
        kernel.close()
    hub.stop_server(user)
    return {"ready": ready, "kernel": first_kernel, "import": imp}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--envs-dir", help="environments.dir (default: as gpulab.yaml's 'auto')")
    args = ap.parse_args()
    envs_dir = args.envs_dir or os.environ.get("GPULAB_ENVS_DIR") or default_dir(os.geteuid() == 0, str(Path.home()))
    profile = load_dir(HERE.parent / "profiles").get("pytorch")
    st = EnvDir(envs_dir).read_state(profile.environment)
    if st.state != "ready":
        print(f"the pytorch environment is not built in {envs_dir}: run `make envs PROFILES=pytorch` "
              f"(or pass --envs-dir)", file=sys.stderr)
        return 2
    exe = Path(st.path) / "bin" / "jupyterhub-singleuser"
    root = Path(tempfile.mkdtemp(prefix="gpulab-envbench-"))
    hub = Hub(root / "hub", inventory="4xA100-80GB", quotas={"default": {"max_gpus": 1, "max_servers": 1}},
              local={"system_users": "never"}, extra={"environments": {"dir": envs_dir, "build_missing": False},
                                                      "culler": {"enabled": False}})
    hub.config["hub"].update(log_level="WARN")
    # both run servers as the hub's user (no account creation in either figure); as root that
    # needs jupyter-server's --allow-root, given to both
    common = ["--Spawner.args=--allow-root"] if os.geteuid() == 0 else []
    stock_args = ["--JupyterHub.spawner_class=simple", f"--Spawner.cmd={exe}", "--Spawner.default_url=/lab", *common]
    results = {"stock": [], "gpulab": []}
    try:
        for i in range(args.rounds):
            for variant in ("stock", "gpulab"):
                hub.start(extra_args=stock_args if variant == "stock" else common)
                user = f"{variant[0]}{i}"
                hub.create_users(user)
                body = {} if variant == "stock" else {"profile": "pytorch", "gpus": 1}
                r = one(hub, user, body)
                results[variant].append(r)
                hub.terminate()
                print(f"round {i + 1} {variant:6}: ready {r['ready']:.2f} s, first kernel {r['kernel']:.2f} s, "
                      f"import torch {r['import']:.2f} s", flush=True)
    finally:
        hub.close()
    med = {v: {k: statistics.median(x[k] for x in rs) for k in ("ready", "kernel", "import")}
           for v, rs in results.items()}
    print(f"\nPyTorch profile ({profile.environment.summary(('torch', 'jupyterlab'))}), {args.rounds} rounds, medians\n")
    print(f"{'':26}{'stock':>9}{'gpulab':>9}{'ratio':>8}")
    for key, label in (("ready", "click-to-ready (s)"), ("kernel", "first kernel (s)"), ("import", "first import torch (s)")):
        print(f"{label:26}{med['stock'][key]:9.2f}{med['gpulab'][key]:9.2f}{med['gpulab'][key] / med['stock'][key]:7.2f}x")
    print(f"\nclick-to-ready ratio gpulab/stock: {med['gpulab']['ready'] / med['stock']['ready']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
