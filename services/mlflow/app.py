"""The MLflow service: a small authenticating proxy in front of an MLflow tracking server.

JupyterHub runs it as the managed service ``mlflow`` at ``/services/mlflow/``. It starts MLflow
(basic-auth app) on another loopback port and forwards every request to it, signed in as the
right MLflow account:

- browsers: hub login (HubOAuth cookie), so the UI needs no second password;
- servers: the per-spawn credentials the hub injected (``MLFLOW_TRACKING_USERNAME`` /
  ``MLFLOW_TRACKING_PASSWORD``, HTTP Basic), verified here;
- scripts: a hub API token (``MLFLOW_TRACKING_TOKEN`` = a JupyterHub token, Bearer).

``POST <prefix>gpulab/credentials`` (only with the service's own hub API token, which only the hub
knows) sets up a user's account and default experiment and issues credentials for one spawn.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hmac
import json
import logging
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated, UserNotAllowed
from jupyterhub.utils import random_port
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.ioloop import IOLoop

from services.base import listen_host, load_settings, serve

from . import policy, tokens
from .accounts import Accounts, MLflowError
from .server import MLflowProcess, _die_with_parent, load_secrets, rotate_key

log = logging.getLogger("gpulab.mlflow")
HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
       "transfer-encoding", "upgrade", "host", "cookie", "authorization", "origin", "content-length"}
MAX_BODY = 64 * 2**30  # largest upload (artifacts)
MAX_JSON = 16 * 2**20  # the small API calls the front reads are kept in memory: cap them
RESPONSE_DROP = {"connection", "keep-alive", "transfer-encoding", "set-cookie", "www-authenticate"}
# MLflow's page is changed on the way (forward_ui): no compression, no validators of the original
UI_REQUEST_DROP = {"accept-encoding", "if-none-match", "if-modified-since", "if-match", "if-range"}
UI_RESPONSE_DROP = {"content-length", "etag", "last-modified"}


class Identity:
    def __init__(self, user: str, admin: bool, claims: tokens.Claims | None = None):
        self.user, self.admin, self.claims = user, admin, claims


class Base(web.RequestHandler):
    @property
    def svc(self) -> Service:
        return self.settings["service"]

    def json_error(self, code: int, message: str) -> None:
        # the shape MLflow's clients print
        self.set_status(code)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error_code": {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}.get(
            code, "TEMPORARILY_UNAVAILABLE" if code == 503 else "BAD_REQUEST"), "message": message}))


class CredentialsHandler(Base):
    """Issue credentials for one spawn (called by the hub's env provider)."""

    def check_xsrf_cookie(self):
        pass  # token-authenticated API

    async def post(self):
        auth = self.request.headers.get("Authorization", "")
        if not self.svc.hub_token or not auth.startswith("token ") or not hmac.compare_digest(
                auth[6:].strip(), self.svc.hub_token):
            return self.json_error(403, "only the hub may ask for credentials")
        if not self.svc.ready:
            return self.json_error(503, "MLflow is starting")
        try:
            body = json.loads(self.request.body)
            claims = tokens.Claims.from_json({**body, "exp": int(time.time() + self.svc.lifetime)})
        except (ValueError, KeyError, TypeError) as e:
            return self.json_error(400, f"bad request: {e}")
        name = policy.experiment_name(claims.user, claims.server, claims.profile)
        try:
            await self.svc.accounts.ensure_user(claims.user, claims.admin)
            # one experiment per user: its tags name the user only; each run names its server
            exp_id = await self.svc.accounts.ensure_experiment(name, claims.user, {"gpulab.user": claims.user})
        except MLflowError as e:
            return self.json_error(502, str(e))
        self.finish({
            "username": claims.user, "password": tokens.issue(self.svc.key, claims),
            "experiment_name": name, "experiment_id": exp_id, "expires": claims.exp,
        })


class HealthHandler(Base):
    def get(self):
        self.set_status(200 if self.svc.ready else 503)
        self.finish({"mlflow": "ready" if self.svc.ready else "starting"})


@web.stream_request_body
class ProxyHandler(HubOAuthenticated, Base):
    """Everything else: authenticate, apply the front's rules, forward (bodies streamed, except
    the few small JSON calls the rules read)."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    def check_xsrf_cookie(self):
        """Cookie-authenticated writes must come from the same origin (browser fetch metadata,
        else Origin): MLflow's UI cannot send JupyterHub's xsrf token."""
        h = self.request.headers
        site = h.get("Sec-Fetch-Site")
        if site in ("same-origin", "none"):
            return
        origin = h.get("Origin") or h.get("Referer")
        if site is None and origin and urlparse(origin).netloc == h.get("Host"):
            return
        raise web.HTTPError(403, "cross-site request refused")

    async def identify(self) -> Identity | None:
        auth = self.request.headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                user, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                return None
            claims = tokens.verify(self.svc.key, secret, time.time())
            if claims is None or claims.user != user:
                return None
            return Identity(user, claims.admin, claims)
        try:
            model = await self.hub_auth.get_user(self, sync=False)
            model = model and self.check_hub_user(model)
        except UserNotAllowed:
            raise web.HTTPError(403, "you may not use this service") from None
        if not model or model.get("kind", "user") != "user":
            return None
        return Identity(model["name"], bool(model.get("admin")))

    _request_read = False

    async def prepare(self):
        self.request.connection.set_max_body_size(self.svc.max_body)
        self._chunks: list[bytes] = []
        self._queue: asyncio.Queue | None = None
        self._upstream = None
        self.identity = await self.identify()
        if self.identity is None:
            if self.request.method in ("GET", "HEAD") and "text/html" in self.request.headers.get("Accept", ""):
                return self.redirect(self.get_login_url())
            if self.request.headers.get("Authorization", "")[:6].lower() == "basic ":
                return self.json_error(401, "these MLflow credentials are invalid or expired: restart "
                                            "your server (each start gets new ones)")
            return self.json_error(401, "sign in to JupyterHub, or use the MLFLOW_TRACKING_* "
                                        "variables of your server")
        if not self.svc.ready:
            return self.json_error(503, "MLflow is starting; try again in a few seconds")
        try:
            await self.svc.accounts.ensure_user(self.identity.user, self.identity.admin)
        except MLflowError as e:
            return self.json_error(502, str(e))
        self.upath = self.request.path[len(self.svc.prefix.rstrip("/")):]
        if not policy.needs_body(self.upath):
            # rules that need no body are applied before anything reaches MLflow
            why = policy.refusal(self.upath, self.request.method, b"", self.identity.user, self.identity.admin)
            if why:
                return self.json_error(403, why)
        if not policy.needs_body(self.upath) and self.request.method in ("POST", "PUT", "PATCH"):
            # stream the body (artifact uploads can be large) while it arrives
            self._queue = asyncio.Queue(maxsize=16)
            self._upstream = asyncio.ensure_future(self.forward(body_producer=self.produce))

    async def data_received(self, chunk: bytes):
        if self._finished:
            return
        if self._queue is not None:
            await self._feed(chunk)
        else:
            self._chunks.append(chunk)
            self._buffered = getattr(self, "_buffered", 0) + len(chunk)
            if self._buffered > MAX_JSON:
                self.json_error(413, f"request body over {MAX_JSON // 2**20} MiB")

    async def _feed(self, item) -> None:
        """Hand a chunk to the upstream request, unless MLflow has already answered (e.g. 403
        before reading an upload): then the rest of the body is dropped, never waited on."""
        if self._upstream.done():
            return
        put = asyncio.ensure_future(self._queue.put(item))
        await asyncio.wait({put, self._upstream}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()

    async def produce(self, write):
        while (chunk := await self._queue.get()) is not None:
            await write(chunk)

    def flush(self, include_footers: bool = False):
        # An answer before the request was read to its end (a refusal from prepare, or MLflow
        # answering an upload early): tornado closes the connection after it, even for a request
        # without a body, so say so. Otherwise the hub's proxy, which keeps connections alive,
        # may send the next request down the closing socket and answer it 503 ("socket hang up").
        if not self._headers_written and not self._request_read:
            self.set_header("Connection", "close")
        return super().flush(include_footers)

    async def handle(self):
        self._request_read = True  # tornado calls the method once the whole body has arrived
        if self._finished:
            return
        if self._upstream is not None:
            await self._feed(None)
            await self._upstream
            return
        if self.request.method == "GET" and self.upath in policy.UI_PATHS:
            return await self.forward_ui()
        body = b"".join(self._chunks)
        why = policy.refusal(self.upath, self.request.method, body, self.identity.user, self.identity.admin)
        if why:
            return self.json_error(403, why)
        if policy.needs_body(self.upath) and "runs/create" in self.upath:
            c = self.identity.claims
            tags = (policy.run_tags(c.user, c.server, c.profile, c.gpus, c.gpu_type) if c
                    else policy.run_tags(self.identity.user))
            body = policy.tag_run(body, tags)
        await self.forward(body=body if self.request.method in ("POST", "PUT", "PATCH") else None)

    get = head = post = put = patch = delete = options = handle

    async def forward_ui(self):
        """MLflow's page (small), with gpulab's UI preset put first in its head. Asked for whole
        every time: MLflow's validators (ETag, Last-Modified) are of its page, not of this one, and
        its 304 has no body to put the preset in (a reload was a 500)."""
        headers = {k: v for k, v in self.request.headers.get_all()
                   if k.lower() not in HOP and k.lower() not in UI_REQUEST_DROP}
        headers["Authorization"] = self.svc.accounts.auth_for(self.identity.user)
        req = HTTPRequest(self.svc.upstream + self.request.uri[len(self.svc.prefix.rstrip("/")):],
                          headers=headers, follow_redirects=False, request_timeout=60)
        try:
            resp = await AsyncHTTPClient().fetch(req, raise_error=False)
        except OSError as e:
            return self.json_error(502, f"MLflow did not answer: {e}")
        if resp.code == 599:
            return self.json_error(502, f"MLflow did not answer: {resp.error}")
        self.set_status(resp.code)
        self.clear_header("Content-Type")
        for k, v in resp.headers.get_all():
            if k.lower() not in RESPONSE_DROP and k.lower() not in UI_RESPONSE_DROP:
                self.add_header(k, v)
        if resp.code in (204, 304):  # no body may follow
            return self.finish()
        html = resp.body or b""
        self.finish(policy.with_preset(html) if "text/html" in resp.headers.get("Content-Type", "") else html)

    async def forward(self, body=None, body_producer=None):
        headers = {k: v for k, v in self.request.headers.get_all() if k.lower() not in HOP}
        headers["Authorization"] = self.svc.accounts.auth_for(self.identity.user)
        if body is not None:
            headers["Content-Length"] = str(len(body))
        elif body_producer is not None and "Content-Length" in self.request.headers:
            headers["Content-Length"] = self.request.headers["Content-Length"]
        status: dict = {}

        def on_header(line: str):
            line = line.rstrip("\r\n")
            if line.startswith("HTTP/"):
                status["code"] = int(line.split(" ", 2)[1])
            elif ":" in line:
                k, v = line.split(":", 1)
                if k.strip().lower() not in RESPONSE_DROP:
                    status.setdefault("headers", []).append((k.strip(), v.strip()))
            elif not line and "code" in status and status["code"] != 100 and not status.get("sent"):
                status["sent"] = True
                self.set_status(status["code"])
                self.clear_header("Content-Type")
                for k, v in status.get("headers", []):
                    self.add_header(k, v)

        req = HTTPRequest(
            self.svc.upstream + self.request.uri[len(self.svc.prefix.rstrip("/")):],
            method=self.request.method, headers=headers, body=body, body_producer=body_producer,
            header_callback=on_header, streaming_callback=lambda chunk: self.write(chunk) or self.flush(),
            follow_redirects=False, decompress_response=False, request_timeout=3600,
            allow_nonstandard_methods=True, expect_100_continue=False,
        )
        try:
            resp = await AsyncHTTPClient().fetch(req, raise_error=False)
            error = resp.error if resp.code == 599 else None
        except OSError as e:
            error = e
        if self._finished:
            return
        if error is not None and not status.get("sent"):
            return self.json_error(502, f"MLflow did not answer: {error}")
        self.finish()  # (an error after the answer began: the client sees a short body)


class Service:
    def __init__(self, state_dir: str, mlflow: Mapping, prefix: str, hub_token: str):
        self.state = Path(state_dir)
        self.prefix = prefix
        self.hub_token = hub_token
        self.lifetime = mlflow["token_lifetime_days"] * 86400
        self.max_body = MAX_BODY
        self.secrets = load_secrets(self.state)
        self.key = self.secrets.key
        port = random_port()
        self.mlflow = MLflowProcess(self.state, port, prefix, mlflow["backend_store_uri"],
                                    mlflow["artifacts_destination"])
        self.upstream = f"http://127.0.0.1:{port}{prefix.rstrip('/')}"
        self.accounts = Accounts(self.mlflow.url, self.secrets.admin_password, self.key, log)
        self.ready = False

    async def start_mlflow(self):
        self.mlflow.start(self.secrets)
        await asyncio.to_thread(self.mlflow.wait_ready)
        self.ready = True
        log.info("MLflow is up at %s", self.mlflow.url)

    async def watch(self):
        """Restart MLflow if it dies."""
        while True:
            await asyncio.sleep(2)
            if self.mlflow.proc and self.mlflow.proc.poll() is not None:
                self.ready = False
                log.error("MLflow exited (%s); restarting it", self.mlflow.proc.returncode)
                try:
                    await self.start_mlflow()
                except RuntimeError as e:
                    log.error("%s", e)


def make_app(service: Service) -> web.Application:
    p = service.prefix
    return web.Application(
        [
            (p + "oauth_callback", HubOAuthCallbackHandler),
            (p + "gpulab/credentials", CredentialsHandler),
            (p + "gpulab/health", HealthHandler),
            (p + ".*", ProxyHandler),
        ],
        service=service,
        cookie_secret=os.urandom(32),
        xsrf_cookies=False,
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m services.mlflow", description=__doc__.splitlines()[0])
    ap.add_argument("command", nargs="?", default="serve", choices=["serve", "rotate-key"],
                    help="serve (as a JupyterHub service), or rotate-key (revoke every credential)")
    ap.add_argument("--state-dir", default=None,
                    help="the service's private directory (default: <hub.state_dir>/mlflow of GPULAB_CONFIG)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    settings = load_settings()  # GPULAB_CONFIG, as every service
    state = args.state_dir or os.path.join(settings.state_dir, "mlflow")
    if args.command == "rotate-key":
        rotate_key(Path(state))
        print("signing key replaced: restart the hub (or the mlflow service); servers get new credentials on their next start")
        return
    _die_with_parent()  # a hub killed with SIGKILL must not leave us (and MLflow) running
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/mlflow/")
    service = Service(state, settings.mlflow, prefix, os.environ.get("JUPYTERHUB_API_TOKEN", ""))
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8090"))
    serve(make_app(service), url.port, listen_host(url), max_body_size=service.max_body, idle_connection_timeout=3600)
    loop = IOLoop.current()

    def stop(*_):
        service.mlflow.stop()
        loop.add_callback_from_signal(loop.stop)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    loop.add_callback(service.start_mlflow)
    loop.add_callback(service.watch)
    log.info("MLflow front at %s%s", url.geturl(), prefix)
    try:
        loop.start()
    finally:
        service.mlflow.stop()
