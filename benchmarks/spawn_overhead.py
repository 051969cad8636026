"""Spawn and stop overhead of gpulab's local spawner vs the stock local spawner it builds on.

Same hub (gpulab's config, same machine, same run), same server command, two rounds each,
interleaved (stock, gpulab, stock, gpulab) so that drift hits both. Each round: 200 servers
spawned through the REST API at 50 concurrent requests, then stopped at 50 concurrent. The
gpulab round asks every server for 1 simulated GPU, so quota, placement and the database are on
the path; the stock round sends no options.

Servers run a minimal single-user stand-in (``mini_singleuser.py``) so that the figures are the
spawners' and the hub's, not JupyterLab's start-up. Both spawners run servers as the hub's own
user (stock: SimpleLocalProcessSpawner; gpulab: ``local.system_users: never``), so account
creation is not part of either figure.

Run: ``make bench`` or ``.venv/bin/python benchmarks/spawn_overhead.py [--servers N]``.
Not a test: it prints figures and ratios (goal: gpulab / stock <= 1.05).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.support.hubproc import Hub  # noqa: E402


def bench_env(root: Path) -> Path:
    """A profile environment whose 'jupyterhub-singleuser' is the minimal stand-in."""
    env = root / "bench-env"
    (env / "bin").mkdir(parents=True)
    exe = env / "bin" / "jupyterhub-singleuser"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {HERE / 'mini_singleuser.py'} \"$@\"\n")
    exe.chmod(0o755)
    profiles = root / "profiles"
    profiles.mkdir()
    (profiles / "bench.yaml").write_text(
        f"display_name: Bench\ndefault: true\nlocal:\n  prefix: {env}\ngpus:\n  counts: [0, 1]\n"
    )
    return profiles


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def one_round(hub: Hub, users: list[str], body, concurrency: int) -> dict:
    def spawn(u):
        t0 = time.perf_counter()
        st, payload = hub.spawn(u, body)
        if st == 202:
            hub.wait_ready(u, timeout=300)
        elif st != 201:
            raise RuntimeError(f"spawn {u}: {st} {payload}")
        return time.perf_counter() - t0

    def stop(u):
        t0 = time.perf_counter()
        st, payload = hub.api("DELETE", f"/users/{u}/server")
        if st == 202:
            hub.wait_gone(u, timeout=300)
        elif st != 204:
            raise RuntimeError(f"stop {u}: {st} {payload}")
        return time.perf_counter() - t0

    with ThreadPoolExecutor(concurrency) as pool:
        t0 = time.perf_counter()
        spawns = list(pool.map(spawn, users))
        spawn_wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        stops = list(pool.map(stop, users))
        stop_wall = time.perf_counter() - t0
    return {"spawn": spawns, "stop": stops, "spawn_wall": spawn_wall, "stop_wall": stop_wall}


def summarise(rounds: list[dict], n: int) -> dict:
    spawn = [x for r in rounds for x in r["spawn"]]
    stop = [x for r in rounds for x in r["stop"]]
    return {
        "spawn_p50": statistics.median(spawn), "spawn_p99": pct(spawn, 0.99),
        "spawn_per_s": n * len(rounds) / sum(r["spawn_wall"] for r in rounds),
        "stop_p50": statistics.median(stop), "stop_p99": pct(stop, 0.99),
        "stop_per_s": n * len(rounds) / sum(r["stop_wall"] for r in rounds),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--gpulab-arg", action="append", default=[],
                    help="extra command-line setting for the gpulab hub (ablations), e.g. "
                         "--gpulab-arg=--LocalGPUSpawner.watch_start=False")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gpulab-spawnbench-"))
    profiles = bench_env(root)
    n = args.servers
    hub = Hub(root / "hub", inventory=f"{n}xA100-80GB", profiles_dir=str(profiles),
              quotas={"default": {"max_gpus": 1, "max_servers": 1}},
              local={"system_users": "never"})
    hub.config["hub"].update(poll_interval=30, concurrent_spawn_limit=0, log_level="WARN")
    hub.config["default_profile"] = "bench"
    stock_args = ["--JupyterHub.spawner_class=simple",
                  f"--Spawner.cmd={profiles.parent / 'bench-env/bin/jupyterhub-singleuser'}"]
    results = {"stock": [], "gpulab": []}
    try:
        for i in range(args.rounds):
            for variant in ("stock", "gpulab"):
                hub.start(extra_args=stock_args if variant == "stock" else args.gpulab_arg)
                users = [f"{variant[0]}{i}x{j:03d}" for j in range(n)]
                hub.api("POST", "/users", {"usernames": users})
                body = {} if variant == "stock" else {"profile": "bench", "gpus": 1}
                results[variant].append(one_round(hub, users, body, args.concurrency))
                hub.terminate()
                print(f"round {i + 1} {variant}: spawn {results[variant][-1]['spawn_wall']:.1f} s, "
                      f"stop {results[variant][-1]['stop_wall']:.1f} s", flush=True)
    finally:
        hub.close()
    s, g = summarise(results["stock"], n), summarise(results["gpulab"], n)
    print(f"\nSpawn overhead: {n} servers x {args.rounds} rounds, {args.concurrency} concurrent, "
          "minimal single-user stand-in\n")
    print(f"{'':18}{'stock':>10}{'gpulab':>10}{'ratio':>9}")
    for key, label, better in (
        ("spawn_p50", "spawn p50 (s)", "lower"), ("spawn_p99", "spawn p99 (s)", "lower"),
        ("spawn_per_s", "spawns/s", "higher"), ("stop_p50", "stop p50 (s)", "lower"),
        ("stop_p99", "stop p99 (s)", "lower"), ("stop_per_s", "stops/s", "higher"),
    ):
        ratio = g[key] / s[key] if better == "lower" else s[key] / g[key]
        print(f"{label:18}{s[key]:10.3f}{g[key]:10.3f}{ratio:8.3f}x")
    print("\nratio = gpulab cost / stock cost (time ratios for latencies, inverse for rates): "
          "<= 1.05 is the goal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
