"""The hub's side of the MLflow service (``mlflow`` in gpulab.yaml): its service definition and
the settings of the env provider that gives every server credentials (``provider.py``). Both
are applied by ``settings/apply.py``; the service itself is ``services/mlflow``."""

from __future__ import annotations

from urllib.parse import urlparse

from traitlets.config import Config

SERVICE = "mlflow"


def base_path(bind_url: str) -> str:
    path = urlparse(bind_url).path or "/"
    return path if path.endswith("/") else path + "/"


def grant_user_scope(roles: list[dict], scope: str) -> list[dict]:
    """``roles`` with ``scope`` added to the default 'user' role (a new list; kept as JupyterHub
    defines the role otherwise)."""
    out = [dict(r) for r in roles]
    for r in out:
        if r.get("name") == "user":
            r["scopes"] = list(dict.fromkeys([*r.get("scopes", ["self"]), scope]))
            return out
    return out + [{"name": "user", "scopes": ["self", scope]}]


def service(base: dict, port: int, token: str) -> dict:
    """The managed service: ``base`` (command, cwd, GPULAB_CONFIG) at a loopback port, with its
    hub token (its only use: the env provider proves with it that the hub asks). It needs no
    hub scopes of its own; users open it through hub login."""
    return {**base, "url": f"http://127.0.0.1:{port}", "api_token": token, "oauth_no_confirm": True,
            "display": True, "info": {"description": "MLflow experiment tracking"}}


def configure_env(c: Config, m: dict, bind_url: str, port: int, token: str) -> None:
    """What the env provider needs to ask the service for a server's credentials."""
    prefix = base_path(bind_url) + f"services/{SERVICE}/"
    c.MLflowEnv.service_url = f"http://127.0.0.1:{port}{prefix}"
    c.MLflowEnv.service_token = token
    c.MLflowEnv.tracking_uri = m["tracking_uri"] or bind_url.rstrip("/") + prefix.rstrip("/")
    c.MLflowEnv.gpu_metrics = m["gpu_metrics"]
    c.MLflowEnv.gpu_metrics_interval = m["gpu_metrics_interval"]
