"""Authenticators. The embedded default is NativeAuthenticator (sign-up, admin approval,
password rules), maintained upstream; gpulab only points JupyterHub at its templates."""

from __future__ import annotations

import os

import nativeauthenticator
from nativeauthenticator import NativeAuthenticator


class GPULabNativeAuthenticator(NativeAuthenticator):
    """Built-in accounts: users sign up at /hub/signup, an admin approves them at /hub/authorize;
    users listed in ``admin_users`` are approved when they sign up."""


NATIVE_TEMPLATES = os.path.join(os.path.dirname(nativeauthenticator.__file__), "templates")
