"""Secrets in gpulab.yaml are references, never values: 'env:NAME' or 'file:/path'."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError


def read_secret(value: str, where: str, min_length: int = 32) -> str:
    """'env:NAME' reads an environment variable, 'file:/path' a file; anything else is literal.

    ``min_length`` guards tokens we generate; secrets issued by others (an OAuth client secret,
    an LDAP password) are checked only for being non-empty (``min_length=1``)."""
    if value.startswith("env:"):
        name = value[4:]
        if not os.environ.get(name):
            raise ConfigError(f"{where}: environment variable {name} is not set")
        secret = os.environ[name].strip()
    elif value.startswith("file:"):
        path = value[5:]
        try:
            secret = Path(path).read_text().strip()
        except OSError as e:
            raise ConfigError(f"{where}: cannot read {path}: {e.strerror}") from None
    else:
        secret = value
    if min_length > 1 and len(secret) < min_length:
        raise ConfigError(f"{where}: a token must have at least {min_length} characters (generate one with `openssl rand -hex 32`)")
    if not secret:
        raise ConfigError(f"{where}: the secret is empty")
    return secret
