"""The Docker backend against a real engine, through a real hub (simulated 4-GPU inventory)."""

from __future__ import annotations

import secrets
import time

import pytest
import requests

from tests.docker.conftest import docker_hub_config

pytestmark = [pytest.mark.docker, pytest.mark.hub]

QUOTAS = {
    "default": {"max_gpus": 1, "max_servers": 3},
    "groups": {
        "researcher": {"max_gpus": 2},
        "small": {"max_gpus": 1, "cpu_limit": 1, "mem_limit": "1G"},
    },
}


@pytest.fixture(scope="module")
def prefix():
    return f"gt{secrets.token_hex(3)}"


BROKEN = "gpulab/broken:1"
SLOW = "gpulab/slow:1"


@pytest.fixture(scope="module")
def profiles(tmp_path_factory, docker_client, base_image):
    """The shipped profiles plus 'broken': an image whose server exits at once."""
    import io
    import shutil

    from tests.docker.conftest import ROOT

    d = tmp_path_factory.mktemp("profiles")
    for p in (ROOT / "profiles").glob("*.yaml"):
        shutil.copy(p, d)
    (d / "broken.yaml").write_text(f"display_name: Broken\nimage: {BROKEN}\ngpus: {{counts: [0, 1]}}\n")
    dockerfile = (f"FROM {base_image}\n"
                  'CMD ["sh", "-c", "echo starting; echo cannot start: broken on purpose >&2; exit 3"]\n')
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=BROKEN, rm=True)
    # a server that takes 6 s before it starts answering (a big image, a slow disk)
    (d / "slow.yaml").write_text(f"display_name: Slow\nimage: {SLOW}\ngpus: {{counts: [0, 1]}}\n")
    dockerfile = (f"FROM {base_image}\n"
                  'CMD ["sh", "-c", "sleep 6; exec jupyterhub-singleuser \\"$@\\"", "slow"]\n')
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=SLOW, rm=True)
    return str(d)


@pytest.fixture(scope="module")
def hub(module_hub_factory, docker_engine, base_image, prefix, profiles):
    extra = docker_hub_config(docker_engine, prefix)
    extra["mlflow"] = {"enabled": True}
    return module_hub_factory(quotas=QUOTAS, extra=extra, profiles_dir=profiles)


def container(client, name):
    return client.containers.get(name)


def pid1_env(c) -> dict[str, str]:
    """PID 1's environment: what the NVIDIA runtime hook saw (`docker exec env` does not show
    what the engine's GPU driver injected)."""
    out = c.exec_run(["cat", "/proc/1/environ"]).output
    return dict(kv.split("=", 1) for kv in out.decode().split("\0") if "=" in kv)


def held(hub, user):
    return sorted(a["visible_id"] for a in hub.allocations() if a["user_name"] == user)


def test_device_requests_labels_limits(hub, docker_client, docker_engine, prefix):
    hub.create_users("ann", "bob", groups={"researcher": ["ann"], "small": ["bob"]})
    a = hub.start_server("ann", {"profile": "minimal", "gpus": 2})
    b = hub.start_server("bob", {"profile": "minimal", "gpus": 1})
    ca, cb = container(docker_client, f"{prefix}-ann"), container(docker_client, f"{prefix}-bob")
    ids = {}
    for c, server, user in ((ca, a, "ann"), (cb, b, "bob")):
        hc = c.attrs["HostConfig"]
        reqs = hc["DeviceRequests"]
        assert len(reqs) == 1 and reqs[0]["Capabilities"] == [["gpu"]]
        assert reqs[0]["DeviceIDs"] == server["state"]["gpus"] == held(hub, user)
        ids[user] = set(reqs[0]["DeviceIDs"])
        labels = c.labels
        assert labels["gpulab.user"] == user and labels["gpulab.server"] == ""
        assert labels["gpulab.gpus"] == ",".join(server["state"]["gpus"])
        assert labels["gpulab.spawn_id"] == server["state"]["spawn_id"]
        assert hc["NetworkMode"] == "host" and c.attrs["Config"]["Image"] == base_image_of(hub)
        env = pid1_env(c)
        assert env["NVIDIA_VISIBLE_DEVICES"] == ",".join(server["state"]["gpus"])
        assert "CUDA_VISIBLE_DEVICES" not in env  # renumbered from 0 inside; host ids would be wrong
        assert env["JUPYTERHUB_SERVICE_URL"].startswith("http://127.0.0.1:")
        r = requests.get(f"{hub.url}/user/{user}/api/status", headers={"Authorization": f"token {hub.token}"})
        assert r.status_code == 200
    assert len(ids["ann"]) == 2 and len(ids["bob"]) == 1 and not ids["ann"] & ids["bob"]
    # the stub NVIDIA hook saw exactly each container's devices
    hook = "\n".join(docker_engine.hook_lines())
    assert f"NVIDIA_VISIBLE_DEVICES={','.join(a['state']['gpus'])}" in hook
    # profile minimal: 2 CPUs, 4G; bob's group caps them at 1 CPU, 1G
    assert ca.attrs["HostConfig"]["NanoCpus"] == 2 * 10**9 and ca.attrs["HostConfig"]["Memory"] == 4 * 2**30
    assert cb.attrs["HostConfig"]["NanoCpus"] == 10**9 and cb.attrs["HostConfig"]["Memory"] == 2**30
    assert pid1_env(cb)["MEM_LIMIT"] == str(2**30)
    hub.stop_server("ann")
    hub.stop_server("bob")
    assert held(hub, "ann") == held(hub, "bob") == []
    assert not docker_client.containers.list(all=True, filters={"name": f"{prefix}-ann"})


def base_image_of(hub):
    from tests.docker.conftest import base_image_tag

    return base_image_tag()


def test_cpu_only_server_sees_no_gpu(hub, docker_client, prefix):
    hub.create_users("cara")
    hub.start_server("cara", {"profile": "minimal", "gpus": 0})
    c = container(docker_client, f"{prefix}-cara")
    assert not c.attrs["HostConfig"].get("DeviceRequests")
    assert pid1_env(c)["NVIDIA_VISIBLE_DEVICES"] == "void"
    hub.stop_server("cara")


def test_home_volume_persists_across_stop_start(hub, docker_client, prefix):
    hub.create_users("dora")
    hub.start_server("dora", {"gpus": 0})
    c = container(docker_client, f"{prefix}-dora")
    assert c.exec_run(["sh", "-c", "echo kept > /home/jovyan/work/note.txt"]).exit_code == 0
    hub.stop_server("dora")
    hub.start_server("dora", {"gpus": 0}, server="exp1")  # a named server shares the home
    c = container(docker_client, f"{prefix}-dora--exp1")
    assert c.exec_run(["cat", "/home/jovyan/work/note.txt"]).output.strip() == b"kept"
    vol = docker_client.volumes.get(f"{prefix}-home-dora")
    assert vol.attrs["Labels"]["gpulab.user"] == "dora"
    hub.stop_server("dora", server="exp1")


def test_docker_kill_frees_gpus_at_next_poll(hub, docker_client, prefix):
    hub.create_users("erin")
    hub.start_server("erin", {"gpus": 1})
    assert len(held(hub, "erin")) == 1
    container(docker_client, f"{prefix}-erin").kill()
    hub.wait_gone("erin", timeout=20)  # poll_interval is 2 s in tests
    assert held(hub, "erin") == []
    assert not docker_client.containers.list(all=True, filters={"name": f"{prefix}-erin"})  # removed too


def test_missing_image_says_make_images(hub):
    hub.create_users("fred")
    st, body = hub.spawn("fred", {"profile": "pytorch", "gpus": 1})
    assert st == 400
    assert "is not built; run `make images`" in body["message"] and "gpulab/pytorch:" in body["message"]
    assert held(hub, "fred") == []


def test_user_names_are_escaped(hub, docker_client, prefix):
    name = "g.{prefix}-x"  # braces would be a format template in DockerSpawner's name_template
    hub.create_users(name)
    hub.start_server(name, {"gpus": 0})
    c = [c for c in docker_client.containers.list(filters={"label": "gpulab.user=" + name})]
    assert len(c) == 1 and c[0].name == f"{prefix}-g-2e-7bprefix-7d-2dx"
    hub.stop_server(name)


def test_hub_restart_reconciles(hub, docker_client, prefix):
    hub.create_users("hank", "ivy")
    hub.start_server("hank", {"gpus": 1})
    ivy = hub.start_server("ivy", {"gpus": 1})
    hub_id = container(docker_client, f"{prefix}-hank").labels["gpulab.hub"]
    hub.kill()  # as a crash: servers live on
    # while the hub is down: ivy's container is renamed (its server cannot find it), and a
    # container of this hub that no server claims appears (as a hub killed mid-spawn leaves)
    container(docker_client, f"{prefix}-ivy").rename(f"{prefix}-lost-ivy")
    ghost = docker_client.containers.run(
        base_image_of(hub), ["sleep", "600"], name=f"{prefix}-ghost", detach=True, network_mode="host",
        labels={"gpulab.hub": hub_id, "gpulab.kind": "server", "gpulab.user": "ghost",
                "gpulab.user_id": "999", "gpulab.server": "", "gpulab.gpus": "3"},
    )
    hub.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and docker_client.containers.list(all=True, filters={"name": f"{prefix}-ghost"}):
        time.sleep(0.5)
    names = {c.name for c in docker_client.containers.list(all=True, filters={"label": f"gpulab.hub={hub_id}"})}
    assert names == {f"{prefix}-hank"}, names  # both orphans gone, hank's server kept
    assert ghost.id and held(hub, "ivy") == [] and len(held(hub, "hank")) == 1
    assert hub.server_model("hank")["ready"]
    assert "stopping orphan server ghost" in hub.log_tail(400)  # found by its labels, no server holds it
    # ivy's GPU is free again: only hank's allocation is left
    assert [a["user_name"] for a in hub.allocations()] == ["hank"]
    assert ivy["state"]["gpus"][0] not in held(hub, "hank")
    hub.stop_server("hank")


def test_hub_killed_mid_spawn_keeps_its_container(hub, docker_client, prefix):
    """The hub dies while a container is starting, before it recorded where the server listens:
    the restarted hub checks it on 127.0.0.1 (not on the machine's host name) and keeps it, with
    its GPU; nothing is shut down 60 s later."""
    hub.create_users("kim", "lou")
    st, _ = hub.spawn("kim", {"profile": "slow", "gpus": 1})
    assert st in (201, 202)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not docker_client.containers.list(filters={"name": f"{prefix}-kim"}):
        time.sleep(0.2)
    before = container(docker_client, f"{prefix}-kim")
    hub.kill()  # while its server sleeps before answering: JupyterHub has not recorded it
    hub.start()
    model = hub.wait_ready("kim", timeout=90)
    assert container(docker_client, f"{prefix}-kim").id == before.id  # the same container, adopted
    assert held(hub, "kim") == model["state"]["gpus"] == before.labels["gpulab.gpus"].split(",")
    assert model["state"]["spawn_id"] == before.labels["gpulab.spawn_id"]
    lou = hub.start_server("lou", {"gpus": 1})
    assert lou["state"]["gpus"] != model["state"]["gpus"]
    r = requests.get(f"{hub.url}/user/kim/api/status", headers={"Authorization": f"token {hub.token}"}, timeout=10)
    assert r.status_code == 200, r.text  # reachable through the proxy, where the hub now routes it
    hub.stop_server("kim")
    hub.stop_server("lou")


def test_mlflow_from_inside_a_container(hub, docker_client, prefix):
    """The container's own Python (the image's MLflow client) logs a run with the injected
    variables, over the hub's proxy on 127.0.0.1 (host networking)."""
    hub.create_users("mona")
    server = hub.start_server("mona", {"gpus": 1}, timeout=120)
    code = ("import mlflow, json\n"
            "with mlflow.start_run() as r: mlflow.log_metric('acc', 0.9)\n"
            "t = mlflow.MlflowClient().get_run(r.info.run_id).data.tags\n"
            "print(json.dumps({'exp': mlflow.get_experiment(r.info.experiment_id).name, 'tags': t}))")
    res = container(docker_client, f"{prefix}-mona").exec_run(["python", "-c", code])
    assert res.exit_code == 0, res.output.decode()[-2000:]
    import json

    got = json.loads(res.output.decode().strip().splitlines()[-1])
    assert got["exp"] == "mona/notebooks"  # one experiment per user (docs/mlflow.md)
    assert got["tags"]["gpulab.user"] == "mona" and got["tags"]["gpulab.gpus"] == server["state"]["gpus"][0]
    hub.stop_server("mona")


def test_server_that_exits_while_starting(hub, docker_client, prefix):
    """Fails at once (not after http_timeout) with the container's last words; GPUs freed."""
    hub.create_users("nils")
    t0 = time.monotonic()
    st, body = hub.spawn("nils", {"profile": "broken", "gpus": 1})
    if st == 202:  # slower than JupyterHub's slow_spawn_timeout: wait for the end
        hub.wait_gone("nils", timeout=60)
        message = hub.log_tail(200)
    else:
        message = body["message"]
    assert st in (202, 500) and time.monotonic() - t0 < 30
    assert "exited while starting" in message and "broken on purpose" in message
    assert held(hub, "nils") == []
    assert not docker_client.containers.list(all=True, filters={"name": f"{prefix}-nils"})
