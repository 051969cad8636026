"""What a server's own JupyterLab says about it: a Jupyter server extension, no front-end build.

JupyterLab shows the server's GPUs, time left before its runtime stop and its rate in the
browser tab's title (``gpulab · 2 A100-80GB GPUs · 3 h 05 min left · 2.50 EUR/h - JupyterLab``):
the extension sets JupyterLab's ``appName`` in each page's config, which JupyterLab puts in the
title. ``GET <server>/gpulab/status`` answers the same facts as JSON, cost so far included (for
a terminal: ``curl -s -H "Authorization: token $JUPYTERHUB_API_TOKEN" $JUPYTERHUB_SERVICE_PREFIX...``
or from a notebook).

The facts come from the hub (``/hub/api/gpulab/users/<user>/servers/<name>``, gpulab's
tables), asked with the server's own token (which may read only this server), every 30 s in the
background, so a page load never waits on the hub. The extension runs where gpulab is installed
(the hub's own environment: the 'minimal' profile); the local spawner points such servers at
``jupyter-config/`` (``JUPYTER_CONFIG_PATH``). Elsewhere servers start without it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import quote

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.ioloop import IOLoop, PeriodicCallback

CONFIG_DIR = str(Path(__file__).with_name("jupyter-config"))
REFRESH_MS = 30_000
STALE_S = 10


class Status:
    """The server's status as the hub last said (None until it has), and when it said it."""

    def __init__(self, env=os.environ):
        self.url = None
        api = env.get("JUPYTERHUB_API_URL")
        user = env.get("JUPYTERHUB_USER")
        if api and user:
            self.url = (f"{api.rstrip('/')}/gpulab/users/{quote(user, safe='')}/servers/"
                        f"{quote(env.get('JUPYTERHUB_SERVER_NAME', ''), safe='')}")
        self.token = env.get("JUPYTERHUB_API_TOKEN", "")
        self.last: dict | None = None
        self.at = 0.0

    async def refresh(self) -> dict | None:
        if not self.url:
            return None
        req = HTTPRequest(self.url, headers={"Authorization": f"token {self.token}"}, request_timeout=10)
        try:
            resp = await AsyncHTTPClient().fetch(req, raise_error=False)
        except OSError:
            return self.last
        if resp.code == 200:
            self.last, self.at = json.loads(resp.body), time.monotonic()
        return self.last


class StatusHandler(APIHandler):
    @web.authenticated
    async def get(self):
        status = await self.settings["gpulab_status"].refresh()
        if status is None:
            raise web.HTTPError(503, "The hub has not said anything about this server yet.")
        self.finish(json.dumps(status))


def _jupyter_server_extension_points():
    return [{"module": "hub_plugins.lab"}]


def _load_jupyter_server_extension(serverapp):
    status = Status()
    settings = serverapp.web_app.settings
    settings["gpulab_status"] = status
    serverapp.web_app.add_handlers(".*$", [(url_path_join(settings["base_url"], "gpulab/status"), StatusHandler)])

    def ensure_title_hook():
        # JupyterHub's own extension sets a hook of its own while it initialises (after or before
        # this one loads): wrap whatever is there, once
        before = settings.get("page_config_hook")
        if getattr(before, "gpulab_title", False):
            return

        def hook(handler, page_config):
            page_config = before(handler, page_config) if before else page_config
            if status.last and status.last.get("title"):
                page_config["appName"] = f"{status.last['title']} - JupyterLab"
            if time.monotonic() - status.at > STALE_S:  # the next page load gets fresher words
                IOLoop.current().add_callback(status.refresh)
            return page_config

        hook.gpulab_title = True
        settings["page_config_hook"] = hook

    async def refresh():
        ensure_title_hook()
        await status.refresh()

    loop = IOLoop.current()
    loop.add_callback(refresh)
    for delay in (1, 3, 10):  # once every extension has initialised, and the hub calls it up
        loop.call_later(delay, refresh)
    PeriodicCallback(refresh, REFRESH_MS).start()
    serverapp.log.info("gpulab: GPUs and time left in JupyterLab's title (%s)", status.url)
