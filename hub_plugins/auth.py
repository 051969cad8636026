"""Authenticators. The embedded default is NativeAuthenticator (sign-up, admin approval,
password rules), maintained upstream; gpulab points JupyterHub at its templates and carries
the two fixes its login page needs under JupyterHub 6 (see ``_LoginHandler``)."""

from __future__ import annotations

import os

import nativeauthenticator
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator import handlers as native_handlers

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

    def _render(self, login_error=None, username=None, **_ignored):
        # JupyterHub 6 renders login errors through _render(**namespace) (e.g. a missing XSRF
        # token); nativeauthenticator 1.3.0's _render takes two arguments and raised TypeError.
        return super()._render(login_error=login_error, username=username)


class GPULabNativeAuthenticator(NativeAuthenticator):
    """Built-in accounts: users sign up at /hub/signup, an admin approves them at /hub/authorize;
    users listed in ``admin_users`` are approved when they sign up."""

    def get_handlers(self, app):
        return [
            (path, _LoginHandler if handler is native_handlers.LoginHandler else handler)
            for path, handler in super().get_handlers(app)
        ]
