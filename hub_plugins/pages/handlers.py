"""gpulab's handlers inside the hub, under ``/hub/`` (added by ``settings/hubapp.py``).

- ``GET api/gpulab/users/{user}/servers``: the home page's data: each active server's profile,
  GPUs, state (queued with its position, starting, running), cost so far and time left. Needs
  ``read:servers`` on that user (people have it on themselves; admins on everyone).
- ``GET api/gpulab/users/{user}/servers/{name}``: one server (name empty: the default one); a
  server's own token may read it (``access:servers`` on it), for JupyterLab's title.
- ``GET api/gpulab/settings`` / ``POST api/gpulab/settings/reload``: the running gpulab.yaml and
  reloading it (holders of ``custom:gpulab:admin:settings``); ``GET/POST gpulab/settings``: the
  same as a page.

They read JupyterHub's objects (users, spawners) as JupyterHub hands them to handlers, and
gpulab's own tables through the core; never JupyterHub's tables.
"""

from __future__ import annotations

import datetime as dt
import json
from fractions import Fraction

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.scopes import Scope, needs_scope
from tornado import web

from ..core import GPULab
from ..scopes import MANAGE_SETTINGS
from ..store.usage import as_usage, aware
from .status import Held, Place, ServerFacts, server_row, title_text

UTC = dt.timezone.utc


def is_gpulab_admin(handler) -> bool:
    """Who may see and reload settings: holders of gpulab's settings scope (the ``gpulab-admin``
    role: hub.admin_users, admin automation tokens; ``hub_plugins/scopes.py``)."""
    return handler.parsed_scopes.get(MANAGE_SETTINGS) == Scope.ALL


class _Core:
    @property
    def core(self) -> GPULab:
        return GPULab.instance(config=self.settings["config"])


def _facts(user, spawner) -> ServerFacts | None:
    if not spawner.active:
        return None
    phase = "running" if spawner.ready else {"spawn": "starting", "stop": "stopping"}.get(spawner.pending, "running")
    return ServerFacts(spawner.name or "", phase, user.server_url(spawner.name or ""),
                       user.progress_url(spawner.name or ""), dict(spawner.user_options or {}))


def rows_for(core: GPULab, user_name: str, user_id: int, facts: list[ServerFacts], now: dt.datetime) -> list[dict]:
    """The rows for ``facts`` from gpulab's tables (runs on gpulab's threads)."""
    records = {r.server_name: r for r in core.usage.records(user_name, open_only=True)}
    entries = {e.id: e for e in core.queue.entries() if e.user_id == user_id}
    ordered = core.queue.ordered()
    places = {}
    for pos, w in enumerate(ordered, 1):
        if w.id in entries:
            places[entries[w.id].server_name] = Place(pos, len(ordered))
    profiles = {p.name: p.display_name for p in core.catalog}
    currency = core.pricing.currency
    rows = []
    for f in facts:
        r = records.get(f.name)
        held = None
        if r is not None:
            held = Held(r.profile, r.gpu_type, r.gpu_count, tuple(d for d in r.devices.split(",") if d),
                        aware(r.started_at), aware(r.ready_at), r.runtime_limit_s, as_usage(r))
        rows.append(server_row(f, held, places.get(f.name), profiles, currency, now))
    return rows


class ServersAPIHandler(_Core, APIHandler):
    @needs_scope("read:servers")
    async def get(self, user_name):
        user = self.find_user(user_name)
        if user is None:
            raise web.HTTPError(404)
        facts = [f for s in list(user.spawners.values()) if (f := _facts(user, s)) is not None]
        now = dt.datetime.now(UTC)
        rows = await self.core.run(rows_for, self.core, user.name, user.id, facts, now)
        held = sum((Fraction(r["gpu_count"]) for r in rows), Fraction(0))
        self.write(json.dumps({"user": user.name, "now": now.isoformat(), "servers": rows,
                               "gpus_held": float(held), "currency": self.core.pricing.currency}))


class ServerAPIHandler(_Core, APIHandler):
    @needs_scope("read:servers", "access:servers")
    async def get(self, user_name, server_name=""):
        user = self.find_user(user_name)
        spawner = user.spawners.get(server_name) if user is not None and server_name in user.spawners else None
        facts = _facts(user, spawner) if spawner is not None else None
        if facts is None:
            raise web.HTTPError(404, f"{user_name} has no running server '{server_name or 'default'}'.")
        now = dt.datetime.now(UTC)
        row = (await self.core.run(rows_for, self.core, user.name, user.id, [facts], now))[0]
        self.write(json.dumps({**row, "title": title_text(row), "now": now.isoformat()}))


class SettingsAPIHandler(_Core, APIHandler):
    def _check(self):
        if not self.current_user or not is_gpulab_admin(self):
            raise web.HTTPError(403, "Only hub admins see and reload gpulab's settings.")
        if self.core.live is None:
            raise web.HTTPError(404, "This hub's gpulab settings do not come from a file.")

    def get(self):
        self._check()
        self.write(json.dumps(self.core.live.status()))

    async def post(self):
        self._check()
        outcome = await self.core.run(self.core.live.reload)
        self.set_status(200 if outcome.ok else 400)
        # the answer says why, as JupyterHub's errors do ("message"), with the details beside it
        self.write(json.dumps({"status": 200 if outcome.ok else 400, **outcome.as_dict(),
                               "settings": self.core.live.status()}))


class SettingsPageHandler(_Core, BaseHandler):
    async def _render(self, outcome=None):
        if not is_gpulab_admin(self):
            raise web.HTTPError(403, "Only hub admins see and reload gpulab's settings.")
        live = self.core.live
        html = await self.render_template("gpulab-settings.html", status=live.status() if live else None,
                                          outcome=outcome.as_dict() if outcome else None)
        self.finish(html)

    @web.authenticated
    async def get(self):
        await self._render()

    @web.authenticated
    async def post(self):
        live = self.core.live
        if not is_gpulab_admin(self) or live is None:
            raise web.HTTPError(403, "Only hub admins reload gpulab's settings.")
        outcome = await self.core.run(live.reload)
        self.set_status(200 if outcome.ok else 400)
        await self._render(outcome)


HANDLERS = [
    (r"/api/gpulab/users/([^/]+)/servers", ServersAPIHandler),
    (r"/api/gpulab/users/([^/]+)/servers/([^/]*)", ServerAPIHandler),
    (r"/api/gpulab/settings", SettingsAPIHandler),
    (r"/api/gpulab/settings/reload", SettingsAPIHandler),
    (r"/gpulab/settings", SettingsPageHandler),
]
