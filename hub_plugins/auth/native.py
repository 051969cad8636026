"""Built-in accounts: NativeAuthenticator (sign-up, admin approval, password rules), maintained
upstream; gpulab points JupyterHub at its templates and carries the two fixes its login page needs
under JupyterHub 6 (see ``_LoginHandler``), a message that says when an account is locked, and
bcrypt's 72-byte limit on passwords (``too_long``)."""

from __future__ import annotations

import os

import nativeauthenticator
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator import handlers as native_handlers
from tornado import web

from .requester import NoteStopRequester

NATIVE_TEMPLATES = os.path.join(os.path.dirname(nativeauthenticator.__file__), "templates")

# bcrypt reads at most 72 bytes of a password. Before bcrypt 5 it ignored the rest; bcrypt 5
# raises, so signing up, signing in or changing a password with a longer one was a 500.
BCRYPT_MAX_BYTES = 72
TOO_LONG = ("Your password is longer than 72 bytes, the most the password store can use (72 letters "
            "a-z, fewer with accents or other scripts). Choose a shorter one.")


def too_long(password: str) -> bool:
    return len(password.encode()) > BCRYPT_MAX_BYTES


def as_checked(password: str) -> str:
    """What bcrypt compared before version 5: the first 72 bytes (a character cut in two left
    out), so that an account made then with a longer password still signs in."""
    raw = password.encode()
    return password if len(raw) <= BCRYPT_MAX_BYTES else raw[:BCRYPT_MAX_BYTES].decode(errors="ignore")


class _NoStatsd:
    """JupyterHub 5 removed ``BaseHandler.statsd``; nativeauthenticator 1.3.0 still times logins
    with it, so every login POST failed with AttributeError (a 500)."""

    def timer(self, *_args, **_kw):
        return self

    def start(self):
        return self

    def stop(self, *_args, **_kw):
        return None


class _LoginHandler(native_handlers.LoginHandler):
    statsd = _NoStatsd()
    _gpulab_sync = False

    def get_argument(self, name, *args, **kw):
        # upstream checks the password a second time itself, to say "not authorized yet"
        value = super().get_argument(name, *args, **kw)
        return as_checked(value) if name == "password" and isinstance(value, str) else value

    def _render(self, login_error=None, username=None, sync=False, **_ignored):
        # JupyterHub 6 renders login errors through _render(**namespace) (e.g. a missing XSRF
        # token); nativeauthenticator 1.3.0's _render takes two arguments and raised TypeError.
        locked = locked_message(self.authenticator, username) if login_error else ""
        self._gpulab_sync = sync
        try:
            return super()._render(login_error=locked or login_error, username=username)
        finally:
            self._gpulab_sync = False

    def render_template(self, name, sync=False, **ns):
        # an error of a login POST (a form left open past its XSRF cookie's hour) is rendered as
        # the login page from write_error, which cannot wait and asks for sync=True; JupyterHub
        # 6.1's LoginHandler and nativeauthenticator's _render drop it, so the page came back
        # empty (write() got a coroutine) instead of saying "Login form invalid or expired"
        return super().render_template(name, sync=sync or self._gpulab_sync, **ns)


class _SignUpHandler(native_handlers.SignUpHandler):
    def get_result_message(self, user, human, taken, confirmed, is_admin):
        # upstream's refusal names the minimum length and common passwords, not the maximum
        if user is None and human and not taken and confirmed and too_long(
                self.get_body_argument("signup_password", "", strip=False)):
            return "alert-danger", TOO_LONG
        return super().get_result_message(user, human, taken, confirmed, is_admin)


class _ChangePasswordHandler(native_handlers.ChangePasswordHandler):
    def get_body_argument(self, name, *args, **kw):
        value = super().get_body_argument(name, *args, **kw)
        return as_checked(value) if name == "old_password" and isinstance(value, str) else value


class _SameSite:
    """Upstream approves (or discards) a sign-up on a GET of a link, so a page on another site
    could have a signed-in admin's browser approve anyone. Browsers say where a request comes
    from (``Sec-Fetch-Site``): such a GET from another site is refused. A request without the
    header (a script's, an old browser's) is left as upstream has it."""

    async def prepare(self):
        site = self.request.headers.get("Sec-Fetch-Site")
        if self.request.method == "GET" and site not in (None, "same-origin", "none"):
            raise web.HTTPError(403, "This link was followed from another site: approve or discard sign-ups "
                                     "from the list at /hub/authorize.")
        return await super().prepare()


class _ToggleAuthorizationHandler(_SameSite, native_handlers.ToggleAuthorizationHandler):
    pass


class _DiscardHandler(_SameSite, native_handlers.DiscardHandler):
    pass


_OURS = {native_handlers.LoginHandler: _LoginHandler, native_handlers.SignUpHandler: _SignUpHandler,
         native_handlers.ChangePasswordHandler: _ChangePasswordHandler,
         native_handlers.ToggleAuthorizationHandler: _ToggleAuthorizationHandler,
         native_handlers.DiscardHandler: _DiscardHandler}


def locked_message(authenticator, username: str | None) -> str:
    """Upstream answers a locked account with "Invalid username or password." even when the
    password is right, so people retry (and stay locked); say what is going on instead."""
    if not username or not authenticator.allowed_failed_logins:
        return ""
    name = authenticator.normalize_username(username)
    if not authenticator.is_blocked(name):
        return ""
    wait = authenticator.seconds_before_next_try
    return (
        f"Too many failed sign-in attempts for {name}: this account is locked for "
        f"{wait} seconds after the last attempt. Wait, then try again (or ask an admin)."
    )


class GPULabNativeAuthenticator(NoteStopRequester, NativeAuthenticator):
    """Built-in accounts: users sign up at /hub/signup, an admin approves them at /hub/authorize;
    users listed in ``admin_users`` are approved when they sign up."""

    def get_handlers(self, app):
        return [(path, _OURS.get(handler, handler)) for path, handler in super().get_handlers(app)]

    def is_password_strong(self, password):
        """Upstream's rules, and at most 72 bytes (a new password; see ``too_long``)."""
        return not too_long(password) and super().is_password_strong(password)

    async def authenticate(self, handler, data):
        password = data.get("password")
        if isinstance(password, str):
            data = {**data, "password": as_checked(password)}
        return await super().authenticate(handler, data)
