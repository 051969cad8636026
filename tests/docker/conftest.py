"""A real Docker engine for the Docker tests (session scope) and the base image built in it.

The engine is private (data-root, exec-root, socket and pid file under one temp directory; no
iptables, no bridge) with the stub nvidia-container-runtime-hook on its PATH, so containers with
GPU device requests start without GPUs. The base image is built the CI way (debootstrap rootfs +
docker import, then images/base), once per session.

``GPULAB_TEST_DOCKER_ROOT=/some/dir`` reuses an engine (and its images) across runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from images.engine import DockerEngine, EngineError  # noqa: E402


def base_image_tag() -> str:
    """gpulab/base's tag comes from the minimal profile's pins."""
    from hub_plugins.spawn.profiles import load_dir

    return load_dir(ROOT / "profiles").get("minimal").image


@pytest.fixture(scope="session")
def docker_engine():
    require(shutil.which("dockerd") is not None, "Docker engine (Debian package docker.io)")
    require(os.geteuid() == 0, "root (to run a private dockerd)")
    keep = os.environ.get("GPULAB_TEST_DOCKER_ROOT")
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="gpulab-dockerd-", dir="/tmp"))
    engine = DockerEngine(root)
    try:
        engine.start()
    except EngineError as e:
        pytest.fail(str(e))
    yield engine
    if not keep:
        engine.stop()
        subprocess.run(["rm", "-rf", str(root)], capture_output=True)


@pytest.fixture(scope="session")
def docker_client(docker_engine):
    import docker

    client = docker.DockerClient(base_url=docker_engine.host, timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_engine, docker_client):
    """gpulab/base:<tag from profiles/minimal.yaml>, built the CI way if the engine lacks it."""
    import docker

    tag = base_image_tag()
    try:
        docker_client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    require(shutil.which("debootstrap") is not None, "debootstrap (to build the base image without a registry)")
    env = dict(os.environ, DOCKER_HOST=docker_engine.host)
    r = subprocess.run([sys.executable, str(ROOT / "images" / "build.py"), "--rootfs", "--only", "base"],
                       env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        pytest.fail(f"building the base image failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return tag


def docker_hub_config(engine: DockerEngine, prefix: str, **docker) -> dict:
    """``extra`` for a test hub on the Docker backend."""
    return {
        "backend": "docker",
        "docker": {"host": engine.host, "name_prefix": prefix, "orphan_grace_seconds": 0, **docker},
    }
