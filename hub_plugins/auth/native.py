"""Built-in accounts: NativeAuthenticator (sign-up, admin approval, password rules), maintained
upstream; gpulab points JupyterHub at its templates and carries the two fixes its login page needs
under JupyterHub 6 (see ``_LoginHandler``), plus a message that says when an account is locked."""

from __future__ import annotations

import os

import nativeauthenticator
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator import handlers as native_handlers

from .requester import NoteStopRequester

NATIVE_TEMPLATES = os.path.join(os.path.dirname(nativeauthenticator.__file__), "templates")


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
        return [
            (path, _LoginHandler if handler is native_handlers.LoginHandler else handler)
            for path, handler in super().get_handlers(app)
        ]
