"""gpulab's hub services as JupyterHub runs them: each one's command under a lifeline, its role of
least scopes, and what is decided once per start (:class:`Runtime`: ports picked at random, the
MLflow service's and the hub's own tokens). ``apply.update_services`` puts them in the config.
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from jupyterhub.utils import random_port

from ..mlflow import setup as mlflow
from ..reconcile.local import lifeline_file
from ..scopes import (BILLING_ALLOWED, BILLING_SCOPES, CULLER_SCOPES, HUB_SCOPES, QUOTAS_ADMIN_SCOPES,
                      QUOTAS_ALLOWED, QUOTAS_SERVICE_SCOPES)

ROOT = str(Path(__file__).resolve().parents[2])
HUB_SERVICE = "gpulab-hub"  # the hub's own token for its REST API (removing refused servers)
# What the environment builder passes on to uv and npm from the hub's environment: how this
# machine reaches the package registries.
REGISTRY_ENV = ("HOME", "SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS", "HTTP_PROXY", "HTTPS_PROXY",
                "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "UV_INDEX_URL", "UV_DEFAULT_INDEX",
                "UV_CACHE_DIR", "npm_config_registry", "npm_config_cache")


@dataclass(frozen=True)
class Runtime:
    """Decided once per start: where the 'auto' services listen, the MLflow service's token
    (new at each start: with it the hub's env provider proves to the service that the hub asks)
    and the hub's own API token (gpulab's hub side calls the hub's REST API with it)."""

    quotas_url: str
    mlflow_port: int
    mlflow_token: str
    hub_token: str

    @classmethod
    def new(cls, cfg: dict) -> Runtime:
        taken = configured_ports(cfg)
        url = cfg["services"]["quotas"]["url"]
        if url == "auto":
            url = f"http://127.0.0.1:{pick_port(taken)}"
            taken.add(urlsplit(url).port)
        return cls(url, cfg["mlflow"]["port"] or pick_port(taken), secrets.token_hex(32), secrets.token_hex(32))


def configured_ports(cfg: dict) -> set[int]:
    """The ports gpulab.yaml names. At the time services' ports are picked, the proxy's API port
    and the hub's own are not bound yet, so a free port can be one of them: a service that took
    the proxy's API port left the proxy unable to start (seen in CI as the hub's 404 from
    /api/routes, the service answering in the proxy's place)."""
    h = cfg["hub"]
    urls = [h.get("bind_url"), h.get("hub_bind_url"), h.get("proxy_api_url"), cfg["services"]["quotas"]["url"]]
    ports = {cfg["billing"].get("port"), cfg["mlflow"].get("port")}
    for url in urls:
        if url and url != "auto":
            try:
                ports.add(urlsplit(url).port)
            except ValueError:  # validation reports a bad URL; here it just names no port
                pass
    return {p for p in ports if isinstance(p, int) and p > 0}


def pick_port(taken: set[int]) -> int:
    """A free port that none of ``taken`` is."""
    while (port := random_port()) in taken:
        pass
    return port


def runtime(cfg: dict) -> Runtime:
    """This config's runtime decisions (made at the first ask, then the same for every update)."""
    return cfg.setdefault("_runtime", Runtime.new(cfg))


def _state(cfg: dict, *parts: str) -> str:
    return os.path.join(cfg["hub"]["state_dir"], *parts)


def _root(cfg: dict) -> str:
    return cfg.get("_project_root") or ROOT


# Services stop this fast when the hub stops them (SIGTERM, then SIGKILL after this many seconds):
# JupyterHub stops them one after the other, and the hub must be down within 10 s.
SERVICE_STOP_GRACE = 2


def supervised(cfg: dict, name: str, argv: list[str], prebind: bool = False) -> list[str]:
    """A service's command run under a lifeline (``hub_plugins/lifeline.py``): it dies with the
    hub (even a hub killed with SIGKILL), a restarted hub's instance replaces a stale one (pid
    file in the state dir), and it is down within SERVICE_STOP_GRACE seconds when stopped.
    ``prebind``: its port is bound at once (a service with a URL JupyterHub waits for)."""
    pidfile = _state(cfg, "services", f"{name}.pid")
    return [sys.executable, "-I", "-S", lifeline_file(), "--with-parent", str(os.getpid()), "--pidfile", pidfile,
            "--grace", str(SERVICE_STOP_GRACE), *(["--prebind"] if prebind else []), "--", *argv]


def _service(name: str, cfg: dict, module: str, url: str | None = None, allowed_scopes=(),
             listens: bool = False) -> dict:
    """A JupyterHub-managed gpulab service: same Python, same checkout, and its settings from the
    same gpulab.yaml (``GPULAB_CONFIG``), the one way every service is configured."""
    root = _root(cfg)
    svc = {
        "name": name,
        "command": supervised(cfg, name, [sys.executable, "-m", module], prebind=listens or url is not None),
        "cwd": root,
        "environment": {"GPULAB_CONFIG": cfg["_path"], "PYTHONPATH": root},
    }
    if url:
        svc["url"] = url
        svc["oauth_client_allowed_scopes"] = [f"access:services!service={name}", *allowed_scopes]
        # gpulab's own pages, as the quotas and MLflow services: no "authorize access" step
        svc["oauth_no_confirm"] = True
    return svc


def gpulab_services(cfg: dict) -> tuple[list[dict], list[dict], list[str]]:
    """gpulab's hub services, each with a role of the least scopes it needs, and the scopes every
    user gets to open them (their own data only; the services enforce it)."""
    rt = runtime(cfg)
    # a person's token for a service carries the gpulab scopes they hold that the service uses
    # (hub_plugins/scopes.py): that is how the service tells who may see or do more
    services = [_service("billing", cfg, "services.billing", f"http://127.0.0.1:{cfg['billing']['port']}",
                         BILLING_ALLOWED)]
    roles = [{"name": "gpulab-billing", "description": "gpulab billing: read users, groups",
              "scopes": list(BILLING_SCOPES), "services": ["billing"]}]
    # people may share their own servers (JupyterHub's shares): the owner is billed and the
    # owner's quota counts, whoever uses it (docs/billing.md)
    user_scopes = ["shares!user", "access:services!service=billing"]
    if cfg["services"]["quotas"]["enabled"]:
        # quotas (``services/admin``): everyone sees their own quota; only admins manage overrides
        # an admin's token for the page may also create people and fill groups: the service
        # does that with the admin's own token, so the hub checks the admin's rights
        services.append({**_service("quotas", cfg, "services.admin", rt.quotas_url,
                                    [*QUOTAS_ALLOWED, *QUOTAS_ADMIN_SCOPES]), "display": True})
        roles.append({"name": "gpulab-quotas-service", "description": "the quotas service: read users and their groups",
                      "scopes": list(QUOTAS_SERVICE_SCOPES), "services": ["quotas"]})
        user_scopes.append("access:services!service=quotas")
    if cfg["culler"]["enabled"]:
        services.append(_service("culler", cfg, "services.culler"))
        roles.append({"name": "gpulab-culler",
                      "description": "gpulab culler: see activity, stop idle servers, restart queued requests",
                      "scopes": list(CULLER_SCOPES), "services": ["culler"]})
    # the hub's own token: gpulab removes the stopped named servers refused requests leave
    services.append({"name": HUB_SERVICE, "api_token": rt.hub_token})
    roles.append({"name": "gpulab-hub", "description": "gpulab in the hub: remove refused named servers",
                  "scopes": list(HUB_SCOPES), "services": [HUB_SERVICE]})
    envs = cfg["environments"]
    if envs["build_missing"] and cfg["backend"] == "local":
        # the 'envs' service builds missing profile environments in the background (a separate
        # process: never on the hub's event loop; no URL, no scopes), reaching the registries
        # the way the hub's environment says (JupyterHub gives services a clean one)
        svc = _service("envs", cfg, "services.envs")
        svc["environment"].update({k: os.environ[k] for k in REGISTRY_ENV if os.environ.get(k)})
        services.append(svc)
    if cfg["mlflow"]["enabled"]:  # MLflow tracking at /services/mlflow/
        services.append(mlflow.service(_service(mlflow.SERVICE, cfg, "services.mlflow", listens=True), rt.mlflow_port, rt.mlflow_token))
        user_scopes.append(f"access:services!service={mlflow.SERVICE}")
    return services, roles, user_scopes

