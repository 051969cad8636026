"""Per-spawn MLflow credentials, signed by the service (no token database).

A token is ``gl1.<claims>.<signature>``: base64url JSON claims (user, server, profile, GPUs, admin,
spawn id, expiry) and an HMAC-SHA256 over them with the service's signing key. Each spawn gets a
new one (rotation on every start); they expire after the configured lifetime; replacing the
signing key (``python -m services.mlflow rotate-key``) revokes all of them at once.

The MLflow account behind a hub user has a password derived from the same key
(:func:`account_password`): it never leaves the service, which signs in for the user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import asdict, dataclass, field

PREFIX = "gl1"


@dataclass(frozen=True)
class Claims:
    user: str
    server: str = ""
    profile: str = ""
    gpus: tuple[str, ...] = ()
    gpu_type: str = ""
    admin: bool = False
    spawn_id: str = ""
    exp: int = 0
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["gpus"] = list(self.gpus)
        return d

    @classmethod
    def from_json(cls, d: dict) -> Claims:
        return cls(
            user=str(d["user"]), server=str(d.get("server", "")), profile=str(d.get("profile", "")),
            gpus=tuple(str(g) for g in d.get("gpus", ())), gpu_type=str(d.get("gpu_type", "")),
            admin=bool(d.get("admin", False)), spawn_id=str(d.get("spawn_id", "")),
            exp=int(d.get("exp", 0)), extra=dict(d.get("extra") or {}),
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, f"{PREFIX}.{payload}".encode(), hashlib.sha256).digest())


def issue(key: bytes, claims: Claims) -> str:
    payload = _b64(json.dumps(claims.to_json(), separators=(",", ":"), sort_keys=True).encode())
    return f"{PREFIX}.{payload}.{_sign(key, payload)}"


def verify(key: bytes, token: str, now: float) -> Claims | None:
    """The claims of a valid, unexpired token; None for anything else."""
    try:
        prefix, payload, sig = token.split(".")
    except ValueError:
        return None
    if prefix != PREFIX or not hmac.compare_digest(sig, _sign(key, payload)):
        return None
    try:
        claims = Claims.from_json(json.loads(_unb64(payload)))
    except (ValueError, KeyError, TypeError):
        return None
    if claims.exp and claims.exp < now:
        return None
    return claims


def account_password(key: bytes, user: str) -> str:
    """The MLflow password of ``user``'s account: derived, so nothing to store or leak."""
    return hmac.new(key, f"mlflow-account:{user}".encode(), hashlib.sha256).hexdigest()
