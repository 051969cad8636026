"""Spawn-to-ready of gpulab's Docker backend vs plain DockerSpawner, same image, same run.

Two hubs with gpulab's config (``backend: docker``) run side by side on one private Docker
engine with the base image (``gpulab/base``, built the CI way if missing); one uses the stock
spawner. Spawns alternate between them one at a time (stock, gpulab, gpulab, stock, ...), so that
the machine's load drifts over both alike. Each spawn is timed from the REST ``POST`` to
``ready`` (the hub has seen JupyterLab answer), then the server is stopped.

- stock: DockerSpawner with the few lines host networking needs (pick the port, report
  127.0.0.1:port; see ``stock_docker.py``); no options, no GPUs.
- gpulab: DockerGPUSpawner, ``{"profile": "minimal", "gpus": 1}``: quota, placement, the
  database, device requests, the home volume, labels, limits are all on the path.
  (MLflow is off in both: it is a separate service; with it on, a spawn also fetches credentials.)

Run: ``make bench-docker`` or ``.venv/bin/python benchmarks/docker_spawn.py [--servers N]``.
Prints p50/p95 and ratios (goal: gpulab / stock <= 1.05, gpulab p50 <= 3 s); asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from images.engine import DockerEngine  # noqa: E402
from tests.support.hubproc import Hub  # noqa: E402


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round((len(values) - 1) * q)))]


def ensure_image(engine: DockerEngine, image: str) -> None:
    import docker

    client = docker.DockerClient(base_url=engine.host)
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        print(f"building {image} (CI path: debootstrap rootfs) ...", flush=True)
        subprocess.run([sys.executable, str(ROOT / "images" / "build.py"), "--rootfs", "--only", "base"],
                       env=dict(os.environ, DOCKER_HOST=engine.host), check=True)


def spawn_once(hub: Hub, user: str, body) -> float:
    t0 = time.perf_counter()
    st, payload = hub.spawn(user, body)
    if st not in (201, 202):
        raise RuntimeError(f"spawn {user}: {st} {payload}")
    while True:
        s = hub.server_model(user)
        if s and s.get("ready"):
            break
        if s is None:
            raise RuntimeError(f"spawn {user} failed:\n{hub.log_tail()}")
        time.sleep(0.05)
    took = time.perf_counter() - t0
    hub.stop_server(user)
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", type=int, default=20, help="timed spawns per spawner")
    ap.add_argument("--gpulab-arg", action="append", default=[],
                    help="extra command-line setting for the gpulab hub (ablations), e.g. "
                         "--gpulab-arg=--DockerGPUSpawner.watch_start=False (JupyterHub's own wait)")
    ap.add_argument("--engine-root", default=os.environ.get("GPULAB_BENCH_DOCKER_ROOT", ""),
                    help="reuse a private engine (and its images) in this directory")
    args = ap.parse_args()
    import yaml

    image = yaml.safe_load((ROOT / "profiles" / "minimal.yaml").read_text())["image"]
    root = Path(tempfile.mkdtemp(prefix="gpulab-dockerbench-"))
    engine = DockerEngine(args.engine_root or root / "engine").start()
    ensure_image(engine, image)
    # the hub imports the baseline spawner (benchmarks/stock_docker.py) from the checkout
    os.environ.update(GPULAB_BENCH_DOCKER_HOST=engine.host, GPULAB_BENCH_IMAGE=image, PYTHONPATH=str(ROOT))
    hubs = {}
    for variant in ("stock", "gpulab"):
        hub = Hub(root / variant, inventory="4xA100-80GB", quotas={"default": {"max_gpus": 1, "max_servers": 1}},
                  extra={"backend": "docker", "docker": {"host": engine.host, "name_prefix": f"bench{variant}"}})
        hub.config["hub"].update(poll_interval=30, log_level="WARN")
        hubs[variant] = hub
    bodies = {"stock": {}, "gpulab": {"profile": "minimal", "gpus": 1}}
    results: dict[str, list[float]] = {"stock": [], "gpulab": []}
    try:
        hubs["stock"].start(extra_args=["--JupyterHub.spawner_class=benchmarks.stock_docker.StockHostDockerSpawner"])
        hubs["gpulab"].start(extra_args=args.gpulab_arg)
        for variant, hub in hubs.items():
            hub.api("POST", "/users", {"usernames": [f"u{j:03d}" for j in range(args.servers + 1)]})
            spawn_once(hub, "u000", bodies[variant])  # warm-up (first container, imports)
        for j in range(1, args.servers + 1):
            order = ("stock", "gpulab") if j % 2 else ("gpulab", "stock")
            for variant in order:
                results[variant].append(spawn_once(hubs[variant], f"u{j:03d}", bodies[variant]))
            if j % 5 == 0:
                print(f"{j} spawns each: p50 stock {statistics.median(results['stock']):.2f} s, "
                      f"gpulab {statistics.median(results['gpulab']):.2f} s", flush=True)
    finally:
        for hub in hubs.values():
            hub.close()
        if not args.engine_root:
            engine.stop()
        subprocess.run(["rm", "-rf", str(root)], capture_output=True)
    s, g = results["stock"], results["gpulab"]
    print(f"\nDocker spawn-to-ready: {len(s)} spawns each, alternating, image {image}\n")
    print(f"{'':16}{'stock':>10}{'gpulab':>10}{'ratio':>9}")
    for label, q in (("p50 (s)", 0.5), ("p95 (s)", 0.95)):
        a, b = pct(s, q), pct(g, q)
        print(f"{label:16}{a:10.2f}{b:10.2f}{b / a:8.3f}x")
    print(f"{'mean (s)':16}{statistics.mean(s):10.2f}{statistics.mean(g):10.2f}"
          f"{statistics.mean(g) / statistics.mean(s):8.3f}x")
    print("\nratio = gpulab / stock (goal <= 1.05; gpulab p50 goal <= 3 s on a 2-core machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
