"""The MLflow tracking server behind the front: its secrets, its auth config, its process.

Everything lives in the service's state directory (mode 0700), created on first start:

- ``secrets.json`` (0600): the Flask secret, the MLflow admin password, the signing key of
  credentials. Generated, never defaulted; ``rotate-key`` replaces the signing key.
- ``auth.ini``: MLflow's basic-auth config, ``default_permission = NO_PERMISSIONS`` (users see
  only their own and shared experiments), and ``auth.db`` (its accounts and permissions).
- ``mlflow.db`` (backend store, unless configured) and ``artifacts/`` (unless configured).
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ADMIN_USER = "_gpulab_admin"  # MLflow's own admin account, used only by the front


@dataclass(frozen=True)
class Secrets:
    flask_secret: str
    admin_password: str
    signing_key: str

    @property
    def key(self) -> bytes:
        return bytes.fromhex(self.signing_key)


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load_secrets(state: Path) -> Secrets:
    """The service's secrets, generated on first use."""
    _private_dir(state)
    path = state / "secrets.json"
    if path.exists():
        return Secrets(**json.loads(path.read_text()))
    s = Secrets(secrets.token_hex(32), secrets.token_urlsafe(32), secrets.token_hex(32))
    _write_private(path, json.dumps(s.__dict__))
    return s


def rotate_key(state: Path) -> Secrets:
    """A new signing key: every issued credential stops working; accounts are re-synced."""
    old = load_secrets(state)
    new = Secrets(old.flask_secret, old.admin_password, secrets.token_hex(32))
    _write_private(state / "secrets.json", json.dumps(new.__dict__))
    return new


def auth_ini(state: Path, s: Secrets) -> Path:
    path = state / "auth.ini"
    _write_private(path, "\n".join([
        "[mlflow]",
        "default_permission = NO_PERMISSIONS",
        f"database_uri = sqlite:///{state / 'auth.db'}",
        f"admin_username = {ADMIN_USER}",
        f"admin_password = {s.admin_password}",
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
        "auth_cache_ttl_seconds = 60",
        "",
    ]))
    return path


def _die_with_parent():
    """In the child: get SIGTERM when the front dies (even by SIGKILL), and lead a process
    group so the front can stop MLflow's own children with it."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class MLflowProcess:
    def __init__(self, state: Path, port: int, prefix: str, backend_store_uri: str | None = None,
                 artifacts_destination: str | None = None, log=print):
        self.state = Path(state)
        self.port = port
        self.prefix = "/" + prefix.strip("/")
        self.backend_store_uri = backend_store_uri or f"sqlite:///{self.state / 'mlflow.db'}"
        self.artifacts = artifacts_destination or str(self.state / "artifacts")
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
            "--backend-store-uri", self.backend_store_uri, "--artifacts-destination", self.artifacts,
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--static-prefix", self.prefix,
        ]

    def start(self, s: Secrets) -> None:
        if "://" not in self.artifacts:
            Path(self.artifacts).mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        for k in list(env):  # the front's hub credentials are not MLflow's business
            if k.startswith("JUPYTERHUB_"):
                del env[k]
        env.update(
            MLFLOW_AUTH_CONFIG_PATH=str(auth_ini(self.state, s)),
            MLFLOW_FLASK_SERVER_SECRET_KEY=s.flask_secret,
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",  # one process less; no job features used
            # no usage data leaves the hub (the UI's notice and telemetry: see policy.UI_PRESET)
            MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true",
        )
        log = open(self.state / "mlflow-server.log", "ab")
        self.proc = subprocess.Popen(self.command(), env=env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
                                     start_new_session=True, cwd=self.state)
        log.close()

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}; see "
                                   f"{self.state / 'mlflow-server.log'}")
            if self.ready():
                return
            time.sleep(0.25)
        raise RuntimeError(f"mlflow server did not answer in {timeout}s; see {self.state / 'mlflow-server.log'}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
