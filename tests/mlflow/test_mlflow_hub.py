"""A real MLflow server as a hub service: the env injected into servers works, users are isolated,
the UI opens through hub login. Servers use the local backend here (any backend gets the same
env: it comes from ``c.GPULab.env_providers``); the Docker tests run the client in a container."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.hub.test_form import login, signup
from tests.support.polling import wait_for

pytestmark = [pytest.mark.hub, pytest.mark.slow]

LOG_RUN = """
import json, time, mlflow
with mlflow.start_run() as run:
    mlflow.log_param("lr", 0.1)
    mlflow.log_metric("loss", 0.5)
    mlflow.log_text("hello", "notes.txt")
    time.sleep(2.5)  # mlflow.gpu_metrics is on, sampling every second
print(json.dumps({"run_id": run.info.run_id, "experiment_id": run.info.experiment_id}))
"""

READ_RUN = """
import json, sys, mlflow
from mlflow.exceptions import MlflowException
try:
    run = mlflow.MlflowClient().get_run(sys.argv[1])
    print(json.dumps({"ok": True, "tags": run.data.tags, "metrics": run.data.metrics}))
except MlflowException as e:
    print(json.dumps({"ok": False, "code": e.get_http_status_code(), "error": e.error_code}))
"""


def proc_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def mlflow_env(server: dict) -> dict[str, str]:
    env = proc_env(server["state"]["pid"])
    return {k: v for k, v in env.items() if k.startswith("MLFLOW_")}


def run_client(code: str, env: dict, *args) -> dict:
    """The MLflow client with a server's MLflow variables, in the servers' Python environment."""
    full = {"PATH": os.environ["PATH"], "HOME": "/tmp", **env}
    assert env.get("MLFLOW_TRACKING_URI"), "the server got no MLflow environment"
    r = subprocess.run([sys.executable, "-c", code, *args], env=full, capture_output=True, text=True,
                       timeout=120, cwd="/tmp")
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def hub(module_hub_factory):
    return module_hub_factory(quotas={"default": {"max_gpus": 2, "max_servers": 3}},
                              extra={"mlflow": {"enabled": True, "gpu_metrics": True, "gpu_metrics_interval": 1}})


@pytest.fixture(scope="module")
def runs(hub):
    """alice logs a run from her server's environment; bob and the admin start servers."""
    hub.create_users("alice", "bob", "admin")
    alice = hub.start_server("alice", {"profile": "minimal", "gpus": 2}, timeout=150)
    bob = hub.start_server("bob", {"profile": "minimal", "gpus": 0}, timeout=150)
    admin = hub.start_server("admin", {"profile": "minimal", "gpus": 0}, timeout=150)
    envs = {"alice": mlflow_env(alice), "bob": mlflow_env(bob), "admin": mlflow_env(admin)}
    logged = run_client(LOG_RUN, envs["alice"])
    yield {"envs": envs, "alice": alice, "run": logged}


def test_servers_get_mlflow_env(hub, runs):
    env = runs["envs"]["alice"]
    assert env["MLFLOW_TRACKING_URI"] == f"{hub.url}/services/mlflow"
    assert env["MLFLOW_TRACKING_USERNAME"] == "alice"
    assert env["MLFLOW_TRACKING_PASSWORD"].startswith("gl1.")
    assert env["MLFLOW_EXPERIMENT_NAME"] == "alice/notebooks"  # one per user, whatever the server
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert runs["envs"]["bob"]["MLFLOW_TRACKING_PASSWORD"] != env["MLFLOW_TRACKING_PASSWORD"]


def test_run_is_logged_and_tagged(runs):
    got = run_client(READ_RUN, runs["envs"]["alice"], runs["run"]["run_id"])
    assert got["ok"] and got["metrics"]["loss"] == 0.5
    # system metrics (GPU ones too where NVML finds a GPU) went to the active run
    assert any(k.startswith("system/") for k in got["metrics"]), got["metrics"]
    tags = got["tags"]
    assert tags["gpulab.user"] == tags["mlflow.user"] == "alice"
    assert tags["gpulab.profile"] == "minimal" and tags["gpulab.server"] == ""
    assert tags["gpulab.gpus"] == ",".join(runs["alice"]["state"]["gpus"])


def test_named_servers_share_the_users_experiment(hub, runs):
    """One experiment per user: a named server logs into alice/notebooks too, its runs tagged
    with the server that made them (named servers no longer multiply experiments)."""
    named = hub.start_server("alice", {"profile": "minimal", "gpus": 0}, server="exp2", timeout=150)
    env = mlflow_env(named)
    assert env["MLFLOW_EXPERIMENT_NAME"] == "alice/notebooks"
    logged = run_client(LOG_RUN.replace("time.sleep(2.5)", "pass"), env)
    assert logged["experiment_id"] == runs["run"]["experiment_id"]
    got = run_client(READ_RUN, env, logged["run_id"])
    assert got["tags"]["gpulab.server"] == "exp2" and got["tags"]["gpulab.user"] == "alice"
    hub.stop_server("alice", "exp2")


def test_other_user_cannot_read_but_admin_can(runs):
    got = run_client(READ_RUN, runs["envs"]["bob"], runs["run"]["run_id"])
    assert not got["ok"] and got["code"] == 403
    assert run_client(READ_RUN, runs["envs"]["admin"], runs["run"]["run_id"])["ok"]


def why(r, hub) -> str:
    """What an unexpected answer was, with what the hub and its proxy logged around it (a 503
    from the proxy comes with the hub's error page, which says nothing)."""
    lines = [ln for ln in hub.log_tail(400).splitlines() if "mlflow" in ln.lower() or "ConfigProxy" in ln]
    return f"{r.status_code} {r.headers} {r.text[:300]}\n" + "\n".join(lines[-30:])


def basic(env):
    raw = f"{env['MLFLOW_TRACKING_USERNAME']}:{env['MLFLOW_TRACKING_PASSWORD']}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def test_namespaces_and_credentials_are_enforced(hub, runs):
    api = f"{hub.url}/services/mlflow/api/2.0/mlflow"
    bob = runs["envs"]["bob"]
    r = requests.post(f"{api}/experiments/create", json={"name": "alice/stolen"}, headers=basic(bob))
    assert r.status_code == 403 and "belong to user alice" in r.json()["message"], r.text
    r = requests.post(f"{api}/experiments/create", json={"name": "bob/mine"}, headers=basic(bob))
    assert r.status_code == 200, r.text
    # bob's credential does not work as alice; a forged or absent one does not work at all
    forged = {**bob, "MLFLOW_TRACKING_USERNAME": "alice"}
    r = requests.get(f"{api}/experiments/search", headers=basic(forged))
    assert r.status_code == 401 and "invalid or expired" in r.text, why(r, hub)
    r = requests.get(f"{api}/experiments/search")
    assert r.status_code == 401, why(r, hub)
    r = requests.post(f"{api}/users/create", json={"username": "x", "password": "y" * 12}, headers=basic(bob))
    assert r.status_code == 403 and "managed by JupyterHub" in r.json()["message"], r.text


def test_hub_token_works_as_mlflow_token(hub, runs):
    token = hub.user_token("alice")
    r = requests.get(f"{hub.url}/services/mlflow/api/2.0/mlflow/runs/get",
                     params={"run_id": runs["run"]["run_id"]}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["run"]["info"]["run_id"] == runs["run"]["run_id"]


def test_ui_through_hub_login(hub, runs):
    signup(hub, "admin")
    admin, _ = login(hub, "admin")
    signup(hub, "alice")
    assert admin.get(f"{hub.url}/hub/authorize/alice").status_code == 200  # NativeAuthenticator approval
    s, r = login(hub, "alice")
    assert r.status_code == 302
    r = s.get(f"{hub.url}/services/mlflow/", headers={"Accept": "text/html"})
    assert r.status_code == 200 and r.url == f"{hub.url}/services/mlflow/", r.url
    assert "<title>MLflow</title>" in r.text  # MLflow's UI, no second password
    # no telemetry notice, no assistant: the UI's settings come preset, its assistant API is refused
    assert "mlflow.telemetry.info.alert.dismissed_v1" in r.text and "[data-assistant-ui]" in r.text
    # a reload, as a browser sends it, with the validators it was given: MLflow answered 304 to
    # those, which was a 500 here; now the validators are of this page (tornado's own ETag)
    preset = "mlflow.telemetry.info.alert.dismissed_v1"
    since = s.get(f"{hub.url}/services/mlflow/", headers={"Accept": "text/html",
                                                          "If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"})
    assert since.status_code == 200 and preset in since.text, since.text[:300]
    assert "Last-Modified" not in r.headers
    again = s.get(f"{hub.url}/services/mlflow/", headers={"Accept": "text/html", "If-None-Match": r.headers["Etag"]})
    assert again.status_code == 304 or (again.status_code == 200 and preset in again.text), again.text[:300]
    r2 = s.get(f"{hub.url}/services/mlflow/ajax-api/3.0/mlflow/assistant/config",
               headers={"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"})
    assert r2.status_code == 403 and "assistant is turned off" in r2.json()["message"], r2.text
    assert any("/hub/api/oauth2/authorize" in h.headers.get("Location", "") for h in r.history)
    # the UI's own API calls (same origin, cookie) see alice's experiment, not bob's
    r = s.post(f"{hub.url}/services/mlflow/ajax-api/2.0/mlflow/experiments/search",
               json={"max_results": 100}, headers={"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"})
    assert r.status_code == 200, r.text
    names = {e["name"] for e in r.json().get("experiments", [])}
    assert "alice/notebooks" in names and "bob/mine" not in names
    # a cross-site write with alice's cookie is refused
    r = s.post(f"{hub.url}/services/mlflow/ajax-api/2.0/mlflow/experiments/create", json={"name": "alice/x"},
               headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"})
    assert r.status_code in (401, 403)
    # not logged in: sent to the hub's login
    r = requests.get(f"{hub.url}/services/mlflow/", headers={"Accept": "text/html"}, allow_redirects=False)
    assert r.status_code == 302


def test_artifacts_stream_through_and_stay_private(hub, runs):
    """A large upload and download pass through the service; another user's upload is refused
    promptly (MLflow answers before the body is read)."""
    exp, run = runs["run"]["experiment_id"], runs["run"]["run_id"]
    url = f"{hub.url}/services/mlflow/api/2.0/mlflow-artifacts/artifacts/{exp}/{run}/artifacts/blob.bin"
    blob = os.urandom(8 * 2**20)
    r = requests.put(url, data=blob, headers=basic(runs["envs"]["alice"]), timeout=60)
    assert r.status_code == 200, r.text
    r = requests.get(url, headers=basic(runs["envs"]["alice"]), timeout=60)
    assert r.status_code == 200 and r.content == blob
    r = requests.put(url.replace("blob.bin", "evil.bin"), data=blob, headers=basic(runs["envs"]["bob"]), timeout=60)
    assert r.status_code == 403
    assert requests.get(url, headers=basic(runs["envs"]["bob"]), timeout=60).status_code == 403


def test_refusals_never_break_the_next_request_through_the_proxy(hub, runs):
    """The front refuses before reading a request (401, 403) and tornado then closes that
    connection; the hub's proxy keeps connections alive, so unless the refusal says
    'Connection: close' the proxy may send the next request down the closing socket and answer it
    503 (CI saw it twice; here 4 in 900 requests before the fix). Refusals and forwarded requests
    alternate, on fresh client connections, as a client and the UI do."""
    api = f"{hub.url}/services/mlflow/api/2.0/mlflow"
    bob = runs["envs"]["bob"]
    forged = {**bob, "MLFLOW_TRACKING_USERNAME": "alice"}
    codes: dict[tuple[str, int], int] = {}
    for _ in range(300):
        for kind, method, headers, body in (("forged", "GET", basic(forged), None), ("none", "GET", {}, None),
                                            ("bob", "POST", basic(bob), {"max_results": 10})):
            r = requests.request(method, f"{api}/experiments/search", headers=headers, json=body)
            codes[(kind, r.status_code)] = codes.get((kind, r.status_code), 0) + 1
    assert codes == {("forged", 401): 300, ("none", 401): 300, ("bob", 200): 300}, codes


def test_the_hubs_service_check_is_not_logged(hub):
    """The hub GETs the service's root without credentials every minute to see that it is up:
    MLflow's 401 to it was a warning in the hub's log each minute. A 401 anywhere else is still
    logged as one."""
    assert requests.get(f"{hub.url}/services/mlflow/").status_code == 401
    assert requests.get(f"{hub.url}/services/mlflow/api/2.0/mlflow/experiments/search?gpulab-log").status_code == 401
    logged = lambda: hub.log_path.read_text(errors="replace")  # noqa: E731
    wait_for(lambda: "401 GET /services/mlflow/api/2.0/mlflow/experiments/search?gpulab-log" in logged(),
             timeout=10, what="the refused search in the log")
    assert "401 GET /services/mlflow/ (" not in logged()
