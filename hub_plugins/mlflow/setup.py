"""``mlflow`` section of gpulab.yaml -> the hub-managed service, its roles and the env provider."""

from __future__ import annotations

import os
import secrets
import sys

from ..settings.apply import free_local_port

SERVICE = "mlflow"
PROVIDER = "hub_plugins.mlflow.provider:mlflow_env"


def _base_path(bind_url: str) -> str:
    from urllib.parse import urlparse

    path = urlparse(bind_url).path or "/"
    return path if path.endswith("/") else path + "/"


def grant_user_scope(roles: list[dict], scope: str) -> list[dict]:
    """Add ``scope`` to the default 'user' role (kept as JupyterHub defines it otherwise)."""
    out = [dict(r) for r in roles]
    for r in out:
        if r.get("name") == "user":
            r["scopes"] = list(dict.fromkeys([*r.get("scopes", ["self"]), scope]))
            return out
    return out + [{"name": "user", "scopes": ["self", scope]}]


def apply_mlflow(c, cfg: dict) -> None:
    m = cfg["mlflow"]
    if not m["enabled"]:
        return
    root = cfg.get("_project_root") or os.getcwd()
    port = m["port"] or free_local_port()
    # The service's hub token, new at each start: with it the hub's env provider proves to the
    # service that the hub asks for credentials. The service gets no other hub permission.
    token = secrets.token_hex(32)
    prefix = _base_path(cfg["hub"]["bind_url"]) + f"services/{SERVICE}/"
    cmd = [sys.executable, "-m", "services.mlflow", "serve",
           "--state-dir", os.path.join(cfg["hub"]["state_dir"], "mlflow"),
           "--token-lifetime-days", str(m["token_lifetime_days"])]
    if m["backend_store_uri"]:
        cmd += ["--backend-store-uri", m["backend_store_uri"]]
    if m["artifacts_destination"]:
        cmd += ["--artifacts-destination", m["artifacts_destination"]]
    services = list(c.JupyterHub.get("services", []))
    from ..settings.apply import supervised

    services.append({
        "name": SERVICE,
        "url": f"http://127.0.0.1:{port}",
        "command": supervised(cfg, SERVICE, cmd),
        "cwd": root,
        "environment": {"PYTHONPATH": root},
        "api_token": token,
        "oauth_no_confirm": True,
        "display": True,
        "info": {"description": "MLflow experiment tracking"},
    })
    c.JupyterHub.services = services
    # users may open the service (its UI, through hub login); it needs no hub scopes itself
    c.JupyterHub.load_roles = grant_user_scope(list(c.JupyterHub.get("load_roles", [])),
                                               f"access:services!service={SERVICE}")
    c.GPULab.env_providers.append(PROVIDER)
    c.MLflowEnv.service_url = f"http://127.0.0.1:{port}{prefix}"
    c.MLflowEnv.service_token = token
    c.MLflowEnv.tracking_uri = m["tracking_uri"] or cfg["hub"]["bind_url"].rstrip("/") + prefix.rstrip("/")
    c.MLflowEnv.gpu_metrics = m["gpu_metrics"]
    c.MLflowEnv.gpu_metrics_interval = m["gpu_metrics_interval"]
