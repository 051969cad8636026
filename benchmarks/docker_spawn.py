"""Spawn-to-ready of gpulab's Docker backend vs plain DockerSpawner, same image, same run.

One hub (gpulab's config, ``backend: docker``), one private Docker engine, the base image
(``gpulab/base``, built the CI way if missing). Rounds alternate (stock, gpulab, stock, gpulab)
so that drift hits both. Each round spawns servers one after the other through the REST API and
times POST -> ``ready`` (the hub has seen JupyterLab answer), then stops each.

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


def one_round(hub: Hub, users: list[str], body) -> list[float]:
    times = []
    for u in users:
        t0 = time.perf_counter()
        st, payload = hub.spawn(u, body)
        if st not in (201, 202):
            raise RuntimeError(f"spawn {u}: {st} {payload}")
        while True:
            s = hub.server_model(u)
            if s and s.get("ready"):
                break
            if s is None:
                raise RuntimeError(f"spawn {u} failed:\n{hub.log_tail()}")
            time.sleep(0.05)
        times.append(time.perf_counter() - t0)
        hub.stop_server(u)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", type=int, default=10, help="spawns per round")
    ap.add_argument("--rounds", type=int, default=2)
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
    hub = Hub(root / "hub", inventory="4xA100-80GB", quotas={"default": {"max_gpus": 1, "max_servers": 1}},
              extra={"backend": "docker", "docker": {"host": engine.host, "name_prefix": "bench"}})
    hub.config["hub"].update(poll_interval=30, log_level="WARN")
    stock_args = ["--JupyterHub.spawner_class=benchmarks.stock_docker.StockHostDockerSpawner"]
    results: dict[str, list[float]] = {"stock": [], "gpulab": []}
    try:
        for i in range(args.rounds):
            for variant in ("stock", "gpulab"):
                hub.start(extra_args=stock_args if variant == "stock" else [])
                users = [f"{variant[0]}{i}x{j:02d}" for j in range(args.servers)]
                hub.api("POST", "/users", {"usernames": users})
                body = {} if variant == "stock" else {"profile": "minimal", "gpus": 1}
                one_round(hub, users[:1], body)  # warm-up (first container start, imports)
                t = one_round(hub, users[1:], body)
                results[variant] += t
                hub.terminate()
                print(f"round {i + 1} {variant}: p50 {statistics.median(t):.2f} s", flush=True)
    finally:
        hub.close()
        if not args.engine_root:
            engine.stop()
            subprocess.run(["rm", "-rf", str(root)], capture_output=True)
    s, g = results["stock"], results["gpulab"]
    print(f"\nDocker spawn-to-ready: {len(s)} spawns each, {args.rounds} rounds interleaved, image {image}\n")
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
