"""The SLURM backend against a real single-node SLURM with 4 fake GPUs (tests/support/slurmcluster.py):
real hubs, real batch jobs as per-user system accounts, real single-user servers.

Proves: two users get disjoint CUDA_VISIBLE_DEVICES chosen by SLURM; a third waits PENDING with
SLURM's reason on the progress page and starts when one stops; quota refusals; a job killed with
scancel ends its server and frees its allocation; a job that dies before its server answers
fails the spawn at once; a hub restart re-attaches to running jobs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from hub_plugins.spawners.slurm.capacity import SlurmCapacity
from tests.conftest import require
from tests.hub.test_form import form_model, login, signup
from tests.support import slurmcluster
from tests.support.hubproc import Hub

pytestmark = [pytest.mark.hub, pytest.mark.slurm, pytest.mark.slow]

QUOTAS = {"default": {"max_gpus": 2, "max_servers": 2}}


@pytest.fixture(scope="session")
def slurm():
    why = slurmcluster.missing()
    require(why is None, f"SLURM: {why}")
    cluster = slurmcluster.SlurmCluster().start()
    yield cluster
    cluster.stop()


def slurm_config(local_backend: dict, **over) -> dict:
    cfg = {
        "backend": "slurm",
        "slurm": {
            "gres_types": {"a100": "A100-80GB"},
            "time_limit": "01:00:00",
            "system_user_prefix": local_backend["system_user_prefix"],
            "create_users": True,
            "home_root": local_backend["home_root"],
            "listen_ip": "127.0.0.1",  # one node: the hub reaches servers on loopback
            "refresh_seconds": 2,
            "start_timeout": 120,
        },
    }
    cfg["slurm"].update(over)
    return cfg


@pytest.fixture(scope="module")
def hub(slurm, module_hub_factory, local_backend):
    h = module_hub_factory(inventory="auto", quotas=QUOTAS, extra=slurm_config(local_backend))
    h.create_users("ann", "bob", "cat", "dan")
    r = signup(h, "admin")  # for the spawn form (admins are approved on sign-up)
    assert r.status_code == 200, r.text[:300]
    return h


def server_env(hub: Hub) -> dict[str, dict[str, str]]:
    """JUPYTERHUB_USER -> environment of that user's single-user server (read from /proc)."""
    out = {}
    for pid in hub.server_pids():
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        env = dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)
        if "JUPYTERHUB_USER" in env:
            out[env["JUPYTERHUB_USER"]] = env
    return out


def progress_messages(hub: Hub, user: str, until, timeout: float = 60) -> list[str]:
    """Read the spawn's progress event stream until ``until(message)`` is true."""
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = requests.get(f"{hub.url}/hub/api/users/{user}/server/progress",
                         headers={"Authorization": f"token {hub.token}"}, stream=True, timeout=timeout)
        for line in r.iter_lines():
            if line.startswith(b"data:"):
                msg = json.loads(line[5:]).get("message", "")
                messages.append(msg)
                if until(msg):
                    return messages
        time.sleep(0.5)
    raise AssertionError(f"no such progress message in {timeout}s: {messages}")


def job_of(hub: Hub, user: str, server: str = "") -> dict:
    st, model = hub.api("GET", f"/users/{user}")
    return model["servers"][server]["state"]


def test_gpus_are_disjoint_a_third_user_queues_with_the_reason_and_starts_when_one_stops(hub, slurm):
    t0 = time.monotonic()
    hub.start_server("ann", {"gpus": 2})
    ready_ann = time.monotonic() - t0
    hub.start_server("bob", {"gpus": 2})
    envs = server_env(hub)
    ann, bob = envs["ann"]["CUDA_VISIBLE_DEVICES"], envs["bob"]["CUDA_VISIBLE_DEVICES"]
    assert len(ann.split(",")) == 2 and len(bob.split(",")) == 2
    assert not set(ann.split(",")) & set(bob.split(",")), (ann, bob)
    assert envs["ann"]["GPULAB_GPUS"] == ann and envs["ann"]["GPULAB_GPU_TYPE"] == "A100-80GB"
    state = job_of(hub, "ann")
    assert state["gpus"] == [] and state["gpu_type"] == "A100-80GB" and state["job_id"]
    assert state["slurm_job"]["gpu_ids"] and state["slurm_job"]["node"] == slurm.node
    assert state["slurm_job"]["started"] and state["slurm_job"]["partition"] == "main"

    # what the form shows comes from SLURM: no GPU free now, and a request queues
    reader = SlurmCapacity(gres_types={"a100": "A100-80GB"})
    inv = reader.refresh_now()
    reader.stop()
    assert inv.summary() == {"A100-80GB": 4} and len(inv.free(set())) == 0 and inv.source == "slurm"
    session, r = login(hub, "admin")
    deadline = time.monotonic() + 10
    while True:  # the hub re-reads capacity every 2 s here
        model = form_model(session.get(f"{hub.url}/hub/spawn").text)
        if model["free"][0]["free"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [(a["gpu_type"], a["free"], a["total"]) for a in model["free"]] == [("A100-80GB", 0, 4)]
    minimal = next(p for p in model["profiles"] if p["name"] == "minimal")
    one = next(c for c in minimal["choices"]["A100-80GB"] if c["count"] == 1)
    assert (one["ok"], one["why"]) == (True, "queues: none free now")

    # 4 of 4 GPUs taken: cat's job waits in SLURM's queue, and the progress page says why
    spawn = threading.Thread(target=hub.spawn, args=("cat", {"gpus": 2}))
    spawn.start()
    msgs = progress_messages(hub, "cat", lambda m: "[Resources]" in m and "estimated start" in m)
    assert "Waiting in the SLURM queue" in msgs[-1] and "waiting for GPUs, CPUs or memory" in msgs[-1], msgs
    assert "position 1 of 1" in msgs[-1], msgs  # (the backfill estimate: when a running job's --time ends)
    assert any("Quota checked: asking the scheduler for 2 A100-80GB GPUs" in m for m in msgs), msgs
    pending = [j for j in slurm.jobs() if j["state"] == "PENDING"]
    assert len(pending) == 1 and pending[0]["reason"] == "Resources"
    spawn.join()

    t1 = time.monotonic()
    hub.stop_server("ann")
    hub.wait_ready("cat", timeout=60)
    queued_start = time.monotonic() - t1
    cat = server_env(hub)["cat"]["CUDA_VISIBLE_DEVICES"]
    assert set(cat.split(",")) == set(ann.split(",")), (cat, ann)  # the GPUs ann gave back
    print(f"\nSLURM spawn-to-ready {ready_ann:.1f}s; queued server ready {queued_start:.1f}s after a stop")
    hub.stop_server("bob")
    hub.stop_server("cat")
    assert hub.servers_table() == []
    assert [j for j in slurm.jobs() if j["state"] in ("RUNNING", "PENDING")] == []


def test_quota_and_impossible_requests_are_refused_before_any_job(hub, slurm):
    hub.start_server("dan", {"gpus": 1})
    st, body = hub.spawn("dan", {"gpus": 2}, server="second")
    assert st == 403 and "allows 2 GPUs at a time and you use 1" in body["message"], body
    st, body = hub.spawn("bob", {"gpus": 5})
    assert st == 400 and "from 0 to 4" in body["message"]
    st, body = hub.spawn("bob", {"gpus": 1, "gpu_type": "H100"})
    assert st == 400 and "Unknown GPU type 'H100'" in body["message"] and "A100-80GB" in body["message"]
    st, body = hub.spawn("bob", {"gpus": 1, "gres": "gpu:a100:4"})
    assert st == 400 and "gres" in body["message"]  # no way to pass user text into #SBATCH lines
    assert len([j for j in slurm.jobs() if j["state"] in ("RUNNING", "PENDING")]) == 1
    hub.stop_server("dan")


def test_scancel_ends_the_server_and_frees_its_allocation(hub, slurm):
    hub.start_server("ann", {"gpus": 1})
    job_id = job_of(hub, "ann")["job_id"]
    assert [s["user_name"] for s in hub.servers_table()] == ["ann"]
    slurm.scancel(job_id)
    hub.wait_gone("ann", timeout=30)  # found by poll (hub.poll_interval 2 s)
    assert hub.servers_table() == []
    log = hub.log_path.read_text()
    assert "SLURM job %s was cancelled" % job_id in log
    # the usage record (spawner state, read by post_stop hooks) was closed with how the job ended
    assert f"usage {{'job_id': '{job_id}'" in log and "'end_state': 'CANCELLED'" in log
    # and the quota is free again
    hub.start_server("ann", {"gpus": 2})
    hub.stop_server("ann")


def test_a_job_that_dies_before_its_server_answers_fails_the_spawn_at_once(slurm, hub_factory, local_backend):
    tmp_path = Path(tempfile.mkdtemp(prefix="gpulab-broken-", dir="/tmp"))  # job users must reach it
    env = tmp_path / "brokenenv"
    (env / "bin").mkdir(parents=True)
    for exe, body in (("jupyterhub-singleuser", "exit 0"), ("batchspawner-singleuser", "sleep 6; exit 3")):
        p = env / "bin" / exe
        p.write_text(f"#!/bin/sh\n{body}\n")
        p.chmod(0o755)
    for d in (tmp_path, env, env / "bin"):
        os.chmod(d, 0o755)
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "broken.yaml").write_text(
        f"display_name: Broken\nlocal: {{prefix: {env}}}\ngpus: {{counts: [0, 1]}}\n")
    h = hub_factory(inventory="auto", quotas=QUOTAS, profiles_dir=str(profiles),
                    extra={**slurm_config(local_backend), "default_profile": "broken"})
    h.create_users("eve")
    t0 = time.monotonic()
    st, _ = h.spawn("eve", {"gpus": 1})
    if st == 202:
        with pytest.raises(Exception):
            h.wait_ready("eve", timeout=60)
    elapsed = time.monotonic() - t0
    assert elapsed < 40, elapsed  # not start_timeout (120 s)
    log = h.log_path.read_text()
    # RUNNING was seen, then the job ended before reporting its port (batchspawner alone would
    # wait for start_timeout)
    assert "is running on" in log and "failed (exit code" in log and "before the server answered" in log, h.log_tail()
    h.wait_gone("eve", timeout=30)
    assert h.servers_table() == []
    shutil.rmtree(tmp_path)


def test_hub_restart_reattaches_to_running_jobs(slurm, hub_factory, local_backend):
    h = hub_factory(inventory="auto", quotas=QUOTAS, extra=slurm_config(local_backend))
    h.create_users("fay")
    h.start_server("fay", {"gpus": 1})
    job_id = job_of(h, "fay")["job_id"]
    h.terminate()  # servers (jobs) outlive the hub by design
    assert [j["state"] for j in slurm.jobs() if j["id"] == job_id] == ["RUNNING"]
    # a job this hub submitted but never recorded (a hub killed mid-spawn): nothing owns it
    tag = hashlib.sha256(h.gpulab_db_url.encode()).hexdigest()[:8]
    orphan = slurm.run("sbatch", "--parsable", "-J", "orphan", f"--comment=gpulab:{tag}:0123456789abcdef",
                       "-o", "/dev/null", "--wrap", "sleep 300").stdout.strip()
    h.start()
    model = h.server_model("fay")
    assert model and model["ready"] and model["state"]["job_id"] == job_id
    r = requests.get(f"{h.url}/user/fay/api/status", headers={"Authorization": f"token {h.token}"}, timeout=10)
    assert r.status_code == 200, r.text
    assert [s["user_name"] for s in h.servers_table()] == ["fay"]  # its quota is still held
    # the first spawn after the restart reconciles: the orphan is cancelled, fay's job is not
    h.create_users("gus")
    h.start_server("gus", {"gpus": 0})
    deadline = time.monotonic() + 15
    while any(j["id"] == orphan for j in slurm.jobs()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(j["id"] == orphan for j in slurm.jobs()), slurm.jobs()
    assert "cancelling orphaned SLURM job %s" % orphan in h.log_path.read_text()
    h.stop_server("gus")
    h.stop_server("fay")
    assert [j for j in slurm.jobs() if j["id"] == job_id and j["state"] == "RUNNING"] == []
    assert h.servers_table() == []
