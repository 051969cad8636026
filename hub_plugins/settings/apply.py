"""Turn a loaded ``gpulab.yaml`` into traitlets config, one small function per concern (as TLJH's
``configurer`` does), each trivially testable: ``update_x(c, cfg)`` only assigns to ``c``, and
assigns whole values computed from the config alone (never appending to what another function
set), so the order they run in does not matter.

What is decided once per start (ports picked at random, the MLflow service's token) is a
:class:`~hub_plugins.settings.services.Runtime`, made once per loaded config and shared by the
functions that need it; the services themselves are built in ``services.py``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from traitlets.config import Config

from ..auth import NATIVE_TEMPLATES
from ..isolation import Enforcer
from ..mlflow import setup as mlflow
from ..mlflow.provider import PROVIDER
from ..outage import DatabaseOutage
from ..quota.limits import parse_bytes
from ..spawners.local.ports import server_ports
from ..scopes import (ADMIN_ROLE, ADMIN_SCOPES, BILLING_ALLOWED, BILLING_SCOPES, CULLER_SCOPES, CUSTOM_SCOPES,
                      QUOTAS_SERVICE_SCOPES)
from .auth import apply_auth
from .cluster import update_kubernetes, update_slurm
from .errors import ConfigError
from .hubapp import SyncAtCheckpoints, sqlite_file
from .loader import gpulab_db_url
from .services import _state, gpulab_services, runtime

BACKEND_SPAWNERS = {"local": "gpulab-local", "docker": "gpulab-docker", "slurm": "gpulab-slurm",
                    "kubernetes": "gpulab-kubernetes"}
PAGE_TEMPLATES = str(Path(__file__).resolve().parents[1] / "pages" / "templates")

__all__ = ["BACKEND_SPAWNERS", "BILLING_ALLOWED", "BILLING_SCOPES", "CULLER_SCOPES", "QUOTAS_SERVICE_SCOPES",
           "UPDATES", "apply_all", "check_local_backend", "gpulab_db_url", "update_admin_scopes",
           "update_api_tokens", "update_services"]


def prepare_state_dir(cfg: dict) -> None:
    """The state dir holds the cookie secret and databases: private to the hub's user."""
    state = cfg["hub"]["state_dir"]
    os.makedirs(state, mode=0o700, exist_ok=True)
    os.chmod(state, 0o700)


def update_hub(c: Config, cfg: dict) -> None:
    h = cfg["hub"]
    c.JupyterHub.bind_url = h["bind_url"]
    c.JupyterHub.hub_bind_url = h["hub_bind_url"]
    c.ConfigurableHTTPProxy.api_url = h["proxy_api_url"]
    c.JupyterHub.db_url = h["db_url"] or f"sqlite:///{_state(cfg, 'jupyterhub.sqlite')}"
    if h["sqlite_synchronous"] == "normal" and sqlite_file(c.JupyterHub.db_url):
        # JupyterHub's own file; gpulab's (allocations, usage) runs so always (store/db.py)
        c.JupyterHub.db_kwargs = {"connect_args": {"check_same_thread": False, "factory": SyncAtCheckpoints}}
    c.JupyterHub.cookie_secret_file = _state(cfg, "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = _state(cfg, "jupyterhub.pid")
    c.ConfigurableHTTPProxy.pid_file = _state(cfg, "jupyterhub-proxy.pid")
    c.JupyterHub.log_level = h["log_level"]
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = 0  # gpulab's quotas count servers, with messages
    c.JupyterHub.concurrent_spawn_limit = h["concurrent_spawn_limit"]
    # Servers outlive a hub restart; gpulab reconciles their allocations when it comes back.
    c.JupyterHub.cleanup_servers = False
    c.Spawner.poll_interval = h["poll_interval"]
    c.HubCollector.sweep_minutes = h["gc_sweep_minutes"]
    c.Spawner.start_timeout = h["start_timeout"]
    c.Spawner.http_timeout = h["http_timeout"]
    c.Spawner.default_url = "/lab"
    c.Authenticator.admin_users = set(h["admin_users"])
    # SameSite=Lax on every hub cookie (JupyterHub also uses these for its _xsrf cookie and hands
    # them to single-user servers): a cross-site POST never carries the session
    settings = dict(c.JupyterHub.get("tornado_settings", {}))
    settings["cookie_options"] = {**settings.get("cookie_options", {}), "samesite": "Lax"}
    # how long a spawn request waits before answering 202 (REST) or showing the progress page:
    # a request waiting in the queue answers 202 within this time (JupyterHub's default is 10 s)
    settings["slow_spawn_timeout"] = h["slow_spawn_seconds"]
    c.JupyterHub.tornado_settings = settings
    # `make run` installs the proxy into the checkout's node_modules; deployments have it on PATH
    local = Path(cfg.get("_project_root", ".")) / "node_modules" / ".bin" / "configurable-http-proxy"
    chp = str(local) if local.exists() else shutil.which("configurable-http-proxy")
    if chp:
        c.ConfigurableHTTPProxy.command = [chp]


# -- services and roles: pure builders, each (services, roles) ---------------------------------
def admin_tokens(cfg: dict) -> list[str]:
    """The ``hub.api_tokens`` that hold the admin role (those not narrowed by api_token_scopes)."""
    scoped = cfg["hub"].get("api_token_scopes") or {}
    return sorted(n for n in cfg["hub"]["api_tokens"] if n not in scoped)


def token_services(cfg: dict) -> tuple[list[dict], list[dict]]:
    """Each ``hub.api_tokens`` entry becomes a service holding the admin role (for automation)
    and gpulab's admin scopes (``admin_role``), or, when ``hub.api_token_scopes`` names it, a role
    with only those scopes (gpulab's ``custom:gpulab:...`` scopes among them if it needs them)."""
    tokens = cfg["hub"]["api_tokens"]
    scoped = cfg["hub"].get("api_token_scopes") or {}
    services = [{"name": name, "api_token": tok} for name, tok in tokens.items()]
    admins = admin_tokens(cfg)
    roles = [{"name": "admin", "services": admins}] if admins else []
    roles += [{"name": f"gpulab-token-{name}", "description": f"hub.api_token_scopes.{name}",
               "scopes": list(scoped[name]), "services": [name]} for name in sorted(scoped)]
    return services, roles


def admin_role(cfg: dict) -> dict:
    """gpulab's own scopes held together (``hub_plugins/scopes.py``): the services' admin rights.
    JupyterHub's 'admin' role cannot be given more scopes, so the ``gpulab-admin`` role goes to
    whoever gpulab makes admin: hub.admin_users and the admin automation tokens (identity-provider
    admins get it with their roles, see auth/mixin.py)."""
    role = {"name": ADMIN_ROLE, "description": "gpulab's admin rights in its services: everyone's usage, "
            "the queue, quota overrides", "scopes": list(ADMIN_SCOPES), "services": admin_tokens(cfg)}
    # when the identity provider manages roles, JupyterHub refuses users in load_roles: the
    # authenticator grants the role at each login instead (admin_users included)
    if not (cfg["auth"]["kind"] != "native" and cfg["auth"].get("roles")):
        role["users"] = sorted(cfg["hub"]["admin_users"])
    return role


def update_services(c: Config, cfg: dict) -> None:
    """Every hub service, role and custom scope gpulab defines: API tokens, gpulab's admin
    scopes, billing, quotas, the culler and MLflow, and the 'user' role that lets people open
    gpulab's pages."""
    tokens, token_roles = token_services(cfg)
    services, roles, user_scopes = gpulab_services(cfg)
    c.JupyterHub.services = tokens + services
    c.JupyterHub.custom_scopes = dict(CUSTOM_SCOPES)
    c.RefusedServers.token = runtime(cfg).hub_token  # the gpulab-hub service's token
    user = {"name": "user", "description": "Standard user privileges, and gpulab's pages", "scopes": ["self"]}
    roles = [*token_roles, admin_role(cfg), *roles, user]
    for scope in user_scopes:
        roles = mlflow.grant_user_scope(roles, scope)
    c.JupyterHub.load_roles = roles


def update_api_tokens(c: Config, cfg: dict) -> None:
    """Only the API tokens' services and roles: for the z2jh hub (``spawners/kubernetes/
    hubconfig.py``), where the chart's values define gpulab's services and this adds the tokens to
    them (with ``update_admin_scopes``, the only updates that add to what another source set)."""
    tokens, roles = token_services(cfg)
    if tokens:
        c.JupyterHub.services = [*c.JupyterHub.get("services", []), *tokens]
    if roles:
        c.JupyterHub.load_roles = [*c.JupyterHub.get("load_roles", []), *roles]


def update_admin_scopes(c: Config, cfg: dict) -> None:
    """gpulab's custom scopes and the ``gpulab-admin`` role, for the z2jh hub (on one machine
    ``update_services`` sets them with the rest)."""
    c.JupyterHub.custom_scopes = {**c.JupyterHub.get("custom_scopes", {}), **CUSTOM_SCOPES}
    theirs = [r for r in c.JupyterHub.get("load_roles", []) if r.get("name") != ADMIN_ROLE]
    c.JupyterHub.load_roles = [*theirs, admin_role(cfg)]


def update_auth(c: Config, cfg: dict) -> None:
    auth = cfg["auth"]
    if auth["kind"] == "native":
        c.JupyterHub.authenticator_class = "gpulab-native"
        # NativeAuthenticator only lets approved users authenticate; JupyterHub 5+ additionally
        # requires an allow rule, or it refuses everyone: approval *is* the allow rule here.
        c.NativeAuthenticator.allow_all = True
        for key, value in auth["native"].items():
            setattr(c.NativeAuthenticator, key, value)
    else:  # an identity provider: its class, settings and group mapping (settings/auth.py)
        apply_auth(c, cfg)


def update_spawner(c: Config, cfg: dict) -> None:
    c.JupyterHub.spawner_class = BACKEND_SPAWNERS[cfg["backend"]]
    local = cfg["local"]
    c.LocalGPUSpawner.system_users = local["system_users"]
    c.LocalGPUSpawner.system_user_prefix = local["system_user_prefix"]
    c.LocalGPUSpawner.home_root = local["home_root"]
    c.LocalGPUSpawner.shared_home_root = _state(cfg, "homes")
    c.LocalGPUSpawner.limits_mode = local["limits"]
    c.LocalGPUSpawner.port_range = local["port_range"]


def check_local_backend(cfg: dict, euid: int | None = None) -> str:
    """Start-up checks of the local backend: refuse to run servers as root, and say which limits
    this host enforces (returned, for the hub's log). Raises ConfigError."""
    if cfg["backend"] != "local":
        return ""
    euid = os.geteuid() if euid is None else euid
    if euid == 0 and cfg["local"]["system_users"] == "never":
        raise ConfigError(
            "local.system_users: 'never' with a hub running as root would run every server as root, beside the "
            "hub's secrets. Set local.system_users: auto (each hub user gets their own system account), or run the "
            "hub as an unprivileged user.")
    try:
        server_ports(cfg["local"]["port_range"], None)
    except ValueError as e:
        raise ConfigError(f"local.{e}") from None
    return Enforcer.detect(cfg["local"]["limits"]).summary()


def update_gpulab(c: Config, cfg: dict) -> None:
    c.GPULab.inventory_spec = cfg["gpus"]["inventory"]
    c.GPULab.inventory_refresh_seconds = cfg["gpus"]["refresh_seconds"]
    c.GPULab.sharing = list(cfg["gpus"]["sharing"])
    c.GPULab.max_gpus_per_server = cfg["gpus"]["max_per_server"]
    c.GPULab.db_url = gpulab_db_url(cfg)
    c.GPULab.profiles_dir = cfg["profiles_dir"]
    c.GPULab.default_profile = cfg["default_profile"]
    c.GPULab.quotas = cfg["quotas"]
    c.GPULab.billing = cfg["billing"]
    c.GPULab.budgets = cfg["budgets"]
    c.GPULab.queue_settings = cfg["queue"]
    c.GPULab.settings_file = cfg["_path"]  # quotas, prices, budgets, queue: reloaded as it changes
    c.GPULab.state_dir = cfg["hub"]["state_dir"]
    c.GPULab.reconcile_interval = cfg["hub"]["poll_interval"]


def update_pages(c: Config, cfg: dict) -> None:
    """gpulab's pages in the hub: its templates first (they extend JupyterHub's), then the
    native sign-in's. Their handlers (``/hub/gpulab/...``, ``/hub/api/gpulab/...``) are added to
    the running hub (``hubapp.add_pages``)."""
    c.JupyterHub.template_paths = [PAGE_TEMPLATES, *([NATIVE_TEMPLATES] if cfg["auth"]["kind"] == "native" else [])]


def update_groups(c: Config, cfg: dict) -> None:
    """Every quota group exists in the hub from the start, with its listed ``members`` (accounts
    are created for people who have not signed in yet). JupyterHub's load_groups only adds: a
    name removed from the file stays in the group until removed on the admin page. With an
    identity provider the groups are the IdP's (JupyterHub refuses load_groups then)."""
    if cfg["auth"]["kind"] != "native":
        return
    groups = cfg["quotas"]["groups"] or {}
    c.JupyterHub.load_groups = {name: {"users": list((limits or {}).get("members") or [])}
                                for name, limits in groups.items()}


def update_docker(c: Config, cfg: dict) -> None:
    """The Docker backend's settings (applied whatever the backend; used when it is docker)."""
    d = cfg["docker"]
    if d["host"]:
        c.DockerGPUSpawner.client_kwargs = {"base_url": d["host"]}
    c.DockerGPUSpawner.pull_policy = d["pull_policy"]
    c.DockerGPUSpawner.prefix = d["name_prefix"]
    c.DockerGPUSpawner.home_mount = d["home_mount"]
    c.DockerGPUSpawner.shm_size = parse_bytes(d["shm_size"]) if d["shm_size"] else 0
    c.DockerGPUSpawner.pids_limit = d["pids_limit"]
    c.DockerGPUSpawner.remove_orphans = d["remove_orphans"]
    c.DockerGPUSpawner.orphan_grace_seconds = d["orphan_grace_seconds"]
    m = d["mps"]
    c.DockerGPUSpawner.mps_enabled = m["enabled"]
    c.DockerGPUSpawner.mps_uid = m["uid"]
    c.DockerGPUSpawner.mps_image = m["image"] or ""
    c.DockerGPUSpawner.mps_control_command = list(m["control_command"])


def update_mlflow(c: Config, cfg: dict) -> None:
    """Every server's MLflow environment (the service itself is in ``update_services``)."""
    m = cfg["mlflow"]
    if m["enabled"]:
        # the one list gpulab adds to rather than sets: a site adds its own providers in the site
        # section of jupyterhub_config.py (traitlets merges the two); no other update touches it
        c.GPULab.env_providers.append(PROVIDER)
        rt = runtime(cfg)
        mlflow.configure_env(c, m, cfg["hub"]["bind_url"], rt.mlflow_port, rt.mlflow_token)


def update_environments(c: Config, cfg: dict) -> None:
    """``environments``: where the spawners find the profiles' environments (the service that
    builds them is in ``update_services``)."""
    envs = cfg["environments"]
    c.Environments.dir = envs["dir"]
    c.Environments.build_missing = envs["build_missing"]


def update_outage(c: Config, cfg: dict) -> None:
    """While the database is unreachable, the hub answers 503 saying so instead of 403/500
    (``hub_plugins/outage.py``: a tornado output transform, added to any configured ones)."""
    settings = dict(c.JupyterHub.get("tornado_settings", {}))
    settings["transforms"] = [t for t in settings.get("transforms", []) if t is not DatabaseOutage] + [DatabaseOutage]
    c.JupyterHub.tornado_settings = settings


UPDATES = (update_hub, update_auth, update_pages, update_groups, update_spawner, update_gpulab, update_services,
           update_docker, update_mlflow, update_slurm, update_kubernetes, update_environments, update_outage)


def apply_all(c: Config, cfg: dict) -> None:
    prepare_state_dir(cfg)
    for update in UPDATES:
        update(c, cfg)
    said = check_local_backend(cfg)
    if said:
        print(said, file=sys.stderr)
