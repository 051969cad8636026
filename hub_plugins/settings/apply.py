"""Turn a loaded ``gpulab.yaml`` into traitlets config, one small function per concern (as TLJH's
``configurer`` does), each trivially testable: ``update_x(c, cfg)`` only assigns to ``c``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path

from traitlets.config import Config

BACKEND_SPAWNERS = {"local": "gpulab-local", "docker": "gpulab-docker"}


def _state(cfg: dict, *parts: str) -> str:
    return os.path.join(cfg["hub"]["state_dir"], *parts)


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
    c.Spawner.start_timeout = h["start_timeout"]
    c.Spawner.http_timeout = h["http_timeout"]
    c.Spawner.default_url = "/lab"
    c.Authenticator.admin_users = set(h["admin_users"])
    # `make run` installs the proxy into the checkout's node_modules; deployments have it on PATH
    local = Path(cfg.get("_project_root", ".")) / "node_modules" / ".bin" / "configurable-http-proxy"
    chp = str(local) if local.exists() else shutil.which("configurable-http-proxy")
    if chp:
        c.ConfigurableHTTPProxy.command = [chp]


def update_api_tokens(c: Config, cfg: dict) -> None:
    """Each ``hub.api_tokens`` entry becomes a service holding the admin role (for automation),
    or, when ``hub.api_token_scopes`` names it, a role with only those scopes."""
    tokens = cfg["hub"]["api_tokens"]
    scoped = cfg["hub"].get("api_token_scopes") or {}
    services = list(c.JupyterHub.get("services", []))
    services += [{"name": name, "api_token": tok} for name, tok in tokens.items()]
    c.JupyterHub.services = services
    if tokens:
        roles = list(c.JupyterHub.get("load_roles", []))
        admins = sorted(n for n in tokens if n not in scoped)
        if admins:
            roles.append({"name": "admin", "services": admins})
        roles += [{"name": f"gpulab-token-{name}", "description": f"hub.api_token_scopes.{name}",
                   "scopes": list(scoped[name]), "services": [name]} for name in sorted(scoped)]
        c.JupyterHub.load_roles = roles


def update_auth(c: Config, cfg: dict) -> None:
    from ..auth import NATIVE_TEMPLATES

    auth = cfg["auth"]
    if auth["kind"] == "native":
        c.JupyterHub.authenticator_class = "gpulab-native"
        # NativeAuthenticator only lets approved users authenticate; JupyterHub 5+ additionally
        # requires an allow rule, or it refuses everyone: approval *is* the allow rule here.
        c.NativeAuthenticator.allow_all = True
        for key, value in auth["native"].items():
            setattr(c.NativeAuthenticator, key, value)
        c.JupyterHub.template_paths = [NATIVE_TEMPLATES]
    else:  # an identity provider: its class, settings and group mapping (settings/auth.py)
        from .auth import apply_auth

        apply_auth(c, cfg)


def update_spawner(c: Config, cfg: dict) -> None:
    c.JupyterHub.spawner_class = BACKEND_SPAWNERS[cfg["backend"]]
    local = cfg["local"]
    c.LocalGPUSpawner.system_users = local["system_users"]
    c.LocalGPUSpawner.system_user_prefix = local["system_user_prefix"]
    c.LocalGPUSpawner.home_root = local["home_root"]
    c.LocalGPUSpawner.shared_home_root = _state(cfg, "homes")


def gpulab_db_url(cfg: dict) -> str:
    """gpulab's tables live in the hub's database when it is PostgreSQL; with SQLite they get
    their own file, so the allocator never waits on JupyterHub's write lock."""
    return cfg["hub"]["db_url"] or f"sqlite:///{_state(cfg, 'gpulab.sqlite')}"


def update_gpulab(c: Config, cfg: dict) -> None:
    c.GPULab.inventory_spec = cfg["gpus"]["inventory"]
    c.GPULab.inventory_refresh_seconds = cfg["gpus"]["refresh_seconds"]
    c.GPULab.max_gpus_per_server = cfg["gpus"]["max_per_server"]
    c.GPULab.db_url = gpulab_db_url(cfg)
    c.GPULab.profiles_dir = cfg["profiles_dir"]
    c.GPULab.default_profile = cfg["default_profile"]
    c.GPULab.quotas = cfg["quotas"]
    c.GPULab.billing = cfg["billing"]
    c.GPULab.budgets = cfg["budgets"]
    c.GPULab.queue_settings = cfg["queue"]
    c.GPULab.state_dir = cfg["hub"]["state_dir"]
    c.GPULab.reconcile_interval = cfg["hub"]["poll_interval"]


# What each service may do with its own token (the Helm values use the same lists).
BILLING_SCOPES = ("list:users", "read:users:groups", "read:groups")
CULLER_SCOPES = ("list:users", "read:users:groups", "read:users:activity", "read:servers", "servers",
                 "delete:servers")
# What the quotas service may do with its own token: look people up and read their groups.
QUOTAS_SERVICE_SCOPES = ["list:users", "read:users:name", "read:users:groups"]


def free_local_port() -> int:
    # 'auto': the proxy routes /services/quotas/ to it, so any free local port does
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Services stop this fast when the hub stops them (SIGTERM, then SIGKILL after this many seconds):
# JupyterHub stops them one after the other, and the hub must be down within 10 s.
SERVICE_STOP_GRACE = 2


def supervised(cfg: dict, name: str, argv: list[str]) -> list[str]:
    """A service's command run under a lifeline (``hub_plugins/lifeline.py``): it dies with the
    hub (even a hub killed with SIGKILL), a restarted hub's instance replaces a stale one (pid
    file in the state dir), and it is down within SERVICE_STOP_GRACE seconds when stopped."""
    from ..reconcile.local import LIFELINE

    pidfile = _state(cfg, "services", f"{name}.pid")
    return [sys.executable, "-I", "-S", LIFELINE, "--with-parent", str(os.getpid()), "--pidfile", pidfile,
            "--grace", str(SERVICE_STOP_GRACE), "--", *argv]


def _quotas_service(cfg: dict) -> dict | None:
    """quotas (``services/admin``): everyone may open it (their own quota); only hub admins
    manage overrides there."""
    quotas = cfg.get("services", {}).get("quotas", {})
    if not quotas.get("enabled", True):
        return None
    url = quotas.get("url", "auto")
    if url == "auto":
        url = f"http://127.0.0.1:{free_local_port()}"
    root = cfg.get("_project_root") or str(Path(__file__).resolve().parents[2])
    settings = {
        "db_url": gpulab_db_url(cfg),
        "quotas": cfg["quotas"],
        "profiles_dir": cfg["profiles_dir"],
        "default_profile": cfg["default_profile"],
        "max_per_server": cfg["gpus"]["max_per_server"],
    }
    return {
        "name": "quotas",
        "url": url,
        "command": supervised(cfg, "quotas", [sys.executable, "-m", "services.admin"]),
        "cwd": root,
        "environment": {"GPULAB_QUOTAS_SETTINGS": json.dumps(settings, default=str)},
        "display": True,
        "oauth_no_confirm": True,
    }


def _service(name: str, cfg: dict, module: str, url: str | None = None, allowed_scopes=()) -> dict:
    """A JupyterHub-managed gpulab service: same Python, same checkout, same gpulab.yaml."""
    root = cfg.get("_project_root") or str(Path(__file__).resolve().parents[2])
    svc = {
        "name": name,
        "command": supervised(cfg, name, [sys.executable, "-m", module]),
        "cwd": root,
        "environment": {"GPULAB_CONFIG": cfg["_path"], "PYTHONPATH": root},
    }
    if url:
        svc["url"] = url
        svc["oauth_client_allowed_scopes"] = [f"access:services!service={name}", *allowed_scopes]
    return svc


def update_services(c: Config, cfg: dict) -> None:
    """gpulab's hub services, each with a role of the least scopes it needs: billing, quotas
    (overrides and audit) and the culler. Every user may open the billing and quotas pages
    (their own data only; the services enforce it)."""
    services = list(c.JupyterHub.get("services", []))
    roles = list(c.JupyterHub.get("load_roles", []))
    user_scopes = ["self"]
    port = cfg["billing"]["port"]
    # admins' tokens for the service carry the unfiltered 'list:users' scope: that is how the
    # service tells an admin (read-only; users' tokens carry at most their own)
    services.append(_service("billing", cfg, "services.billing", f"http://127.0.0.1:{port}", ["list:users"]))
    roles.append({"name": "gpulab-billing", "description": "gpulab billing: read users, groups",
                  "scopes": list(BILLING_SCOPES), "services": ["billing"]})
    user_scopes.append("access:services!service=billing")
    quotas = _quotas_service(cfg)
    if quotas:
        services.append(quotas)
        roles.append({"name": "gpulab-quotas-service", "description": "the quotas service: read users and their groups",
                      "scopes": list(QUOTAS_SERVICE_SCOPES), "services": ["quotas"]})
        user_scopes.append("access:services!service=quotas")
    if cfg["culler"]["enabled"]:
        services.append(_service("culler", cfg, "services.culler"))
        roles.append({"name": "gpulab-culler",
                      "description": "gpulab culler: see activity, stop idle servers, restart queued requests",
                      "scopes": list(CULLER_SCOPES),
                      "services": ["culler"]})
    roles.append({"name": "user", "description": "Standard user privileges, and gpulab's pages",
                  "scopes": user_scopes})
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles


def update_docker(c: Config, cfg: dict) -> None:
    """The Docker backend's settings (applied whatever the backend; used when it is docker)."""
    from ..quota.limits import parse_bytes

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


def update_mlflow(c: Config, cfg: dict) -> None:
    """MLflow as a hub-managed service at /services/mlflow/, its env injected into every server."""
    from ..mlflow.setup import apply_mlflow

    apply_mlflow(c, cfg)


def update_outage(c: Config, cfg: dict) -> None:
    """While the database is unreachable, the hub answers 503 saying so instead of 403/500
    (``hub_plugins/outage.py``: a tornado output transform, added to any configured ones)."""
    from ..outage import DatabaseOutage

    settings = dict(c.JupyterHub.get("tornado_settings", {}))
    settings["transforms"] = [t for t in settings.get("transforms", []) if t is not DatabaseOutage] + [DatabaseOutage]
    c.JupyterHub.tornado_settings = settings


# update_mlflow after update_services: it adds its scope to the 'user' role defined there
UPDATES = (update_hub, update_api_tokens, update_auth, update_spawner, update_gpulab, update_services,
           update_docker, update_mlflow, update_outage)


def apply_all(c: Config, cfg: dict) -> None:
    prepare_state_dir(cfg)
    for update in UPDATES:
        update(c, cfg)


# ---- cluster backends (SLURM, Kubernetes): their update functions live in settings/cluster.py
from .cluster import update_kubernetes, update_slurm  # noqa: E402

BACKEND_SPAWNERS.update(slurm="gpulab-slurm", kubernetes="gpulab-kubernetes")
UPDATES = (*UPDATES, update_slurm, update_kubernetes)
