"""A real JupyterHub subprocess running gpulab's config, for integration tests.

Each hub gets its own state dir, free ports, a generated admin token and a generated
``gpulab.yaml``; the test talks to it only through HTTP (REST API, pages) and, to check what the
allocator persisted, gpulab's own tables.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
import sqlalchemy as sa
import yaml

from tests.support.ports import free_port  # noqa: F401 (the tests import it from here)

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
# the profiles' environments the tests build (and reuse across runs): outside the checkout, every
# user can reach it (servers run as system users under root)
TEST_ENVS_DIR = os.environ.get("GPULAB_TEST_ENVS_DIR", "/var/tmp/gpulab-test-envs")


def server_cgroups(pids: list[int]) -> set[Path]:
    """The gpulab cgroup directories (``gpulab-*``) these processes are in, in every hierarchy."""
    found: set[Path] = set()
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if not Path(path).name.startswith("gpulab-"):
                continue
            hierarchy = controllers.replace("name=", "") or "unified"
            base = Path("/sys/fs/cgroup") / hierarchy
            if not base.is_dir() and not controllers:  # cgroup v2 alone: mounted at the top
                base = Path("/sys/fs/cgroup")
            if (base / path.lstrip("/")).is_dir():
                found.add(base / path.lstrip("/"))
    return found


def hub_cgroups(tag: str, empty: bool = False) -> set[str]:
    """The names of one hub's server cgroups (``gpulab-*-<tag>``) in any hierarchy, read from
    the cgroup filesystem itself; ``empty``: only those with no process in them."""
    found = set()
    for root, dirs, _files in os.walk("/sys/fs/cgroup"):
        for d in dirs:
            if d.startswith("gpulab-") and d.endswith(f"-{tag}"):
                try:
                    if not empty or not Path(root, d, "cgroup.procs").read_text().split():
                        found.add(d)
                except OSError:  # removed meanwhile
                    pass
    return found


def remove_when_empty(groups: set[Path], timeout: float = 5) -> None:
    """Remove cgroup directories once their killed processes have left them (the kernel refuses
    while one is inside)."""
    deadline = time.monotonic() + timeout
    left = set(groups)
    while left and time.monotonic() < deadline:
        for d in list(left):
            try:
                d.rmdir()
                left.discard(d)
            except FileNotFoundError:
                left.discard(d)
            except OSError:
                pass
        if left:
            time.sleep(0.05)


def wait_api(url: str, proc: subprocess.Popen, timeout: float, every: float = 0.05) -> None:
    """Until the hub at ``url`` answers its REST API (200 through the proxy), polled every
    ``every`` seconds: the moment people can sign in, whatever its services are doing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HubError(f"the hub exited with {proc.returncode}")
        try:
            if requests.get(f"{url}/hub/api/", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(every)
    raise HubError(f"the hub did not answer in {timeout} s")


class HubError(AssertionError):
    pass


class Hub:
    def __init__(self, workdir: Path, *, inventory: str = "4xA100-80GB", quotas: dict | None = None,
                 db_url: str | None = None, local: dict | None = None, extra: dict | None = None,
                 profiles_dir: str | None = None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_hex(32)
        self.port, self.hub_port, self.proxy_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "hub.log"
        self.config = {
            "hub": {
                "bind_url": self.url,
                "hub_bind_url": f"http://127.0.0.1:{self.hub_port}",
                "proxy_api_url": f"http://127.0.0.1:{self.proxy_port}",
                "state_dir": "state",
                "db_url": db_url,
                "admin_users": ["admin"],
                "api_tokens": {"tests": self.token},
                "poll_interval": 2,
                "concurrent_spawn_limit": 500,
                "log_level": "DEBUG" if os.environ.get("GPULAB_TEST_DEBUG") else "INFO",
            },
            "profiles_dir": profiles_dir or str(ROOT / "profiles"),
            "gpus": {"inventory": inventory},
            "quotas": quotas or {"default": {"max_gpus": 1, "max_servers": 3}},
            "auth": {"native": {"minimum_password_length": 8, "check_common_password": False}},
            "local": local or {},
            "billing": {"port": free_port()},
            # MLflow (a service with its own server) only where a test asks for it: extra={"mlflow": ...}
            "mlflow": {"enabled": False},
            # an empty directory of its own and no background builds: a hub test sees the profiles'
            # environments as "not installed" even where CI built them beside the suite; the tests
            # that use the built ones pass extra={"environments": {"dir": TEST_ENVS_DIR}}
            "environments": {"dir": str(self.dir / "envs"), "build_missing": False},
        }
        for key, value in (extra or {}).items():
            if isinstance(value, dict) and isinstance(self.config.get(key), dict):
                self.config[key] = {**self.config[key], **value}
            else:
                self.config[key] = value
        self.config_path = self.dir / "gpulab.yaml"

    # -- process ---------------------------------------------------------------------------
    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    @property
    def state_dir(self) -> Path:
        return self.dir / "state"

    def start(self, wait: bool = True, timeout: float = 60, extra_args: list[str] = ()) -> Hub:
        self.write_config()
        env = dict(os.environ, GPULAB_CONFIG=str(self.config_path))
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "jupyterhub"), "-f", str(ROOT / "config" / "jupyterhub_config.py"), *extra_args],
            cwd=self.dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        if wait:
            self.wait_up(timeout)
        return self

    def wait_up(self, timeout: float = 60) -> None:
        """Until the hub answers and so does every service with a URL: the hub answers before
        its services are up (settings/hubapp.py), and tests use both."""
        deadline = time.monotonic() + timeout
        waiting = [f"{self.url}/hub/api/"]
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HubError(f"hub exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                # the hub: 200; a service: its own answer (a redirect to sign in, 401...), not the
                # proxy's 404 (no route yet) or 503 (nothing listening yet)
                while waiting and requests.get(waiting[0], timeout=2, allow_redirects=False).status_code in (
                        (200,) if waiting[0].endswith("/hub/api/") else (200, 302, 401, 403)):
                    if waiting.pop(0).endswith("/hub/api/"):
                        waiting += self._service_urls()
                if not waiting:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise HubError(f"hub did not come up in {timeout}s (waiting for {waiting[0]}):\n{self.log_tail()}")

    def _service_urls(self) -> list[str]:
        """gpulab's services with a URL that this hub's gpulab.yaml turns on."""
        on = {"billing": True,
              "quotas": self.config.get("services", {}).get("quotas", {}).get("enabled", True),
              "mlflow": self.config["mlflow"].get("enabled", False)}
        return [f"{self.url}/services/{name}/" for name, enabled in on.items() if enabled]

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """kill -9 the hub only (servers and proxy live on, as after a crash)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def server_pids(self) -> list[int]:
        """Single-user servers of this hub, found by the hub API URL in their environment."""
        marker = f"JUPYTERHUB_API_URL=http://127.0.0.1:{self.hub_port}/hub/api".encode()
        pids = []
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                if marker in (p / "environ").read_bytes().split(b"\0"):
                    pids.append(int(p.name))
            except OSError:
                continue
        return pids

    def close(self) -> None:
        """Stop every server and the hub (servers outlive the hub by design, so stop them)."""
        if self.proc and self.proc.poll() is None:
            try:
                for user in self.api("GET", "/users?state=active")[1] or []:
                    for name in user.get("servers", {}):
                        self.api("DELETE", f"/users/{user['name']}/servers/{name}" if name
                                 else f"/users/{user['name']}/server")
            except Exception:
                pass
        self.terminate()
        pids = self.server_pids()
        # their cgroups too: the hub that removes them at a stop is gone (one that restarted would
        # find its servers dead and stop them), and the machine running the suite keeps the rest
        groups = server_cgroups(pids)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        remove_when_empty(groups)
        pidfile = self.state_dir / "jupyterhub-proxy.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
            except (ValueError, ProcessLookupError):
                pass

    # -- HTTP ------------------------------------------------------------------------------
    def service(self, name: str, path: str = "", method: str = "GET", token: str | None = None, **kw):
        """A request to a hub service through the proxy (e.g. /services/billing/api/usage)."""
        headers = {"Authorization": f"token {token or self.token}"}
        return requests.request(method, f"{self.url}/services/{name}/{path}", headers=headers, timeout=60, **kw)

    def wait_service(self, name: str, path: str = "api/gpus", timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.service(name, path).status_code < 500:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise HubError(f"service {name} did not answer in {timeout}s:\n{self.log_tail()}")

    def api(self, method: str, path: str, body=None, token: str | None = None, raw: bool = False):
        headers = {"Authorization": f"token {token or self.token}"}
        data = None
        if body is not None:
            data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        r = requests.request(method, f"{self.url}/hub/api{path}", data=data, headers=headers, timeout=120)
        if raw:
            return r
        try:
            payload = r.json() if r.content else None
        except ValueError:
            payload = r.text
        return r.status_code, payload

    def create_users(self, *names: str, groups: dict[str, list[str]] | None = None) -> None:
        missing = [n for n in names if self.api("GET", f"/users/{n}")[0] == 404]
        if missing:
            st, body = self.api("POST", "/users", {"usernames": missing})
            assert st == 201, (st, body)
        for group, members in (groups or {}).items():
            if self.api("GET", f"/groups/{group}")[0] == 404:
                assert self.api("POST", f"/groups/{group}")[0] == 201
            st, body = self.api("POST", f"/groups/{group}/users", {"users": members})
            assert st == 200, (st, body)

    def user_token(self, name: str) -> str:
        st, body = self.api("POST", f"/users/{name}/tokens", {"note": "tests", "expires_in": 3600})
        assert st == 201, (st, body)
        return body["token"]

    @staticmethod
    def server_path(user: str, server: str = "") -> str:
        return f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"

    def spawn(self, user: str, body=None, server: str = "", token: str | None = None):
        return self.api("POST", self.server_path(user, server), body if body is not None else {}, token=token)

    def server_model(self, user: str, server: str = "") -> dict | None:
        st, model = self.api("GET", f"/users/{user}")
        assert st == 200, (st, model)
        return model["servers"].get(server)

    def wait_ready(self, user: str, server: str = "", timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.server_model(user, server)
            if s and s.get("ready"):
                return s
            if s is None or not s.get("pending"):
                if s is None:
                    raise HubError(f"{user}:{server} is not starting:\n{self.log_tail()}")
            time.sleep(0.2)
        raise HubError(f"{user}:{server} not ready in {timeout}s:\n{self.log_tail()}")

    def wait_gone(self, user: str, server: str = "", timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server_model(user, server) is None:
                return
            time.sleep(0.2)
        raise HubError(f"{user}:{server} still there after {timeout}s:\n{self.log_tail()}")

    def start_server(self, user: str, body=None, server: str = "", timeout: float = 60) -> dict:
        st, payload = self.spawn(user, body, server)
        if st not in (201, 202):
            raise HubError(f"spawn {user}:{server} {body} -> {st} {payload}")
        return self.wait_ready(user, server, timeout)

    def stop_server(self, user: str, server: str = "") -> None:
        st, payload = self.api("DELETE", self.server_path(user, server))
        assert st in (202, 204), (st, payload)
        self.wait_gone(user, server)

    # -- gpulab's tables -------------------------------------------------------------------
    @property
    def gpulab_db_url(self) -> str:
        return self.config["hub"]["db_url"] or f"sqlite:///{self.state_dir / 'gpulab.sqlite'}"

    @property
    def tag(self) -> str:
        """What ends the names of this hub's server cgroups: its id as the hub computes it (a hash
        of gpulab's database URL, ``GPULab.hub_id``), cut as the local spawner cuts it."""
        return hashlib.sha256(self.gpulab_db_url.encode()).hexdigest()[:6]

    def allocations(self) -> list[dict]:
        """Rows of gpulab_allocations joined to their servers."""
        engine = sa.create_engine(self.gpulab_db_url)
        try:
            with engine.connect() as c:
                rows = c.execute(sa.text(
                    "SELECT a.device_key, a.visible_id, s.user_name, s.server_name, s.spawn_id "
                    "FROM gpulab_allocations a JOIN gpulab_servers s ON s.id = a.server_id"
                )).mappings().all()
                return [dict(r) for r in rows]
        finally:
            engine.dispose()

    def servers_table(self) -> list[dict]:
        engine = sa.create_engine(self.gpulab_db_url)
        try:
            with engine.connect() as c:
                return [dict(r) for r in c.execute(sa.text("SELECT * FROM gpulab_servers")).mappings()]
        finally:
            engine.dispose()
