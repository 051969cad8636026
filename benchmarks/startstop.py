"""How long the hub takes to start and to stop, against stock JupyterHub on the same machine.

Start: from launching the ``jupyterhub`` process to its REST API answering 200 through the proxy
(``/hub/api/``), the moment people can sign in. gpulab's hub answers while its services still
start; when they all answer is printed beside it. Stop, 2 s after the services answer: from
SIGTERM to the process having exited (JupyterHub stops its proxy and managed services on the way
out; single-user servers are left running by design in both). Both hubs restart on the state of
their previous round (a lab's restart, not a first install), interleaved (stock, gpulab, stock,
gpulab, ...) so that drift hits both.

Stock: JupyterHub with its defaults (PAM sign-in, LocalProcessSpawner, SQLite, the same proxy).
gpulab: the embedded defaults ``make run`` uses (SQLite, built-in accounts, local servers, a
simulated inventory here instead of NVML), with its services: billing, quotas, the culler and,
with ``--mlflow``, MLflow (its front answers at once, the tracking server comes up behind it).
Servers are not started: this measures the hubs, not the servers.

Run: ``make bench`` or ``.venv/bin/python benchmarks/startstop.py [--rounds N] [--mlflow]``.
Not a test: it prints figures and ratios. Goals (issue 15): start within 1.5x of stock, stop in
under 10 s. Last line, for scripts:
``startstop: stock_start_s=<n> gpulab_start_s=<n> start_ratio=<n> stock_stop_s=<n> gpulab_stop_s=<n>``
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.support.hubproc import VENV_BIN, Hub, free_port, wait_api  # noqa: E402


class StockHub:
    """Stock JupyterHub, started from its own state directory with command-line settings only."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port, self.hub_port, self.proxy_port = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> None:
        args = [str(VENV_BIN / "jupyterhub"), "--no-ssl",
                f"--JupyterHub.bind_url=http://127.0.0.1:{self.port}",
                f"--JupyterHub.hub_bind_url=http://127.0.0.1:{self.hub_port}",
                f"--ConfigurableHTTPProxy.api_url=http://127.0.0.1:{self.proxy_port}",
                "--JupyterHub.log_level=WARN"]
        # the same proxy as gpulab's: the checkout's (make install puts it in node_modules)
        chp = HERE.parent / "node_modules" / ".bin"
        env = dict(os.environ, PATH=os.pathsep.join([str(VENV_BIN), str(chp), os.environ.get("PATH", "")]))
        log = open(self.dir / "hub.log", "ab")
        self.proc = subprocess.Popen(args, cwd=self.dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_api(f"http://127.0.0.1:{self.port}", self.proc, timeout)

    def terminate(self, timeout: float = 120) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)


def timed(fn) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mlflow", action="store_true", help="gpulab with its MLflow service")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gpulab-startbench-", dir="/tmp"))
    stock = StockHub(root / "stock")
    gpulab = Hub(root / "gpulab", inventory="4xA100-80GB", extra={"mlflow": {"enabled": args.mlflow}})
    gpulab.config["hub"]["log_level"] = "WARN"

    services_up: list[float] = []
    launched = [0.0]

    def start_gpulab():
        # the same poll as stock's (every 50 ms), not the test helper's coarser one
        launched[0] = time.monotonic()
        gpulab.start(wait=False)
        wait_api(gpulab.url, gpulab.proc, 180)

    times: dict[str, dict[str, list[float]]] = {v: {"start": [], "stop": []} for v in ("stock", "gpulab")}
    try:
        # a first start of each creates its state (databases, secrets): not counted
        stock.start()
        stock.terminate()
        gpulab.start(timeout=180)
        gpulab.terminate(timeout=180)
        for i in range(args.rounds):
            for name, hub in (("stock", stock), ("gpulab", gpulab)):
                start = hub.start if name == "stock" else start_gpulab
                times[name]["start"].append(timed(start))
                if name == "gpulab":  # not in the start: the hub answers before its services
                    gpulab.wait_up(180)
                    services_up.append(time.monotonic() - launched[0])
                time.sleep(2)  # settled, its services up: what a stop meets on a quiet hub
                times[name]["stop"].append(timed(lambda h=hub: h.terminate(180)))
                print(f"round {i + 1} {name}: start {times[name]['start'][-1]:.2f} s, "
                      f"stop {times[name]['stop'][-1]:.2f} s", flush=True)
    finally:
        gpulab.close()
        if stock.proc and stock.proc.poll() is None:
            stock.proc.kill()
    med = {v: {k: statistics.median(xs) for k, xs in d.items()} for v, d in times.items()}
    print(f"\nHub start and stop: {args.rounds} rounds each, median; gpulab "
          f"{'with' if args.mlflow else 'without'} MLflow; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs at the end\n")
    print(f"{'':10}{'stock':>9}{'gpulab':>9}{'ratio':>8}")
    for k in ("start", "stop"):
        print(f"{k + ' (s)':10}{med['stock'][k]:9.2f}{med['gpulab'][k]:9.2f}{med['gpulab'][k] / med['stock'][k]:7.2f}x")
    print(f"gpulab's services all answered {statistics.median(services_up):.2f} s after its start (median)")
    print("\ngoals: start within 1.5x of stock, stop under 10 s")
    print(f"startstop: stock_start_s={med['stock']['start']:.2f} gpulab_start_s={med['gpulab']['start']:.2f} "
          f"start_ratio={med['gpulab']['start'] / med['stock']['start']:.2f} "
          f"stock_stop_s={med['stock']['stop']:.2f} gpulab_stop_s={med['gpulab']['stop']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
