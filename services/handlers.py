"""What the handlers of gpulab's hub services (billing, quotas) share: validated query arguments
and JSON bodies, and how they authenticate.

- Input goes through ``hub_plugins.validation`` (the layer the spawn request uses too); a bad value
  is a 4xx whose message says what to change, never a 500.
- Authentication as in JupyterHub: a request with a hub token (``Authorization: token ...``) is
  not subject to XSRF (a token is not sent by browsers on their own, so it cannot be forged
  cross-site); a request that relies on the service's cookie is, and must carry the page's
  ``_xsrf`` value. ``HubOAuth`` performs that check when it reads the cookie, so the apps leave
  tornado's own ``xsrf_cookies`` off: tornado would check before anyone knows whether a token or a
  cookie authenticates the request, refusing every token-authenticated POST/DELETE.
- Cookies (the OAuth session, its state, ``_xsrf``) are ``SameSite=Lax``.
"""

from __future__ import annotations

import datetime as dt
import json

from tornado import web

from hub_plugins.settings.patterns import NAME
from hub_plugins.validation import InputError, choice, iso_time, json_body, shown, text, whole_number

COOKIE_OPTIONS = {"samesite": "Lax", "httponly": True}
# A query parameter is at most this long (a user name is at most 255 characters).
MAX_ARG = 256
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
LATEST = dt.datetime(2200, 1, 1, tzinfo=dt.timezone.utc)


def http_error(e: InputError) -> web.HTTPError:
    return web.HTTPError(e.status, "%s", str(e))


def error_message(handler: web.RequestHandler, exc_info) -> str:
    """What an error page or a JSON error says: the HTTPError's own message, else the reason."""
    exc = (exc_info or (None, None))[1]
    return (exc.get_message() if isinstance(exc, web.HTTPError) else None) or handler._reason


class JSONErrors:
    """Mix into an API handler (before ``RequestHandler``): errors as ``{"status", "message"}``."""

    def write_error(self, status_code, **kwargs):
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": error_message(self, kwargs.get("exc_info"))}))


class NoSuchAPI(JSONErrors):
    """Mix into a service's API handler for ``api/.*`` after its real endpoints: any other path
    (also one a client's URL normalising made up, such as api/users/ from api/users/.) is a JSON
    404 that names the service's API and lists what it has, never tornado's HTML page."""

    api = ""  # the service, as the message names it
    paths = ""  # what its API has

    def prepare(self):
        # the path as sent can be megabytes long: quoted, cut
        raise web.HTTPError(404, "%s", f"There is no {self.api} API at {shown(self.request.path, 200)}. "
                                       f"It has {self.paths}.")


class ValidatedArgs:
    """Mix into a tornado handler: arguments and bodies checked by the shared validation layer."""

    def arg(self, name: str, default: str = "", max_len: int = MAX_ARG) -> str:
        try:
            value = self.get_argument(name, default)
        except web.HTTPError:  # tornado refuses undecodable arguments with a bare 400
            raise web.HTTPError(400, "%s", f"'{name}' must be UTF-8 text.") from None
        try:
            return text(value, name, max_len, allow_empty=True)
        except InputError as e:
            raise http_error(e) from None

    def arg_user(self, name: str = "user") -> str:
        """A hub user name (or '' when absent)."""
        value = self.arg(name)
        try:
            return text(value, name, 255, pattern=NAME[1:-1], what="a user name", allow_empty=True)
        except InputError as e:
            raise http_error(e) from None

    def arg_int(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self.arg(name)
        if value == "":
            return default
        try:
            return whole_number(value, name, lo, hi)
        except InputError as e:
            raise http_error(e) from None

    def arg_choice(self, name: str, default: str, choices) -> str:
        value = self.arg(name, default)
        try:
            return choice(value, name, choices)
        except InputError as e:
            raise http_error(e) from None

    def arg_time(self, name: str, default: dt.datetime) -> dt.datetime:
        try:
            t = iso_time(self.arg(name), name, default)
        except InputError as e:
            raise http_error(e) from None
        if not EARLIEST <= t <= LATEST:
            raise web.HTTPError(400, "%s", f"'{name}' must be between {EARLIEST.year} and {LATEST.year}.")
        return t

    def path_name(self, value: str, what: str) -> str:
        """A name taken from the URL path (a user or server name)."""
        try:
            return text(value, what, 255, what=f"a {what} name")
        except InputError as e:
            raise http_error(e) from None

    def json(self, default=None):
        """The request body as JSON: application/json (or no content type), at most 64 KB."""
        try:
            return json_body(self.request.body, self.request.headers.get("Content-Type"), default=default)
        except InputError as e:
            raise http_error(e) from None

    def prepare(self):
        """A cookie-authenticated change without the page's _xsrf value is refused with a message
        (HubOAuth then ignores the cookie, which alone would read as "not signed in")."""
        if self.request.method in ("GET", "HEAD", "OPTIONS"):
            return super().prepare()
        if self.current_user is None and self._has_session_cookie() and not getattr(self, "_token_authenticated", False):
            raise web.HTTPError(403, "%s", "This form's XSRF token is missing or stale: reload the page and "
                                           "try again. Scripts should send a hub token (Authorization: token ...).")
        return super().prepare()

    def _has_session_cookie(self) -> bool:
        name = getattr(getattr(self, "hub_auth", None), "cookie_name", None)
        return bool(name and self.get_cookie(name))
