"""gpulab inside the z2jh chart's hub: what ``hub.extraConfig`` runs (see ``helm.py``).

The chart owns what is Kubernetes-specific (networking, the proxy, the database URL, the
cookie secret, the hub's pod); gpulab.yaml owns the rest (spawner, quotas, profiles, auth,
admins), so only those ``update_*`` functions apply here. gpulab's tables live in the hub's
PostgreSQL database.
"""

from __future__ import annotations

import os

from jupyterhub.app import JupyterHub

from ...settings.apply import (update_admin_scopes, update_api_tokens, update_auth, update_gpulab, update_pages,
                               update_spawner)
from ...settings.cluster import update_kubernetes
from ...settings.hubapp import add_pages, pace_collector
from ...settings.loader import load

CONFIG_PATH = "/usr/local/etc/gpulab/gpulab.yaml"


def configure(c, path: str | None = None) -> dict:
    cfg = load(path or os.environ.get("GPULAB_CONFIG") or CONFIG_PATH)
    h = cfg["hub"]
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = 0  # gpulab's quotas count servers, with messages
    c.JupyterHub.cleanup_servers = False  # servers outlive hub restarts; gpulab reconciles
    c.JupyterHub.concurrent_spawn_limit = h["concurrent_spawn_limit"]
    c.Authenticator.admin_users = set(h["admin_users"])
    c.Spawner.poll_interval = h["poll_interval"]
    c.Spawner.http_timeout = h["http_timeout"]
    c.HubCollector.sweep_minutes = h["gc_sweep_minutes"]
    if JupyterHub.initialized():  # the hub's own start (not a test laying out the values)
        add_pages(JupyterHub.instance())  # gpulab's pages, and its garbage-collector pacing
        pace_collector(JupyterHub.instance())
    for update in (update_api_tokens, update_admin_scopes, update_auth, update_pages, update_spawner, update_gpulab,
                   update_kubernetes):
        update(c, cfg)
    db_url = c.JupyterHub.get("db_url")
    if db_url and str(db_url).startswith("postgresql"):
        c.GPULab.db_url = db_url  # the chart's hub database (password: $PGPASSWORD)
    return cfg
