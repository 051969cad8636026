"""Pure parts of the MLflow service and its hub side: credentials, rules, env, config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from traitlets.config import Config

from hub_plugins.mlflow.provider import MLflowEnv, env_for
from hub_plugins.mlflow.setup import grant_user_scope
from hub_plugins.settings.errors import ConfigError
from hub_plugins.settings.loader import load
from hub_plugins.settings.apply import apply_all
from services.mlflow import policy, tokens
from services.mlflow.server import auth_ini, load_secrets, rotate_key

ROOT = Path(__file__).resolve().parents[2]
KEY = b"k" * 32


def test_tokens_round_trip_and_reject_tampering():
    c = tokens.Claims("alice", "exp", "pytorch", ("1", "3"), "A100-80GB", False, "s1", exp=2000)
    tok = tokens.issue(KEY, c)
    assert tokens.verify(KEY, tok, now=1000) == c
    assert tokens.verify(KEY, tok, now=2001) is None  # expired
    assert tokens.verify(b"x" * 32, tok, now=1000) is None  # other key (rotated)
    prefix, payload, sig = tok.split(".")
    evil = tokens._b64(json.dumps({**c.to_json(), "user": "bob"}).encode())
    assert tokens.verify(KEY, f"{prefix}.{evil}.{sig}", now=1000) is None
    for junk in ("", "gl1", "gl1.a.b", "x.y.z", tok + "x"):
        assert tokens.verify(KEY, junk, now=1000) is None


def test_account_passwords_are_derived_per_user_and_key():
    a = tokens.account_password(KEY, "alice")
    assert a == tokens.account_password(KEY, "alice") != tokens.account_password(KEY, "bob")
    assert a != tokens.account_password(b"y" * 32, "alice") and len(a) == 64


@pytest.mark.parametrize("user, server, profile, name", [
    ("alice", "", "pytorch", "alice/notebooks"),
    ("alice", "exp1", "pytorch", "alice/notebooks"),  # named servers do not multiply experiments
    ("alice", "exp2", "minimal", "alice/notebooks"),
    ("bob", "", "", "bob/notebooks"),
])
def test_one_experiment_per_user(user, server, profile, name):
    assert policy.experiment_name(user, server, profile) == name


CREATE = "/api/2.0/mlflow/experiments/create"


@pytest.mark.parametrize("path, method, body, user, admin, refused", [
    (CREATE, "POST", {"name": "alice/x"}, "alice", False, False),
    (CREATE, "POST", {"name": "alice/x"}, "bob", False, True),          # another user's namespace
    (CREATE, "POST", {"name": "alice/x"}, "root", True, False),         # admins may
    (CREATE, "POST", {"name": "shared-study"}, "bob", False, False),    # no '/': free
    ("/ajax-api/2.0/mlflow/experiments/create", "POST", {"name": "a/x"}, "b", False, True),
    ("/api/2.0/mlflow/experiments/update", "POST", {"experiment_id": "1", "new_name": "alice/y"}, "bob", False, True),
    ("/api/2.0/mlflow/users/create", "POST", {"username": "x"}, "bob", False, True),
    ("/api/2.0/mlflow/users/update-password", "PATCH", {}, "bob", False, True),
    ("/api/2.0/mlflow/users/create", "POST", {"username": "x"}, "root", True, False),
    ("/signup", "GET", {}, "bob", False, True),
    ("/api/3.0/mlflow/users/permissions/grant", "POST", {}, "bob", False, False),  # sharing is MLflow's call
    ("/api/2.0/mlflow/runs/create", "POST", {}, "bob", False, False),
    # MLflow's assistant runs tools on the host for "local" callers: every caller is local here
    ("/ajax-api/3.0/mlflow/assistant/message", "POST", {}, "bob", False, True),
    ("/ajax-api/3.0/mlflow/assistant/config", "GET", {}, "root", True, True),
    ("/ajax-api/3.0/mlflow/assistant-stats", "GET", {}, "bob", False, False),
])
def test_refusals(path, method, body, user, admin, refused):
    why = policy.refusal(path, method, json.dumps(body).encode(), user, admin)
    assert bool(why) == refused, why


def test_runs_are_tagged_with_the_spawn():
    body = json.dumps({"experiment_id": "1", "tags": [
        {"key": "mine", "value": "1"}, {"key": "gpulab.user", "value": "mallory"},
        {"key": "mlflow.user", "value": "jovyan"}]}).encode()
    tags = policy.run_tags("alice", "", "pytorch", ("2",), "A100-80GB")
    out = json.loads(policy.tag_run(body, tags))
    got = {t["key"]: t["value"] for t in out["tags"]}
    assert got["mine"] == "1" and got["gpulab.user"] == got["mlflow.user"] == out["user_id"] == "alice"
    assert got["gpulab.gpus"] == "2" and got["gpulab.profile"] == "pytorch"
    assert policy.run_tags("bob") == {"gpulab.user": "bob", "mlflow.user": "bob"}  # the browser
    assert policy.tag_run(b"not json", tags) is not None


def test_the_ui_gets_its_preset_first_in_its_head():
    page = b'<!doctype html><html lang="en"><head><meta charset="utf-8"/><title>MLflow</title></head><body></body></html>'
    out = policy.with_preset(page)
    head = out.split(b"<head>", 1)[1]
    assert head.startswith(policy.UI_PRESET.encode()) and out.endswith(page[page.index(b"<meta"):])
    assert b"mlflow.telemetry.info.alert.dismissed_v1" in out and b"[data-assistant-ui]" in out
    assert policy.with_preset(b"no head here") == b"no head here"


def test_needs_body_only_for_small_json_calls():
    assert policy.needs_body("/api/2.0/mlflow/runs/create")
    assert not policy.needs_body("/api/2.0/mlflow-artifacts/artifacts/1/x/model.pkl")


def test_env_for_a_server():
    cfg = MLflowEnv(tracking_uri="http://hub/services/mlflow")
    creds = {"username": "alice", "password": "gl1.x.y", "experiment_name": "alice/pytorch"}
    env = env_for(creds, cfg)
    assert env == {"MLFLOW_TRACKING_URI": "http://hub/services/mlflow", "MLFLOW_TRACKING_USERNAME": "alice",
                   "MLFLOW_TRACKING_PASSWORD": "gl1.x.y", "MLFLOW_EXPERIMENT_NAME": "alice/pytorch",
                   "MLFLOW_DISABLE_TELEMETRY": "true"}
    cfg.gpu_metrics = True
    assert env_for(creds, cfg)["MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"] == "true"


def test_secrets_are_generated_private_and_rotatable(tmp_path):
    state = tmp_path / "mlflow"
    s = load_secrets(state)
    assert load_secrets(state) == s and len({s.flask_secret, s.admin_password, s.signing_key}) == 3
    assert (state / "secrets.json").stat().st_mode & 0o777 == 0o600 and state.stat().st_mode & 0o777 == 0o700
    ini = auth_ini(state, s).read_text()
    assert "default_permission = NO_PERMISSIONS" in ini and s.admin_password in ini
    r = rotate_key(state)
    assert r.signing_key != s.signing_key and r.admin_password == s.admin_password


def test_user_role_gets_access_to_the_service():
    assert grant_user_scope([], "access:services!service=mlflow") == [
        {"name": "user", "scopes": ["self", "access:services!service=mlflow"]}]
    roles = grant_user_scope([{"name": "user", "scopes": ["self", "x"]}, {"name": "admin"}], "y")
    assert roles[0]["scopes"] == ["self", "x", "y"] and roles[1] == {"name": "admin"}


def write(tmp_path, data) -> Path:
    p = tmp_path / "gpulab.yaml"
    p.write_text(yaml.safe_dump({"profiles_dir": str(ROOT / "profiles"), **data}))
    return p


def test_docker_and_mlflow_config_applied(tmp_path):
    cfg = load(write(tmp_path, {"backend": "docker", "docker": {"host": "unix:///x.sock", "shm_size": "2G"},
                                "mlflow": {"port": 8555, "gpu_metrics": True}}))
    cfg["_project_root"] = str(ROOT)
    c = Config()
    apply_all(c, cfg)
    assert c.JupyterHub.spawner_class == "gpulab-docker"
    assert c.DockerGPUSpawner.client_kwargs == {"base_url": "unix:///x.sock"} and c.DockerGPUSpawner.shm_size == 2 * 2**30
    assert c.DockerGPUSpawner.pull_policy == "never"
    svc = [s for s in c.JupyterHub.services if s["name"] == "mlflow"][0]
    assert svc["url"] == "http://127.0.0.1:8555" and len(svc["api_token"]) == 64
    inner = svc["command"][svc["command"].index("--") + 1:]  # run under its lifeline
    assert inner[1:3] == ["-m", "services.mlflow"]
    assert c.MLflowEnv.service_token == svc["api_token"] and c.MLflowEnv.gpu_metrics is True
    assert c.MLflowEnv.tracking_uri == "http://127.0.0.1:8000/services/mlflow"
    assert "hub_plugins.mlflow.provider:mlflow_env" in c.GPULab.env_providers.get_value([])
    # the service gets no hub permissions of its own; users may open it
    assert not [r for r in c.JupyterHub.load_roles if "mlflow" in r.get("services", [])]
    assert any("access:services!service=mlflow" in r["scopes"] for r in c.JupyterHub.load_roles)


def test_mlflow_off_adds_nothing(tmp_path):
    cfg = load(write(tmp_path, {"mlflow": {"enabled": False}}))
    c = Config()
    apply_all(c, cfg)
    assert not [s for s in c.JupyterHub.services if s["name"] == "mlflow"]


@pytest.mark.parametrize("data, where", [
    ({"docker": {"pull_policy": "sometimes"}}, "pull_policy"),
    ({"docker": {"name_prefix": "Bad Prefix"}}, "name_prefix"),
    ({"mlflow": {"backend_store_uri": "mongodb://x"}}, "backend_store_uri"),
    ({"mlflow": {"tokens": 1}}, "tokens"),
])
def test_bad_docker_and_mlflow_config(tmp_path, data, where):
    with pytest.raises(ConfigError, match=where):
        load(write(tmp_path, data))


class FakeSpawner:
    def __init__(self, config):
        import logging

        self.config, self.name, self._log_name, self.events = config, "", "alice", []
        self.user = type("U", (), {"name": "alice", "admin": False})()
        self.log = logging.getLogger("test")

    def gpulab_event(self, message, progress=None):
        self.events.append(message)


async def test_provider_starts_servers_without_mlflow_when_it_is_down():
    import socket

    from hub_plugins.mlflow.provider import mlflow_env

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = Config()
    c.MLflowEnv.service_url = f"http://127.0.0.1:{port}/services/mlflow/"
    c.MLflowEnv.service_token = "t" * 64
    c.MLflowEnv.wait_seconds = 1
    MLflowEnv.clear_instance()
    try:
        sp = FakeSpawner(c)
        prof = type("P", (), {"name": "minimal"})()
        assert await mlflow_env(sp, None, prof) == {}
        assert "starts without MLflow" in sp.events[-1]
        c.MLflowEnv.required = True
        MLflowEnv.clear_instance()
        from jupyterhub.spawner import SpawnException

        with pytest.raises(SpawnException, match="MLflow is unavailable"):
            await mlflow_env(FakeSpawner(c), None, prof)
    finally:
        MLflowEnv.clear_instance()
