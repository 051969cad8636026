"""Profile images built from the same pins as the local environments (``images/build.py``, the CI
way: no registry; opt-in with ``GPULAB_TEST_IMAGES=vscode``, or an engine that has the image via
``GPULAB_TEST_DOCKER_ROOT``), spawned through a real hub on the Docker backend: VS Code answers at
/user/<name>/vscode/ for its owner only, its processes see the server's GPUs and MLflow; the
image passed the installer's checks while it was built (the same as a local environment's)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests

from hub_plugins.envs import install
from hub_plugins.spawn.profiles import load_dir
from tests.docker.conftest import ROOT, docker_hub_config
from tests.support.hubproc import Hub

pytestmark = [pytest.mark.docker, pytest.mark.hub, pytest.mark.slow, pytest.mark.envs]


def build_image(engine, client, name: str) -> str:
    import docker

    image = load_dir(ROOT / "profiles").get(name).image
    try:
        client.images.get(image)
        return image
    except docker.errors.ImageNotFound:
        pass
    if name not in os.environ.get("GPULAB_TEST_IMAGES", "").split(","):
        # opt-in: on 2 cores this image took 19 min to build (Debian's build tools, Node.js and
        # code-server's native modules compiled in the image): more than CI's time allows
        pytest.skip(f"{image} is not built in this engine; GPULAB_TEST_IMAGES={name} builds it (not in CI)")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, str(ROOT / "images" / "build.py"), "--rootfs", "--only", name],
                       env=dict(os.environ, DOCKER_HOST=engine.host), capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        pytest.fail(f"building {image} failed:\n{r.stdout[-4000:]}\n{r.stderr[-3000:]}")
    print(f"built {image} in {time.monotonic() - t0:.0f} s")
    return image


@pytest.fixture(scope="module")
def vscode_image(docker_engine, docker_client, base_image):
    return build_image(docker_engine, docker_client, "vscode")


@pytest.fixture(scope="module")
def hub(tmp_path_factory, local_backend, docker_engine, vscode_image):
    extra = docker_hub_config(docker_engine, "gltv")
    extra["mlflow"] = {"enabled": True}
    h = Hub(tmp_path_factory.mktemp("hub"), inventory="2xA100-80GB", local=dict(local_backend),
            # the profile's 4 CPUs are more than this 2-core machine has: Docker refuses that
            quotas={"default": {"max_gpus": 1, "max_servers": 1, "cpu_limit": 2}}, extra=extra)
    h.start(timeout=180)  # four services (MLflow's server among them) start one after the other
    h.create_users("vera", "walt")
    yield h
    h.close()


FIND_CODE_SERVER = """
import os
for p in os.listdir("/proc"):
    try:
        cmd = open(f"/proc/{p}/cmdline", "rb").read()
    except OSError:
        continue
    if b"code-server" in cmd and b"--socket" in cmd:
        print(open(f"/proc/{p}/environ", "rb").read().decode(errors="replace"), end="")
        break
"""


def test_image_holds_the_pins_it_was_checked_against(docker_client, vscode_image):
    """The installer's marker in the image: the same spec (so the same stamp) as the profile's."""
    import json

    c = docker_client.containers.run(vscode_image, ["cat", f"/opt/gpulab/venv/{install.MARKER}"], detach=True)
    try:
        c.wait(timeout=60)  # all of its output, then remove it (remove=True can cut the output short)
        marker = json.loads(c.logs(stdout=True, stderr=False))
    finally:
        c.remove(force=True)
    spec = load_dir(ROOT / "profiles").get("vscode").environment
    assert marker["spec"] == spec.as_dict() and marker["versions"]["jupyter-vscode-proxy"] == "0.7"


def test_vscode_in_a_container(hub, docker_client):
    server = hub.start_server("vera", {"profile": "vscode", "gpus": 1}, timeout=180)
    vera = {"Authorization": f"token {hub.user_token('vera')}"}
    r = requests.get(f"{hub.url}/user/vera/", headers=vera, allow_redirects=False, timeout=30)
    assert r.status_code == 302 and r.headers["Location"].rstrip("?").endswith("/user/vera/vscode/"), r.headers
    deadline = time.monotonic() + 120
    while True:
        r = requests.get(f"{hub.url}/user/vera/vscode/", headers=vera, timeout=60)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert r.status_code == 200 and "code-server" in r.text.lower(), (r.status_code, r.text[:500])
    walt = {"Authorization": f"token {hub.user_token('walt')}"}
    r = requests.get(f"{hub.url}/user/vera/vscode/", headers=walt, allow_redirects=False, timeout=30)
    assert r.status_code in (403, 404) and "code-server" not in r.text.lower()
    # code-server's environment inside the container: the GPUs and MLflow of the server
    container = next(c for c in docker_client.containers.list() if c.name == "gltv-vera")
    out = container.exec_run(["python3", "-c", FIND_CODE_SERVER]).output.decode(errors="replace")
    env = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    assert env, container.exec_run(["python3", "-c", "import os; print(os.listdir('/proc'))"]).output
    assert env["NVIDIA_VISIBLE_DEVICES"] == ",".join(server["state"]["gpus"]) and env["GPULAB_GPU_COUNT"] == "1"
    assert env["MLFLOW_TRACKING_URI"] == f"{hub.url}/services/mlflow"
    hub.stop_server("vera")
