"""No stopped named servers left behind by refused requests.

JupyterHub creates a named server before it spawns it, so every refused request for a new named
server (over quota, no free GPUs, a bad option) used to leave a stopped server on the person's
home page. Once JupyterHub has finished with the failed spawn, gpulab removes such a server
through the hub's own REST API (``DELETE .../servers/{name}`` with ``{"remove": true}``, as the
home page's delete button does), with a token of its own that may only do that
(``delete:servers``): JupyterHub's tables are never touched.

A server is removed only if it never held anything in gpulab (no usage record ever: it never
ran) and nothing started it again meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from traitlets import Float, Unicode
from traitlets.config import SingletonConfigurable

log = logging.getLogger("gpulab.pages")


class RefusedServers(SingletonConfigurable):
    token = Unicode(
        "",
        config=True,
        help="""The hub API token gpulab removes refused named servers with (generated at each
        start; its role holds only delete:servers). Empty: refused servers are left as they are.""",
    )
    settle_seconds = Float(
        30.0, config=True, help="How long to wait for JupyterHub to finish with a refused spawn."
    )

    def __init__(self, **kw):
        super().__init__(**kw)
        self._tasks: set = set()

    def forget_later(self, spawner) -> None:
        """Remove ``spawner``'s server once its refused spawn is over (never blocks the refusal)."""
        if not self.token:
            return
        marker = object()
        spawner._gpulab_refusal = marker
        task = asyncio.ensure_future(self._forget(spawner, marker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forget(self, spawner, marker) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settle_seconds
        await asyncio.sleep(0.1)
        while spawner.active:
            if loop.time() > deadline:
                return
            await asyncio.sleep(0.2)
        core = spawner.gpulab
        try:
            if await core.run(core.usage.has_history, spawner.user.name, spawner.name):
                return
        except Exception:
            log.exception("could not read %s's history; leaving it", spawner._log_name)
            return
        # checked again right before the request: a spawn started meanwhile keeps its server
        if spawner.active or getattr(spawner, "_gpulab_refusal", None) is not marker:
            return
        user, name = quote(spawner.user.name, safe=""), quote(spawner.name, safe="")
        req = HTTPRequest(f"{spawner.hub.api_url.rstrip('/')}/users/{user}/servers/{name}", method="DELETE",
                          headers={"Authorization": f"token {self.token}"}, body=json.dumps({"remove": True}),
                          allow_nonstandard_methods=True, request_timeout=30)
        resp = await AsyncHTTPClient().fetch(req, raise_error=False)
        if resp.code in (202, 204, 404):
            log.info("removed %s: its only request was refused", spawner._log_name)
        else:
            log.warning("could not remove refused server %s: %s %s", spawner._log_name, resp.code,
                        resp.body[:200] if resp.body else "")
