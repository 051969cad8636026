"""gpulab.yaml: validated with messages naming the key; applied by small functions."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jupyterhub.app import JupyterHub
from traitlets.config import Config

from hub_plugins.outage import DatabaseOutage
from hub_plugins.pages.handlers import HANDLERS as PAGE_HANDLERS
from hub_plugins.settings.apply import apply_all
from hub_plugins.settings.errors import ConfigError
from hub_plugins.settings.hubapp import add_pages
from hub_plugins.settings.loader import load
from hub_plugins.settings.apply import gpulab_db_url, update_api_tokens, update_gpulab, update_hub

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "a" * 40


def write(tmp_path, data) -> Path:
    data = {"profiles_dir": str(ROOT / "profiles"), **data}
    p = tmp_path / "gpulab.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def test_shipped_config_is_valid():
    cfg = load(ROOT / "config" / "gpulab.yaml")
    assert cfg["hub"]["bind_url"] == "http://127.0.0.1:8000"
    assert cfg["gpus"]["inventory"] == "auto"
    assert cfg["hub"]["state_dir"] == str(ROOT / "config" / "state")  # relative to the yaml


def test_defaults_and_paths(tmp_path):
    cfg = load(write(tmp_path, {"hub": {"state_dir": "st"}}))
    assert cfg["hub"]["state_dir"] == str(tmp_path / "st")
    assert cfg["quotas"]["default"] == {"max_gpus": 1, "max_servers": 2}
    assert cfg["backend"] == "local" and cfg["default_profile"] == "minimal"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"hub": {"bind_urll": "x"}}, "hub: unknown key 'bind_urll'"),
        ({"quotass": {}}, "unknown key 'quotass'"),
        ({"hub": {"bind_url": "127.0.0.1:8000"}}, "hub.bind_url: '127.0.0.1:8000' is not in the expected form"),
        ({"hub": {"db_url": "mysql://x"}}, "hub.db_url"),
        ({"hub": {"admin_users": "admin"}}, "hub.admin_users: 'admin' is not of type 'array'"),
        ({"hub": {"api_tokens": {"ci": "short"}}}, "hub.api_tokens.ci"),
        ({"gpus": {"inventory": "4xA100-80GB+mig(9g.90gb)"}}, "gpus.inventory"),
        ({"gpus": {"inventory": 4}}, "gpus.inventory: 4 is not of type 'string'"),
        ({"backend": "lokal"}, "backend: 'lokal' is not one of"),
        ({"quotas": {"default": {"max_gpus": -1}}}, "quotas.default.max_gpus: -1 is less than the minimum of 0"),
        ({"quotas": {"groups": {"student": {"max_gpu": 1}}}}, "quotas.groups.student: unknown key 'max_gpu'"),
        ({"quotas": {"resolve": "generous"}}, "quotas.resolve"),
        ({"quotas": {"overrides": [{"user": "ann", "max_gpus": 2}]}}, "'expires' is a required property"),
        ({"quotas": {"overrides": [{"user": "ann", "max_gpus": 2, "expires": "next week", "reason": "x"}]}},
         "quotas.overrides[0].expires"),
        ({"quotas": {"groups": {"s": {"profiles": ["pytorh"]}}}}, "quotas.groups.s.profiles: unknown profile 'pytorh'"),
        ({"quotas": {"default": {"gpu_types": ["A100 80GB"]}}}, "quotas.default.gpu_types"),
        ({"quotas": {"default": {"mem_limit": "lots"}}}, "quotas.default.mem_limit"),
        ({"default_profile": "gpu-max"}, "default_profile: unknown profile 'gpu-max'"),
        ({"profiles_dir": "/nonexistent"}, "profiles_dir: /nonexistent is not a directory"),
        ({"local": {"system_user_prefix": "Root "}}, "local.system_user_prefix"),
        ({"gpus": {"sharing": [{"gpus": "A100-80GB", "shares": 1}]}}, "gpus.sharing[0].shares: 1 is less than"),
        ({"gpus": {"sharing": [{"gpus": "A100-80GB"}]}}, "'shares' is a required property"),
        ({"gpus": {"sharing": [{"gpus": ["MIG-x"], "shares": 2}]}}, "gpus.sharing[0].gpus"),
        ({"gpus": {"sharing": [{"gpus": "A100-80GB:1g.10gb", "shares": 2}]}}, "gpus.sharing[0]"),
        ({"gpus": {"sharing": [{"gpus": "A100-80GB", "shares": 2, "mps": True}]}}, "unknown key 'mps'"),
        # durations past what Python's dates hold: OverflowError far from the file, before
        ({"queue": {"age_after_hours": 1e20}}, "queue.age_after_hours: 1e+20 is greater than the maximum of 87840"),
        ({"queue": {"fair_share_days": 10_000_000}}, "queue.fair_share_days: 10000000 is greater than the maximum"),
        ({"culler": {"keep_alive_max_hours": 1e20}}, "culler.keep_alive_max_hours: 1e+20 is greater than"),
        ({"culler": {"interval_seconds": 1e20}}, "culler.interval_seconds: 1e+20 is greater than"),
        ({"culler": {"policies": [{"name": "x", "gpu_idle_minutes": 1e300}]}}, "gpu_idle_minutes: 1e+300 is greater"),
    ],
)
def test_invalid_configs_name_the_key(tmp_path, data, message):
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, data))
    assert message in str(e.value)


def test_not_yaml(tmp_path):
    p = tmp_path / "gpulab.yaml"
    p.write_text("hub: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(p)
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "missing.yaml")


def test_token_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("GL_TOKEN", "b" * 40)
    (tmp_path / "tok").write_text("c" * 40 + "\n")
    cfg = load(write(tmp_path, {"hub": {"api_tokens": {"a": "env:GL_TOKEN", "f": f"file:{tmp_path}/tok"}}}))
    assert cfg["hub"]["api_tokens"] == {"a": "b" * 40, "f": "c" * 40}
    with pytest.raises(ConfigError, match="environment variable NOPE is not set"):
        load(write(tmp_path, {"hub": {"api_tokens": {"a": "env:NOPE"}}}))


def test_apply(tmp_path):
    cfg = load(write(tmp_path, {"hub": {"api_tokens": {"ci": TOKEN}}, "gpus": {"inventory": "2xA100-80GB"},
                                 "quotas": {"groups": {"r": {"max_gpus": 2}}}}))
    c = Config()
    apply_all(c, cfg)
    assert c.JupyterHub.spawner_class == "gpulab-local"
    assert c.JupyterHub.authenticator_class == "gpulab-native"
    assert c.JupyterHub.db_url == f"sqlite:///{tmp_path}/state/jupyterhub.sqlite"
    assert c.GPULab.db_url == f"sqlite:///{tmp_path}/state/gpulab.sqlite"
    assert c.GPULab.inventory_spec == "2xA100-80GB"
    assert c.GPULab.quotas["groups"]["r"]["max_gpus"] == 2
    assert c.JupyterHub.cleanup_servers is False and c.JupyterHub.allow_named_servers is True
    assert {"name": "ci", "api_token": TOKEN} in c.JupyterHub.services
    assert {"name": "admin", "services": ["ci"]} in c.JupyterHub.load_roles
    services = {s["name"]: s for s in c.JupyterHub.services}
    assert services["billing"]["url"] == "http://127.0.0.1:10101"
    # admin rights in the services come from gpulab's own scopes, never from list:users
    assert services["billing"]["oauth_client_allowed_scopes"] == [
        "access:services!service=billing", "custom:gpulab:read:usage", "custom:gpulab:admin:queue"]
    # an admin's own token for the quotas page may also create people and fill groups (the hub
    # checks those rights, which people do not hold)
    assert services["quotas"]["oauth_client_allowed_scopes"] == [
        "access:services!service=quotas", "custom:gpulab:admin:overrides", "admin:users", "admin:groups"]
    # gpulab's own pages open without an OAuth consent click
    assert all(services[s]["oauth_no_confirm"] for s in ("billing", "quotas", "mlflow"))
    assert set(c.JupyterHub.custom_scopes) == {"custom:gpulab:read:usage", "custom:gpulab:admin:queue",
                                               "custom:gpulab:admin:overrides", "custom:gpulab:admin:settings"}
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["gpulab-admin"]["scopes"] == list(c.JupyterHub.custom_scopes)
    assert roles["gpulab-admin"]["users"] == ["admin"] and roles["gpulab-admin"]["services"] == ["ci"]
    assert c.JupyterHub.tornado_settings == {"cookie_options": {"samesite": "Lax"}, "slow_spawn_timeout": 3,
                                             "transforms": [DatabaseOutage]}
    assert roles["user"]["scopes"] == ["self", "shares!user", "access:services!service=billing",
                                      "access:services!service=quotas", "access:services!service=mlflow"]
    # the hub's own token may only remove (refused) servers
    assert roles["gpulab-hub"]["scopes"] == ["delete:servers"] and roles["gpulab-hub"]["services"] == ["gpulab-hub"]
    assert services["gpulab-hub"]["api_token"] == c.RefusedServers.token and len(c.RefusedServers.token) == 64
    # quota groups exist at start-up, with their listed members; the pages extend JupyterHub's
    assert c.JupyterHub.load_groups == {"r": {"users": []}}
    assert c.JupyterHub.template_paths[0].endswith("hub_plugins/pages/templates")
    assert "extra_handlers" not in c.JupyterHub  # deprecated: hubapp.add_pages adds them
    assert c.GPULab.settings_file == cfg["_path"]
    # least privilege: the billing service only reads; the culler may stop (and restart) servers
    assert roles["gpulab-billing"]["scopes"] == ["list:users", "read:users:groups", "list:groups", "read:groups"]
    assert "admin:users" not in roles["gpulab-culler"]["scopes"] and "servers" in roles["gpulab-culler"]["scopes"]
    assert oct(os.stat(tmp_path / "state").st_mode & 0o777) == "0o700"


def test_postgres_db_shared():
    cfg = {"hub": {"db_url": "postgresql://u@h/db", "state_dir": "/x"}}
    assert gpulab_db_url(cfg) == "postgresql://u@h/db"


def test_update_functions_are_independent(tmp_path):
    cfg = load(write(tmp_path, {}))
    c = Config()
    update_hub(c, cfg)
    update_gpulab(c, cfg)
    update_api_tokens(c, cfg)
    assert "load_roles" not in c.JupyterHub  # no tokens, no role change
    assert c.JupyterHub.bind_url == "http://127.0.0.1:8000"


def test_hub_refuses_to_start_on_bad_config(tmp_path):
    """The real `jupyterhub -f config/jupyterhub_config.py` exits with the message."""
    p = write(tmp_path, {"quotas": {"default": {"max_gpus": "two"}}})
    r = subprocess.run(
        [str(Path(sys.executable).parent / "jupyterhub"), "-f", str(ROOT / "config" / "jupyterhub_config.py")],
        env=dict(os.environ, GPULAB_CONFIG=str(p)), capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert r.returncode != 0
    assert "quotas.default.max_gpus: 'two' is not of type 'number', 'null'" in r.stderr
    assert "the hub will not start" in r.stderr


def test_override_without_expiry(tmp_path):
    cfg = load(write(tmp_path, {"quotas": {"overrides": [
        {"user": "ann", "max_gpus": 3, "expires": None, "reason": "permanent exception"}]}}))
    from hub_plugins.quota import QuotaConfig

    assert QuotaConfig.from_config(cfg["quotas"]).overrides[0].expires is None


def test_root_never_runs_servers_as_root(tmp_path):
    """A hub running as root with local.system_users: never would run every server as root: it
    does not start, and says what to set."""
    from hub_plugins.settings.apply import check_local_backend

    cfg = load(write(tmp_path, {"local": {"system_users": "never"}}))
    with pytest.raises(ConfigError, match="Set local.system_users: auto"):
        check_local_backend(cfg, euid=0)
    assert "local servers" in check_local_backend(cfg, euid=1000)  # not root: allowed, limits said
    assert check_local_backend(load(write(tmp_path, {"backend": "docker"})), euid=0) == ""
    off = load(write(tmp_path, {"local": {"limits": "off"}}))
    assert "NOT held to any limit: local.limits is off" in check_local_backend(off, euid=0)


def test_gpulabs_pages_join_the_hubs_handlers_before_its_catch_alls():
    """Where JupyterHub puts extra_handlers: a ``/hub/api/gpulab/...`` request must reach gpulab's
    handler, not JupyterHub's 404 for any other ``/hub/api/...``."""
    app = JupyterHub()
    app.authenticator = app.authenticator_class(parent=app)
    add_pages(app)
    app.init_handlers()
    patterns = [h[0] for h in app.handlers]
    ours = [patterns.index(f"/hub{path}") for path, _ in PAGE_HANDLERS]
    assert max(ours) < patterns.index("/hub/logo") < patterns.index("/hub/api/(.*)")
    assert patterns.index("/hub/api/users/([^/]+)/servers/([^/]*)") < min(ours)  # after JupyterHub's own
    assert not app.extra_handlers

