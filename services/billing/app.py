"""The billing service (``/services/billing/``): usage, quotas, budgets, GPUs and the queue, as a
JSON/CSV API (hub tokens) and as pages (hub login), plus Prometheus metrics.

A user sees only their own usage, quota and servers; holders of gpulab's read-usage scope (admins)
see everyone's (``hub_plugins/scopes.py``). The service's own token has read-only scopes (see
``update_services`` in ``hub_plugins/settings/apply.py``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import jinja2
from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import web

from hub_plugins.gpu.devices import format_equivalents
from hub_plugins.notify.compose import EVENTS, valid_email, valid_events
from hub_plugins.notify.prefs import PrefsStore
from hub_plugins.notify.webhook import MAX_LENGTH, shown, valid_webhook
from hub_plugins.scopes import MANAGE_QUEUE, READ_USAGE, holds
from services.handlers import COOKIE_OPTIONS, JSONErrors, ValidatedArgs, error_message
from services.handlers import NoSuchAPI as NoSuchAPIBase

from .data import BillingData
from .metrics import metrics_text

UTC = dt.timezone.utc
TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
                               autoescape=True)
TEMPLATES.filters["gpus"] = format_equivalents  # 1 GPU, 2 GPUs, 0.25 GPU: as the other pages say it


class Base(JSONErrors, ValidatedArgs, HubOAuthenticated, web.RequestHandler):
    @property
    def data(self) -> BillingData:
        return self.settings["billing_data"]

    @property
    def me(self) -> dict:
        return self.current_user

    @property
    def admin(self) -> bool:
        """Sees everyone's usage, quotas and GPUs: holds gpulab's read-usage scope."""
        return holds(self.current_user, READ_USAGE)

    def target(self) -> str:
        """The user whose data is asked for (?user=): oneself, or anyone for admins."""
        who = self.arg_user() or self.me["name"]
        if who != self.me["name"] and not self.admin:
            raise web.HTTPError(403, f"You can only see your own usage, not that of user '{who}'.")
        return who

    def now(self) -> dt.datetime:
        return dt.datetime.now(UTC)



class NoSuchAPI(NoSuchAPIBase, Base):
    api = "billing"
    paths = "api/usage, api/quota, api/gpus, api/queue[/<user>[/<server>]] and api/notifications"


class UsageAPI(Base):
    @web.authenticated
    async def get(self):
        who = self.arg_user()
        if who and who != self.me["name"] and not self.admin:
            raise web.HTTPError(403, f"You can only see your own usage, not that of user '{who}'.")
        if not who and not self.admin:
            who = self.me["name"]  # users see themselves; admins without ?user= see everyone
        now = self.now()
        since = self.arg_time("since", now - dt.timedelta(days=30))
        until = self.arg_time("until", now)
        if until <= since:
            raise web.HTTPError(400, "'until' must be after 'since'")
        fmt = self.arg_choice("format", "json", ("json", "csv"))
        if fmt == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            name = f"gpulab-usage-{who or 'all'}-{since.date()}-{until.date()}.csv"
            self.set_header("Content-Disposition", f'attachment; filename="{name}"')
            # streamed: a year of everyone's records is sent as it is read, in flat memory
            chunks = self.data.csv_chunks(who or None, since, until, now)
            while (text := await asyncio.to_thread(next, chunks, None)) is not None:
                self.write(text)
                await self.flush()
            self.finish()
        else:
            rep = await asyncio.to_thread(self.data.usage, who or None, since, until, now)
            self.finish({"user": who or None, **rep})


class QuotaAPI(Base):
    @web.authenticated
    async def get(self):
        who = self.target()
        groups = self.me.get("groups") if who == self.me["name"] and "groups" in self.me else None
        if groups is None:
            groups = await self.data.groups_of(who)
        self.finish(await asyncio.to_thread(self.data.quota, who, None, groups, self.now()))


class GPUsAPI(Base):
    @web.authenticated
    async def get(self):
        self.finish(await asyncio.to_thread(self.data.gpus, self.me["name"], self.admin, self.now()))


class QueueAPI(Base):
    @web.authenticated
    async def get(self, user=None, server=None):
        """The queue in start order (others' requests as "another user"); with a user (and a
        server), only those requests, keeping their places: one's own, or anyone's for admins."""
        if user is not None:
            user = self.path_name(user, "user")
            if user != self.me["name"] and not self.admin:
                raise web.HTTPError(403, "You can only look up your own requests here (GET api/queue lists "
                                         "the whole queue).")
        server = self.path_name(server, "server") if server else None
        queue = await asyncio.to_thread(self.data.queue, self.me["name"], self.admin, self.now())
        if user is not None:
            queue = [e for e in queue if e["user"] == user and (server is None or e["server"] == server)]
        self.finish({"queue": queue})

    @web.authenticated
    async def delete(self, user, server=None):
        """Cancel a waiting request: the user's own, or anyone's for admins."""
        user = self.path_name(user, "user")
        server = self.path_name(server, "server") if server else ""
        if user != self.me["name"] and not holds(self.me, MANAGE_QUEUE):
            raise web.HTTPError(403, f"You can only cancel your own requests (cancelling others' needs the "
                                     f"{MANAGE_QUEUE} scope).")
        n = await asyncio.to_thread(self.data.core.queue.cancel, user, server or "")
        if not n:
            raise web.HTTPError(404, f"No waiting request for {user}{':' + server if server else ''}.")
        self.finish({"cancelled": n})


class NotifyAPI(Base):
    """A person's notification choice: GET it (admins: ?user=), PUT {"email", "webhook", "events"}
    (one's own; "webhook" left out keeps the stored one, as scripts from before webhooks expect)."""

    @property
    def prefs(self):
        return self.settings["notify_prefs"]

    def mine(self) -> str:
        who = self.arg_user() or self.me["name"]
        if who != self.me["name"]:
            raise web.HTTPError(403, "You can only change your own notifications.")
        return who

    def choice(self, body) -> tuple[str, list[str], str | None]:
        if not isinstance(body, dict):
            raise web.HTTPError(400, 'Send {"email": "ann@example.org", "webhook": "", "events": [...]}.')
        unknown = sorted(set(body) - {"email", "webhook", "events"})
        if unknown:
            raise web.HTTPError(400, "%s", f"Unknown field '{unknown[0][:40]}': send 'email', 'webhook' and "
                                           "'events'.")
        email = body.get("email", "")
        if not isinstance(email, str):
            raise web.HTTPError(400, "'email' must be text (an address, or empty for no email).")
        hooks = self.data.live.current.raw["notifications"]["webhooks"]
        try:
            webhook = None  # left out: the stored one stays
            if "webhook" in body:
                webhook = valid_webhook(body["webhook"], hooks["allowed_hosts"], hooks["require_https"])
            return valid_email(email), valid_events(body.get("events", list(EVENTS))), webhook
        except ValueError as e:
            raise web.HTTPError(400, "%s", str(e)) from None

    @web.authenticated
    async def get(self):
        who = self.target()
        got = await asyncio.to_thread(self.prefs.get, who)
        if who != self.me["name"]:  # the URL's path is the webhook's secret: its owner's alone
            got["webhook"] = shown(got["webhook"])
        self.finish({**got, "choices": EVENTS})

    @web.authenticated
    async def put(self):
        email, events, webhook = self.choice(self.json())
        self.finish(await asyncio.to_thread(self.prefs.set, self.mine(), email, events, webhook))


class Metrics(Base):
    """Prometheus text format. Needs an admin, or a token with the read:metrics scope."""

    @web.authenticated
    async def get(self):
        scopes = set(self.me.get("scopes") or [])
        if not (self.admin or "read:metrics" in scopes):
            raise web.HTTPError(403, "Metrics need an admin or a token with the read:metrics scope.")
        body = await asyncio.to_thread(metrics_text, self.data, self.now())
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(body)


class Page(Base):
    def render_page(self, name: str, **ns):
        prefix = self.settings["service_prefix"]
        html = TEMPLATES.get_template(name).render(
            prefix=prefix, me=self.me, admin=self.admin, xsrf=self.xsrf_token.decode(),
            hub_home=url_path_join(self.settings["hub_prefix"], "home"), **ns)
        self.finish(html)

    def write_error(self, status_code, **kwargs):
        message = error_message(self, kwargs.get("exc_info"))
        self.set_status(status_code)
        self.finish(TEMPLATES.get_template("error.html").render(status=status_code, message=message,
                                                                prefix=self.settings["service_prefix"]))


class MyUsagePage(Page):
    @web.authenticated
    async def get(self):
        who = self.target()
        now = self.now()
        days = self.arg_int("days", 30, 1, 366)
        since = now - dt.timedelta(days=days)
        groups = await self.data.groups_of(who)
        rep = await asyncio.to_thread(self.data.usage, who, since, now, now)
        daily = await asyncio.to_thread(self.data.per_day, who, since, now)
        quota = await asyncio.to_thread(self.data.quota, who, None, groups, now)
        queue = [q for q in await asyncio.to_thread(self.data.queue, who, False, now) if q["user"] == who]
        notify = await asyncio.to_thread(self.settings["notify_prefs"].get, who)
        self.render_page("usage.html", who=who, days=days, rep=rep, daily=daily, quota=quota, queue=queue,
                         chart=bar_chart(daily), notify=notify, choices=EVENTS,
                         email_on=email_enabled(self.data), webhook_hosts=webhook_hosts(self.data))


class QueueCancelPage(Page):
    @web.authenticated
    async def post(self):
        server = self.arg("server")
        await asyncio.to_thread(self.data.core.queue.cancel, self.me["name"], server)
        self.redirect(self.settings["service_prefix"])


class NotifyPage(NotifyAPI, Page):
    """The form on one's usage page."""

    @web.authenticated
    async def get(self):
        self.redirect(self.settings["service_prefix"] + "#notifications")

    @web.authenticated
    async def post(self):
        events = [e for e in self.get_arguments("events") if e in EVENTS]
        # a field the page did not show (email or webhooks off) keeps what is stored
        shown_fields = {k: self.arg(k, max_len=MAX_LENGTH) for k in ("email", "webhook") if k in self.request.arguments}
        stored = await asyncio.to_thread(self.prefs.get, self.me["name"])
        email, events, webhook = self.choice({"email": stored["email"], **shown_fields, "events": events})
        await asyncio.to_thread(self.prefs.set, self.mine(), email, events, webhook)
        self.redirect(self.settings["service_prefix"] + "#notifications")


class AdminPage(Page):
    @web.authenticated
    async def get(self):
        if not self.admin:
            raise web.HTTPError(403, "This page is for admins.")
        now = self.now()
        days = self.arg_int("days", 30, 1, 366)
        since = now - dt.timedelta(days=days)
        members: dict[str, list[str]] = {}
        for g in await self.data.hub.groups():
            for u in g.get("users", []):
                members.setdefault(u, []).append(g["name"])
        rep = await asyncio.to_thread(self.data.summary, since, now, lambda u: members.get(u) or ["(no group)"])
        self.render_page("admin.html", rep=rep, days=days, by_user=rep["by_user"], by_group=rep["by_group"],
                         since=since.date().isoformat())


class GPUsPage(Page):
    @web.authenticated
    async def get(self):
        self.render_page("gpus.html", g=await asyncio.to_thread(self.data.gpus, self.me["name"], self.admin,
                                                                self.now()))


def email_enabled(data) -> bool:
    """Whether this hub sends email at all (the page says so instead of offering a dead form)."""
    conf = data.live.current.raw["notifications"]
    return bool(conf["enabled"] and conf["smtp"]["host"])


def webhook_hosts(data) -> list[str]:
    """The chat servers people may give a webhook for; none: the page says an admin must allow them."""
    conf = data.live.current.raw["notifications"]
    return list(conf["webhooks"]["allowed_hosts"]) if conf["enabled"] else []


def bar_chart(daily: list[dict], width: int = 720, height: int = 160) -> dict:
    """Bars of GPU-hours per day, as numbers for an inline SVG (no script, no CDN)."""
    n = max(1, len(daily))
    top = max((d["gpu_hours"] for d in daily), default=0) or 1
    bw = width / n
    bars = [{"x": round(i * bw + 1, 1), "w": round(max(1.0, bw - 2), 1),
             "h": round(d["gpu_hours"] / top * (height - 20), 1), "day": d["day"], "v": d["gpu_hours"],
             "cost": d["cost"]} for i, d in enumerate(daily)]
    for b in bars:
        b["y"] = round(height - b["h"], 1)
    return {"width": width, "height": height, "bars": bars, "top": round(top, 2)}


def make_app(data: BillingData, prefix: str, hub_prefix: str = "/hub/") -> web.Application:
    def p(path):
        return url_path_join(prefix, path)

    HubOAuth.instance(cookie_options=dict(COOKIE_OPTIONS))  # the singleton the handlers use

    return web.Application(
        [
            (p("api/usage"), UsageAPI),
            (p("api/quota"), QuotaAPI),
            (p("api/gpus"), GPUsAPI),
            (p("api/queue"), QueueAPI),
            (p(r"api/queue/([^/]+)"), QueueAPI),
            (p(r"api/queue/([^/]+)/([^/]+)"), QueueAPI),
            (p("api/notifications"), NotifyAPI),
            (p("api/.*"), NoSuchAPI),
            (p("notifications"), NotifyPage),
            (p("metrics"), Metrics),
            (p("oauth_callback"), HubOAuthCallbackHandler),
            (p("queue/cancel"), QueueCancelPage),
            (p("admin"), AdminPage),
            (p("gpus"), GPUsPage),
            (prefix.rstrip("/") + "/?", MyUsagePage),
        ],
        billing_data=data,
        notify_prefs=PrefsStore(data.core.db),
        service_prefix=prefix,
        hub_prefix=hub_prefix,
        cookie_secret=None,
        # XSRF: HubOAuth checks cookie-authenticated changes itself; token calls are exempt
        # (services/handlers.py says why tornado's own check stays off)
        xsrf_cookies=False,
        xsrf_cookie_kwargs=dict(COOKIE_OPTIONS, httponly=False),
    )
