"""The env provider that gives every server its MLflow settings (any backend).

Registered in ``c.GPULab.env_providers``; before each server starts it asks the MLflow service
for the user's credentials for this spawn and returns::

    MLFLOW_TRACKING_URI        the service, through the hub's proxy
    MLFLOW_TRACKING_USERNAME   the hub user
    MLFLOW_TRACKING_PASSWORD   a credential for this spawn (new at each start, expires)
    MLFLOW_EXPERIMENT_NAME     <user>/notebooks (one per user), created ahead, owned by the user
    MLFLOW_DISABLE_TELEMETRY   true: MLflow's client sends no usage data from the server
    MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING (+ interval)   when mlflow.gpu_metrics is on

so that ``import mlflow; mlflow.start_run()`` just works; the service tags each run with the
user, server, profile and GPUs. If MLflow cannot be reached the server starts without it and
the progress page says so (``required`` makes it an error instead).
"""

from __future__ import annotations

import asyncio
import json
import time

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from traitlets import Bool, Float, Integer, Unicode
from traitlets.config import SingletonConfigurable

from ..settings.schema import DEFAULTS
from ..spawners.errors import SpawnException

PROVIDER = "hub_plugins.mlflow.provider:mlflow_env"  # as c.GPULab.env_providers names it


class MLflowEnv(SingletonConfigurable):
    service_url = Unicode(config=True, help="The MLflow service's own URL, with its prefix (the hub calls it).")
    service_token = Unicode(config=True, help="The service's hub API token: how the service knows the hub asks.")
    tracking_uri = Unicode(config=True, help="MLFLOW_TRACKING_URI given to servers (must be reachable from them).")
    gpu_metrics = Bool(DEFAULTS["mlflow"]["gpu_metrics"], config=True,
                       help="Log GPU (and CPU/memory) metrics to every run (MLflow system metrics).")
    gpu_metrics_interval = Integer(DEFAULTS["mlflow"]["gpu_metrics_interval"], config=True,
                                   help="Seconds between system-metrics samples.")
    wait_seconds = Float(90, config=True, help="How long a spawn waits for a starting MLflow service.")
    required = Bool(False, config=True, help="Fail spawns when MLflow is unavailable (default: start without it, and say so).")


def env_for(creds: dict, cfg: MLflowEnv) -> dict[str, str]:
    """The server's MLflow environment from the service's answer (pure)."""
    env = {
        "MLFLOW_TRACKING_URI": cfg.tracking_uri,
        "MLFLOW_TRACKING_USERNAME": creds["username"],
        "MLFLOW_TRACKING_PASSWORD": creds["password"],
        "MLFLOW_EXPERIMENT_NAME": creds["experiment_name"],
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    if cfg.gpu_metrics:
        env["MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"] = "true"
        env["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = str(cfg.gpu_metrics_interval)
    return env


async def fetch_credentials(cfg: MLflowEnv, claims: dict) -> dict:
    """Ask the service, waiting while it starts (503 / connection refused)."""
    deadline = time.monotonic() + cfg.wait_seconds
    req = HTTPRequest(cfg.service_url + "gpulab/credentials", method="POST", body=json.dumps(claims),
                      headers={"Authorization": f"token {cfg.service_token}", "Content-Type": "application/json"},
                      request_timeout=30)
    while True:
        try:
            resp = await AsyncHTTPClient().fetch(req, raise_error=False)
            code, body, error = resp.code, resp.body, resp.error
        except OSError as e:  # the service is not listening (yet)
            code, body, error = 599, b"", e
        if code == 200:
            return json.loads(body)
        if code not in (503, 599) or time.monotonic() > deadline:
            try:
                why = json.loads(body or b"{}").get("message", "")
            except ValueError:
                why = ""
            raise RuntimeError(f"{code} {why or error or ''}".strip())
        await asyncio.sleep(0.5)


async def mlflow_env(spawner, allocation, profile) -> dict[str, str]:
    cfg = MLflowEnv.instance(config=spawner.config)
    if not cfg.service_url:
        return {}
    claims = {
        "user": spawner.user.name, "server": spawner.name or "", "profile": profile.name,
        "gpus": list(allocation.visible_ids) if allocation else [],
        "gpu_type": allocation.gpu_type if allocation else "",
        "admin": bool(getattr(spawner.user, "admin", False)),
        "spawn_id": allocation.spawn_id if allocation else "",
    }
    try:
        creds = await fetch_credentials(cfg, claims)
    except Exception as e:
        if cfg.required:
            raise SpawnException(f"MLflow is unavailable ({e}); ask an admin.", reason="mlflow", status_code=503) from None
        spawner.log.warning("[gpulab] %s: MLflow unavailable: %s", spawner._log_name, e)
        if hasattr(spawner, "gpulab_event"):
            spawner.gpulab_event("MLflow is unavailable right now: this server starts without MLflow tracking")
        return {}
    if hasattr(spawner, "gpulab_event"):
        spawner.gpulab_event(f"MLflow: experiment {creds['experiment_name']}")
    return env_for(creds, cfg)
