"""The quotas service: a thin tornado app over ``core.QuotaAdmin``.

Runs as a JupyterHub managed service (``/services/quotas/``). Pages sign people in through the
hub (HubOAuth); the REST API takes the same cookie or a hub token (``Authorization: token``).
Everyone with access to the service sees their own quota; only holders of gpulab's overrides scope
(hub admins, admin automation tokens; ``hub_plugins/scopes.py``) manage overrides.

Pages: ``/`` (your quota), ``/admin`` (overrides, audit, people and groups). API: ``api/me``,
``api/overrides`` (GET, POST), ``api/overrides/{id}`` (GET, DELETE), ``api/audit``,
``api/users/{name}``, ``api/groups/{name}/users`` (POST: add people, creating accounts),
``api/import`` (POST: a CSV of people and their groups).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from urllib.parse import quote

import jinja2
from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from hub_plugins.scopes import MANAGE_OVERRIDES, holds
from hub_plugins.validation import InputError, shown, text
from services.handlers import COOKIE_OPTIONS, JSONErrors, NoSuchAPI, ValidatedArgs, error_message

from . import people
from .core import AdminError, QuotaAdmin, valid_user_name
from .forms import form_to_override
from .members import plan_csv, plan_group

IDENT = r"(?:db|config):[0-9]+"  # override ids
MAX_CSV = 1_000_000  # characters of a CSV of people (members.MAX_ROWS lines)
_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")), autoescape=True,
    trim_blocks=True, lstrip_blocks=True,
)


class Hub:
    """The few hub API calls the service makes, with its own (least-privilege) token."""

    def __init__(self, api_url: str, token: str):
        self.api_url = api_url.rstrip("/")  # also where people.apply calls, with the caller's token
        self.token = token
        self.http = AsyncHTTPClient()

    async def user(self, name: str) -> dict | None:
        req = HTTPRequest(f"{self.api_url}/users/{quote(name, safe='')}",
                          headers={"Authorization": f"token {self.token}"})
        resp = await self.http.fetch(req, raise_error=False)
        if resp.code == 404:
            return None
        if resp.code != 200:
            raise web.HTTPError(502, f"The hub answered {resp.code} when asked about user {name}.")
        return json.loads(resp.body)


class Base(ValidatedArgs, HubOAuthenticated, web.RequestHandler):
    @property
    def admin(self) -> QuotaAdmin:
        return self.settings["quota_admin"]

    @property
    def hub(self) -> Hub:
        return self.settings["hub"]

    @property
    def user_name(self) -> str:
        """Who acts (recorded in the audit trail): a user's name, or 'service:<name>'."""
        m = self.current_user
        return m["name"] if m.get("kind", "user") == "user" else f"service:{m['name']}"

    @property
    def is_admin(self) -> bool:
        """Manages overrides: a person or token holding gpulab's overrides scope."""
        return holds(self.current_user, MANAGE_OVERRIDES)

    async def run_async(self, coro):
        try:
            return await coro
        except AdminError as e:
            raise web.HTTPError(e.status, "%s", e.message) from None

    async def run(self, fn, *args, **kw):
        """Database work off the event loop (SQLite waits for the allocator's write lock)."""
        try:
            return await asyncio.to_thread(fn, *args, **kw)
        except AdminError as e:
            raise web.HTTPError(e.status, "%s", e.message) from None

    async def user_exists(self, name: str) -> bool:
        return valid_user_name(name) and await self.hub.user(name) is not None


class Api(JSONErrors, Base):
    def check_signed_in(self, person: bool = True):
        if not self.current_user:
            raise web.HTTPError(403, "Sign in through the hub, or send a hub token (Authorization: token ...).")
        if person and self.current_user.get("kind", "user") != "user":
            raise web.HTTPError(403, "Only people have a quota; ask about a user with GET api/users/<name>.")

    def check_admin(self):
        self.check_signed_in(person=False)
        if not self.is_admin:
            raise web.HTTPError(403, "Only hub admins manage quota overrides. Your own quota: GET api/me.")

    def write_json(self, data, status: int = 200):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def body(self):
        return self.json(default={})



class NoSuchApi(NoSuchAPI, Api):
    api = "quotas"
    paths = "api/me, api/overrides[/<id>], api/audit, api/users/<name>, api/groups/<name>/users and api/import"


class MeApi(Api):
    async def get(self):
        self.check_signed_in()
        m = self.current_user
        self.write_json(await self.run(self.admin.user_view, m["name"], m.get("groups", []), self.is_admin))


class OverridesApi(Api):
    async def get(self):
        self.check_admin()
        user = self.arg_user() or None
        expired = self.arg_choice("include_expired", "0", ("0", "1", "true", "false", "yes", "no")) in ("1", "true", "yes")
        self.write_json(await self.run(self.admin.list_overrides, user, expired))

    async def post(self):
        self.check_admin()
        body = self.body()
        name = body.get("user") if isinstance(body, dict) else None
        exists = isinstance(name, str) and await self.user_exists(name)
        created = await self.run(self.admin.create_override, body, self.user_name, lambda _n: exists)
        self.write_json(created, 201)


class OverrideApi(Api):
    async def get(self, ident):
        self.check_admin()
        ident = self.path_name(ident, "override")
        found = await self.run(self.admin.store.get, ident)
        if found is None:
            raise web.HTTPError(404, "%s", f"There is no override {shown(ident, 64)}.")
        self.write_json(found)

    async def delete(self, ident):
        self.check_admin()
        ident = self.path_name(ident, "override")
        reason = self.arg("reason")
        if not reason and self.request.body:
            body = self.body()
            if not isinstance(body, dict) or set(body) - {"reason"}:
                raise web.HTTPError(400, "The body may only say why: {\"reason\": \"...\"}.")
            reason = body.get("reason", "")
            if not isinstance(reason, str):
                raise web.HTTPError(400, "'reason' must be text.")
        self.write_json(await self.run(self.admin.remove_override, ident, self.user_name, reason))


class AuditApi(Api):
    async def get(self):
        self.check_admin()
        limit = self.arg_int("limit", 100, 1, 1000)
        self.write_json(await self.run(self.admin.audit, limit, self.arg_user() or None))


class UserApi(Api):
    async def get(self, name):
        self.check_admin()
        model = await self.hub.user(name) if len(name) <= 255 and valid_user_name(name) else None
        if model is None:
            raise web.HTTPError(404, "%s", f"There is no user {shown(name, 64)} on this hub.")
        self.write_json(await self.run(self.admin.user_view, name, model.get("groups", []), model.get("admin", False)))


class PeopleMixin:
    """People and groups are changed with the caller's own hub token (the hub checks it)."""

    async def apply_plan(self, plan) -> dict:
        token = self.settings["hub_auth"].get_token(self)
        return await people.apply(self.settings["hub"].api_url, token, plan)

    def with_notes(self, result: dict) -> dict:
        """The result, its sentence, and the groups it added people to that have no quota."""
        quota_groups = self.admin.quota_groups
        return {**result, "without_quota": people.without_quota(result, quota_groups),
                "message": people.summary(result, quota_groups)}

    def csv_text(self, value) -> str:
        """A CSV file's text, bounded (a list of people, not a data dump)."""
        try:
            return text(value, "csv", MAX_CSV, allow_empty=True)
        except InputError as e:
            raise web.HTTPError(e.status, "%s", str(e)) from None


class GroupMembersApi(PeopleMixin, Api):
    async def post(self, group):
        self.check_admin()
        body = self.body()
        users = body.get("users") if isinstance(body, dict) else None
        if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
            raise web.HTTPError(400, 'Send {"users": ["ann", "ben"]}.')
        result = await self.run_async(self.apply_plan(plan_group(group, " ".join(users))))
        self.write_json(self.with_notes(result), people.status(result))


class ImportApi(PeopleMixin, Api):
    async def post(self):
        """A CSV file: the body as text/csv, or JSON {"csv": "..."}."""
        self.check_admin()
        if "csv" in self.request.headers.get("Content-Type", ""):
            data = self.csv_text(self.request.body.decode("utf-8", "replace"))
        else:
            body = self.body()
            data = self.csv_text(body.get("csv", "") if isinstance(body, dict) else None)
        result = await self.run_async(self.apply_plan(plan_csv(data)))
        self.write_json(self.with_notes(result), people.status(result))


# -- pages -------------------------------------------------------------------------------------
class Page(Base):
    def render_page(self, template: str, status: int = 200, **ns):
        self.set_status(status)
        prefix = self.settings["prefix"]
        self.finish(_templates.get_template(template).render(
            prefix=prefix, hub_prefix=self.settings["hub_prefix"], user=self.current_user, is_admin=self.is_admin,
            xsrf=self.xsrf_token.decode() if isinstance(self.xsrf_token, bytes) else self.xsrf_token, **ns))

    def write_error(self, status_code, **kwargs):
        message = error_message(self, kwargs.get("exc_info"))
        self.finish(_templates.get_template("error.html").render(
            prefix=self.settings["prefix"], hub_prefix=self.settings["hub_prefix"], user=None, is_admin=False,
            status=status_code, message=message))


class MyQuotaPage(Page):
    @web.authenticated
    async def get(self):
        m = self.current_user
        view = await self.run(self.admin.user_view, m["name"], m.get("groups", []), self.is_admin)
        self.render_page("me.html", v=view)


class AdminPage(Page):
    def check_admin(self):
        if not self.is_admin:
            raise web.HTTPError(403, "Only hub admins manage quota overrides. Your own quota is on the "
                                     "'Your quota' page.")

    async def show(self, status=200, error="", form=None, done="", people_result=None):
        overrides = await self.run(self.admin.list_overrides, None, False)
        audit = await self.run(self.admin.audit, 30)
        self.render_page("admin.html", status, overrides=overrides, audit=audit, error=error, form=form or {},
                         done=done, profiles=self.admin.profiles, quota_groups=self.admin.quota_groups,
                         people=people_result)

    @web.authenticated
    async def get(self):
        self.check_admin()
        done = ""
        created, removed = self.arg("created"), self.arg("removed")
        # only ids are echoed: a crafted link cannot put other words on an admin's page
        if re.fullmatch(IDENT, created):
            done = f"Override {created} added; it applies from the user's next spawn."
        elif re.fullmatch(IDENT, removed):
            done = f"Override {removed} removed; it no longer applies from the next spawn."
        await self.show(done=done)

    @web.authenticated
    async def post(self):
        self.check_admin()
        form = {k: self.arg(k) for k in
                ("user", "max_gpus", "max_gpus_per_server", "max_servers", "profiles", "gpu_types",
                 "expires", "reason", "approved_by")}
        try:
            body = form_to_override(form)
            exists = await self.user_exists(body["user"])
            created = await asyncio.to_thread(self.admin.create_override, body, self.user_name, lambda _n: exists)
        except AdminError as e:
            return await self.show(e.status, e.message, form)
        self.redirect(url_path_join(self.settings["prefix"], "admin") + f"?created={quote(created['id'])}")


class PeoplePage(PeopleMixin, AdminPage):
    """The admin page's two people forms: a group and names, or a CSV file (upload or paste)."""

    @web.authenticated
    async def post(self, what):
        self.check_admin()
        if what == "members":
            plan = plan_group(self.arg("group").strip(), self.csv_text(self.get_body_argument("users", "")))
        else:
            files = self.request.files.get("file") or []
            data = files[0]["body"].decode("utf-8", "replace") if files else self.get_body_argument("csv", "")
            plan = plan_csv(self.csv_text(data))
        try:
            result = await self.apply_plan(plan)
        except AdminError as e:
            return await self.show(e.status, e.message)
        await self.show(people.status(result), people_result=self.with_notes(result))


class RemovePage(Page):
    @web.authenticated
    async def post(self, ident):
        if not self.is_admin:
            raise web.HTTPError(403, "Only hub admins manage quota overrides.")
        await self.run(self.admin.remove_override, ident, self.user_name, self.arg("reason"))
        self.redirect(url_path_join(self.settings["prefix"], "admin") + f"?removed={quote(ident)}")


def make_app(quota_admin: QuotaAdmin, prefix: str | None = None) -> web.Application:
    prefix = prefix or os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/quotas/")
    hub_prefix = url_path_join(os.environ.get("JUPYTERHUB_BASE_URL", "/"), "hub/")
    hub = Hub(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"])
    oauth = HubOAuth.instance(api_token=os.environ["JUPYTERHUB_API_TOKEN"], cache_max_age=10,
                              cookie_options=dict(COOKIE_OPTIONS))
    route = lambda path: url_path_join(prefix, path)  # noqa: E731
    ident = f"({IDENT})"
    return web.Application(
        [
            (route("oauth_callback"), HubOAuthCallbackHandler),
            (route("api/me"), MeApi),
            (route("api/overrides"), OverridesApi),
            (route("api/overrides/([^/]+)"), OverrideApi),  # any id: a bad one is a 404 that says so
            (route("api/audit"), AuditApi),
            (route("api/users/([^/]+)"), UserApi),
            (route("api/groups/([^/]+)/users"), GroupMembersApi),
            (route("api/import"), ImportApi),
            (route("api/.*"), NoSuchApi),
            (route("admin/(members|import)"), PeoplePage),
            (route("admin"), AdminPage),
            (route(f"admin/overrides/{ident}/remove"), RemovePage),
            (prefix, MyQuotaPage),
            (prefix.rstrip("/"), web.RedirectHandler, {"url": prefix}),
        ],
        quota_admin=quota_admin,
        hub=hub,
        hub_auth=oauth,
        prefix=prefix,
        hub_prefix=hub_prefix,
        cookie_secret=os.urandom(32),
        login_url=oauth.login_url,
        xsrf_cookie_kwargs=dict(COOKIE_OPTIONS, httponly=False),  # pages read it into their forms
    )
