"""Spawning through a real hub's REST API: GPUs, quotas, capacity, bad input, release."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.hub

TOMORROW = (dt.date.today() + dt.timedelta(days=2)).isoformat()
LAST_WEEK = (dt.date.today() - dt.timedelta(days=7)).isoformat()

QUOTAS = {
    "default": {"max_gpus": 1, "max_servers": 3},
    "groups": {
        "researcher": {"max_gpus": 2},
        "big": {"max_gpus": 4},
        "nomig": {"max_gpus": 4, "gpu_types": ["A100-80GB"]},
        "vsonly": {"profiles": ["vscode"]},
    },
    "overrides": [
        {"user": "olga", "max_gpus": 3, "expires": TOMORROW, "reason": "deadline"},
        {"user": "pete", "max_gpus": 3, "expires": LAST_WEEK, "reason": "expired"},
    ],
}


@pytest.fixture(scope="module")
def hub(module_hub_factory):
    return module_hub_factory(inventory="4xA100-80GB, 1xA100-80GB+mig(3g.40gb,4*1g.10gb)", quotas=QUOTAS)


def proc_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def held_by(hub, user):
    return sorted(a["visible_id"] for a in hub.allocations() if a["user_name"] == user)


def test_spawn_with_gpus_sets_env_and_state(hub):
    hub.create_users("ann", groups={"researcher": ["ann"]})
    server = hub.start_server("ann", {"profile": "minimal", "gpus": 2})
    state = server["state"]
    assert state["gpus"] == ["0", "1"] and state["gpu_type"] == "A100-80GB" and state["pid"]
    env = proc_env(state["pid"])
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1" == env["NVIDIA_VISIBLE_DEVICES"] == env["GPULAB_GPUS"]
    assert env["GPULAB_PROFILE"] == "minimal"
    if os.geteuid() == 0:  # each hub user runs as their own system user
        assert env["USER"].endswith("-ann") and env["USER"] != "root"
        assert os.stat(f"/proc/{state['pid']}").st_uid != 0
    # the server is really up, behind the proxy
    r = requests.get(f"{hub.url}/user/ann/api/status", headers={"Authorization": f"token {hub.token}"})
    assert r.status_code == 200
    assert held_by(hub, "ann") == ["0", "1"]
    hub.stop_server("ann")
    assert held_by(hub, "ann") == []


def test_cpu_only_server_sees_no_gpu(hub):
    hub.create_users("cpu")
    server = hub.start_server("cpu", {"profile": "minimal", "gpus": 0})
    env = proc_env(server["state"]["pid"])
    assert env["CUDA_VISIBLE_DEVICES"] == "" == env["GPULAB_GPUS"]
    assert server["state"]["gpus"] == []
    hub.stop_server("cpu")


def test_mig_slices_by_uuid_and_quota_in_equivalents(hub):
    hub.create_users("mia")
    server = hub.start_server("mia", {"gpus": 1, "gpu_type": "A100-80GB:1g.10gb"})
    ids = server["state"]["gpus"]
    assert len(ids) == 1 and ids[0].startswith("MIG-")
    assert proc_env(server["state"]["pid"])["CUDA_VISIBLE_DEVICES"] == ids[0]
    # a slice (1/7) plus a whole GPU exceeds the default limit of 1 GPU-equivalent
    st, body = hub.spawn("mia", {"gpus": 1, "gpu_type": "A100-80GB"}, server="second")
    assert st == 403 and "you use 0.14 (server 'default')" in body["message"], body
    hub.stop_server("mia")


def test_quota_refusal_explains_itself(hub):
    hub.create_users("bo")
    st, body = hub.spawn("bo", {"profile": "minimal", "gpus": 3})
    assert st == 403
    assert body["message"] == (
        "You asked for 3 GPUs; the default quota allows 1 GPU at a time and you use none. "
        "Ask for fewer GPUs or ask an admin for an override."
    )
    assert hub.server_model("bo") is None and held_by(hub, "bo") == []


def test_named_servers_are_summed(hub):
    hub.create_users("rita", groups={"researcher": ["rita"]})
    hub.start_server("rita", {"gpus": 1}, server="exp1")
    hub.start_server("rita", {"gpus": 1}, server="exp2")
    st, body = hub.spawn("rita", {"gpus": 1}, server="exp3")
    assert st == 403
    assert "group 'researcher' allows 2 GPUs at a time and you use 2 (servers 'exp1', 'exp2')" in body["message"]
    # a CPU-only third server is fine (3 servers allowed)
    hub.start_server("rita", {"gpus": 0}, server="exp3")
    st, body = hub.spawn("rita", {"gpus": 0}, server="exp4")
    assert st == 403 and "You already run 3 servers ('exp1', 'exp2', 'exp3')" in body["message"]
    for s in ("exp1", "exp2", "exp3"):
        hub.stop_server("rita", s)
    assert held_by(hub, "rita") == []


def test_overrides_apply_until_they_expire(hub):
    hub.create_users("olga", "pete")
    hub.start_server("olga", {"gpus": 3})  # override: 3 until the day after tomorrow
    st, body = hub.spawn("pete", {"gpus": 3})  # override expired last week
    assert st == 403 and "the default quota allows 1 GPU" in body["message"]
    hub.stop_server("olga")


def test_capacity_refusal_names_what_is_free(hub):
    hub.create_users("big1", "big2", "waiter", groups={"big": ["big1", "big2", "waiter"]})
    hub.start_server("big1", {"gpus": 3})
    st, body = hub.spawn("big2", {"gpus": 2, "gpu_type": "A100-80GB"})
    assert st == 409, body
    assert body["message"].startswith("Not enough free GPUs for 2 A100-80GB GPUs right now: 1 of 4 is free.")
    assert "Free now: 1 A100-80GB GPU, 1 A100-80GB:3g.40gb MIG slice, 4 A100-80GB:1g.10gb MIG slices" in body["message"]
    assert hub.server_model("big2") is None and held_by(hub, "big2") == []
    hub.stop_server("big1")


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"profile": "nope"}, 400, "Unknown profile 'nope'. Available: minimal, pytorch, tensorflow, vscode."),
        ({"profile": ["minimal"]}, 400, "'profile' must be a profile name"),
        ({"gpus": 5}, 400, "'gpus' must be a whole number from 0 to 4, got 5."),
        ({"gpus": -1}, 400, "from 0 to 4, got -1"),
        ({"gpus": "lots"}, 400, "got 'lots'"),
        ({"gpus": 1.5}, 400, "got 1.5"),
        ({"gpus": None}, 400, "got None"),
        ({"gpus": 1, "gpu_type": "V100"}, 400, "Unknown GPU type 'V100'. This hub has: A100-80GB,"),
        ({"gpus": 1, "gpu_type": {"x": 1}}, 400, "'gpu_type' must be a GPU type name"),
        ({"profile": "vscode", "gpus": 2}, 400, "Profile 'vscode' allows 0 or 1 GPUs; you asked for 2."),
        ({"gpu": 1}, 400, "Unknown option 'gpu'. Allowed: profile, gpus, gpu_type, queue, runtime, project, preemptible."),
        ({"runtime": "forever"}, 400, "'runtime' must be a duration from 5 minutes to 30 days"),
        ({"queue": "maybe"}, 400, "'queue' must be true or false"),
        ({"project": "../x"}, 400, "'project' must be a project name"),
        ({"project": "nope"}, 400, "You are not a member of project 'nope'."),
        ({"profile": "pytorch"}, 400, "Profile 'pytorch' cannot start here: its environment is not installed"),
        ("[1, 2]", 400, "must be a JSON object"),  # refused by JupyterHub itself
    ],
)
def test_bad_input(hub, body, status, message):
    hub.create_users("eve")
    st, payload = hub.spawn("eve", body)
    assert st == status, payload
    assert message in payload["message"]
    assert hub.server_model("eve") is None and held_by(hub, "eve") == []


def test_group_rules_on_profile_and_type(hub):
    hub.create_users("nora", groups={"nomig": ["nora"]})
    st, body = hub.spawn("nora", {"gpus": 1, "gpu_type": "A100-80GB:1g.10gb"})
    assert st == 403 and "GPU type 'A100-80GB:1g.10gb' is not available to you (group 'nomig' allows: A100-80GB)" in body["message"]
    hub.create_users("vic", groups={"vsonly": ["vic"]})
    st, body = hub.spawn("vic", {"profile": "minimal"})
    assert st == 403 and "Profile 'minimal' is not available to you (group 'vsonly' allows: vscode)" in body["message"]


def test_user_token_works_for_own_servers_only(hub):
    hub.create_users("tia", "tom")
    tia = hub.user_token("tia")
    st, body = hub.spawn("tom", {"gpus": 1}, token=tia)
    assert st == 404 or st == 403, body  # cannot even see tom
    st, body = hub.spawn("tia", {"gpus": 4}, token=tia)  # crafted options cannot beat the quota
    assert st == 403 and "allows 1 GPU" in body["message"]
    st, body = hub.spawn("tia", {"gpus": 1}, token=tia)
    assert st in (201, 202), body
    hub.wait_ready("tia")
    assert hub.api("DELETE", "/users/tom/server", token=tia)[0] in (403, 404)
    assert hub.api("DELETE", "/users/tia/server", token=tia)[0] in (202, 204)
    hub.wait_gone("tia")


def read_progress(hub, user, server=""):
    """The spawn progress event stream, as the progress page reads it, until ready or failed."""
    path = hub.server_path(user, server) + "/progress"
    messages = []
    with requests.get(f"{hub.url}/hub/api{path}", stream=True, timeout=120,
                      headers={"Authorization": f"token {hub.token}"}) as r:
        for line in r.iter_lines():
            if line.startswith(b"data:"):
                event = json.loads(line[5:])
                messages.append(event.get("message", ""))
                if event.get("ready") or event.get("failed"):
                    break
    return messages


def test_progress_reads_like_a_sentence(hub):
    import threading

    hub.create_users("pia")
    result = {}
    t = threading.Thread(target=lambda: result.update(r=hub.spawn("pia", {"gpus": 1, "gpu_type": "A100-80GB"})))
    t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (hub.server_model("pia") or {}).get("pending"):
        time.sleep(0.02)
    messages = read_progress(hub, "pia")
    t.join()
    assert result["r"][0] in (201, 202)
    text = " | ".join(messages)
    assert "Reserved GPUs" in text and "(1 A100-80GB GPU)" in text, text
    assert "Starting JupyterLab (profile 'Minimal') ..." in text, text
    assert text.index("Reserved GPUs") < text.index("Starting JupyterLab"), text
    hub.stop_server("pia")


def test_server_that_dies_releases_its_gpus(hub):
    hub.create_users("dan", groups={"researcher": ["dan"]})
    server = hub.start_server("dan", {"gpus": 2})
    os.kill(server["state"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30  # poll_interval is 2 s in these hubs
    while time.monotonic() < deadline and (held_by(hub, "dan") or hub.server_model("dan")):
        time.sleep(0.3)
    assert held_by(hub, "dan") == [] and hub.server_model("dan") is None
    hub.start_server("dan", {"gpus": 2})  # and they can be had again
    hub.stop_server("dan")
