"""What every gpulab hub service shares: its configuration (the same gpulab.yaml as the hub),
the GPU core built from it, a small client for the hub's REST API and authentication helpers.

Services run as JupyterHub-managed services: JupyterHub passes ``JUPYTERHUB_API_TOKEN``,
``JUPYTERHUB_API_URL``, ``JUPYTERHUB_SERVICE_URL`` and ``JUPYTERHUB_SERVICE_PREFIX``; gpulab adds
``GPULAB_CONFIG``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from pathlib import Path
from urllib.parse import quote, urlparse

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.log import access_log

from hub_plugins.core import GPULab
from hub_plugins.settings import typed
from hub_plugins.settings.errors import ConfigError
from hub_plugins.settings.live import LiveSettings
from hub_plugins.settings.loader import ENV_VAR

log = logging.getLogger("gpulab.service")


def _path() -> str:
    return os.environ.get(ENV_VAR) or str(Path(__file__).resolve().parents[1] / "config" / "gpulab.yaml")


def load_settings() -> typed.Settings:
    """This service's settings: the gpulab.yaml ``GPULAB_CONFIG`` names, as the hub reads it
    (the hub puts the variable in every service's environment)."""
    try:
        return typed.load_settings(_path())
    except ConfigError as e:
        sys.exit(f"gpulab service: fix {_path()} first:\n{e}")


def live_settings() -> LiveSettings:
    """This service's running settings: as :func:`load_settings`, then reloaded whenever the
    file changes (quotas, prices, budgets, culler and queue policies; ``settings/live.py``)."""
    try:
        return LiveSettings(_path())
    except ConfigError as e:
        sys.exit(f"gpulab service: fix {_path()} first:\n{e}")


def core_from_settings(settings: typed.Settings) -> GPULab:
    """The same GPU core the hub runs, for reading (services never allocate)."""
    return GPULab.from_settings(settings)


def core_from_live(live: LiveSettings) -> GPULab:
    """The same GPU core the hub runs, following the running settings as they reload."""
    return GPULab.from_live(live)


def listen_host(url) -> str:
    """Where to listen: the service URL's host, unless GPULAB_SERVICE_BIND says otherwise. On
    Kubernetes the URL names the hub's Service (``http://hub:10101``), an address the pod cannot
    bind, so the Helm values set GPULAB_SERVICE_BIND=0.0.0.0 (the chart's network policy limits
    who reaches the port)."""
    return os.environ.get("GPULAB_SERVICE_BIND") or url.hostname or "127.0.0.1"


def access_level(method: str, path: str, status: int, credentials: bool, prefix: str) -> int:
    """The level of a request's access-log line: tornado's (info, 4xx a warning, 5xx an error),
    but debug for the hub's check that the service is up (a GET of the service's root without
    credentials, every ``JupyterHub.service_check_interval`` seconds, answered with the login
    redirect or MLflow's 401): each service logged it every minute, MLflow's as a warning."""
    if method == "GET" and not credentials and status in (200, 302, 401) and path.rstrip("/") == prefix.rstrip("/"):
        return logging.DEBUG
    return logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR


def log_request(handler) -> None:
    """A service's access log (tornado's ``log_function``), at :func:`access_level`."""
    req = handler.request
    credentials = "Cookie" in req.headers or "Authorization" in req.headers
    status = handler.get_status()
    level = access_level(req.method, req.path, status, credentials, os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/"))
    access_log.log(level, "%d %s %.2fms", status, handler._request_summary(), 1000.0 * req.request_time())


def serve(app, port: int, host: str, **server_options) -> HTTPServer:
    """Serve ``app`` (a tornado Application) where JupyterHub expects this service: on the socket
    the lifeline bound for it at start (``GPULAB_LISTEN_FD``, see ``hub_plugins/lifeline.py``),
    else on ``host:port``."""
    app.settings.setdefault("log_function", log_request)
    server = HTTPServer(app, **server_options)
    fd = os.environ.pop("GPULAB_LISTEN_FD", None)  # not for the service's own children
    if fd:
        sock = socket.socket(fileno=int(fd))
        sock.setblocking(False)
        server.add_sockets([sock])
    else:
        server.listen(port, host)
    return server


def service_address() -> tuple[str, int, str]:
    """(host, port, prefix) this service listens on."""
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    return listen_host(url), url.port or 10101, prefix


class HubAPI:
    """The hub's REST API with this service's own token (its role decides what it may do)."""

    def __init__(self, url: str | None = None, token: str | None = None):
        self.url = (url or os.environ["JUPYTERHUB_API_URL"]).rstrip("/")
        self.token = token or os.environ["JUPYTERHUB_API_TOKEN"]
        self.http = AsyncHTTPClient()

    async def request(self, method: str, path: str, body=None, ok=(200, 201, 202, 204)):
        headers = {"Authorization": f"token {self.token}"}
        if body is not None:  # tornado would label it form-encoded, which the hub refuses for JSON
            headers["Content-Type"] = "application/json"
        req = HTTPRequest(
            self.url + path, method=method, headers=headers,
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True, request_timeout=60,
        )
        resp = await self.http.fetch(req, raise_error=False)
        if resp.code not in ok:
            raise HubAPIError(resp.code, resp.body.decode(errors="replace")[:500], method, path)
        return json.loads(resp.body) if resp.body else None

    async def users(self, state: str | None = "active") -> list[dict]:
        path = "/users" + (f"?state={state}" if state else "")
        out, offset = [], 0
        while True:  # the API pages long lists
            sep = "&" if "?" in path else "?"
            page = await self.request("GET", f"{path}{sep}offset={offset}&limit=200")
            items = page["items"] if isinstance(page, dict) and "items" in page else page
            out += items
            if not isinstance(page, dict) or not page.get("_pagination", {}).get("next"):
                return out
            offset += len(items)

    async def groups(self) -> list[dict]:
        page = await self.request("GET", "/groups?limit=1000")
        return page["items"] if isinstance(page, dict) and "items" in page else page

    @staticmethod
    def server_path(user: str, server: str = "") -> str:
        base = f"/users/{quote(user, safe='')}"
        return f"{base}/servers/{quote(server, safe='')}" if server else f"{base}/server"

    async def stop(self, user: str, server: str = ""):
        return await self.request("DELETE", self.server_path(user, server))

    async def start(self, user: str, server: str = "", options: dict | None = None):
        return await self.request("POST", self.server_path(user, server), options or {}, ok=(201, 202))


class HubAPIError(Exception):
    def __init__(self, code, body, method, path):
        super().__init__(f"{method} {path}: {code} {body}")
        self.code = code


def setup_logging(name: str) -> None:
    logging.basicConfig(level=os.environ.get("GPULAB_LOG_LEVEL", "INFO"),
                        format=f"[%(levelname).1s %(asctime)s {name}] %(message)s")
