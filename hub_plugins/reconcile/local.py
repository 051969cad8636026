"""Local processes as they really are: found by their environment, stopped by process group.

Every server the local backend starts carries ``GPULAB_HUB_ID`` (which hub) and
``GPULAB_SPAWN_ID`` (which allocation) in its environment, and runs under a lifeline (see
``lifeline.py``) that writes its heartbeat into ``<state>/lifelines/<spawn id>``. So whatever the
hub remembers, ``/proc`` says which of its servers run: a process with our hub id whose parent
does not carry the same spawn id is a server's root (its lifeline); the rest are its helpers
(JupyterLab's kernels, terminals). The environment is read from the kernel, never from anything
the server could rewrite later (``/proc/<pid>/environ`` is what it was started with).

Signals go through pidfds, so a process that exits and whose pid is reused is never hit by mistake.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import os
import signal
import sys
import time
from typing import Callable
from urllib.parse import urlparse

from ..bytecode import runnable
from ..gpu.procs import parent_of
from ..lifeline import LINE, NATIVE, cmdline, is_lifeline
from .decide import Found
from .fresh import Fresh
from .runtime import Runtime

log = logging.getLogger("gpulab.reconcile")

LIFELINE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lifeline.py")
LIFELINE_C = LIFELINE[:-len(".py")] + ".c"
HUB_ID_VAR = "GPULAB_HUB_ID"
SPAWN_ID_VAR = "GPULAB_SPAWN_ID"


def read_record(path: str) -> tuple[str, float, int | None] | None:
    """('beat' | 'exit', unix time, exit status or None) from a lifeline file, or None."""
    try:
        with open(path, "rb") as f:
            parts = f.read(LINE).decode("ascii").split()  # what a lifeline writes
    except (OSError, UnicodeDecodeError):
        return None
    if len(parts) < 2 or parts[0] not in ("beat", "exit"):
        return None
    try:
        when = float(parts[1])
        status = int(parts[2]) if parts[0] == "exit" and len(parts) > 2 else None
    except ValueError:
        return None
    if not (math.isfinite(when) and 0 <= when < 2**33):  # a time the release can turn into a date
        return None
    return parts[0], when, status


def read_environ(pid: int) -> dict[str, str] | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return parse_environ(f.read())
    except OSError:
        return None


def parse_environ(raw: bytes) -> dict[str, str]:
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def runs_server(pid: int, hub_id: str, user: str, server_name: str) -> bool:
    """Whether ``pid`` is still that server's process: started by this hub for that user and
    server (its environment, read from the kernel), and not a zombie (whose environment reads
    empty). A pid the kernel has given to another program since is not: the server died while
    the hub was down and the machine rebooted, or the pids wrapped (32,768 by default)."""
    env = read_environ(pid)
    return bool(env) and (env.get(HUB_ID_VAR), env.get("JUPYTERHUB_USER"), env.get("JUPYTERHUB_SERVER_NAME")) == (
        hub_id, user, server_name)


def is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2:].split()[0] in (b"Z", b"X")
    except (OSError, ValueError, IndexError):
        return True


def scan(hub_id: str) -> dict[str, dict]:
    """spawn id -> {'roots': [pid], 'pids': [pid], 'env': root's environment} for this hub's
    processes. Processes we may not read (other users' when not root) are not ours anyway."""
    marker = f"{HUB_ID_VAR}={hub_id}".encode()
    by_spawn: dict[str, dict] = {}
    envs: dict[int, dict] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        # the substring test first: most processes are not ours, and splitting each one's
        # environment was most of a look's time
        if marker not in raw or marker not in raw.split(b"\0") or is_zombie(pid):
            continue
        env = parse_environ(raw)
        spawn = env.get(SPAWN_ID_VAR, "")
        envs[pid] = env
        entry = by_spawn.setdefault(spawn, {"roots": [], "pids": [], "env": env})
        entry["pids"].append(pid)
    for spawn, entry in by_spawn.items():
        mine = set(entry["pids"])
        entry["roots"] = sorted(p for p in mine if parent_of(p) not in mine)
        if entry["roots"]:
            entry["env"] = envs[entry["roots"][0]]
    return by_spawn


def kill_all(pids: list[int], grace: float) -> list[int]:
    """SIGTERM (each process and its group), then SIGKILL after ``grace`` seconds; returns the
    pids still there at the end (none, unless we may not signal them)."""
    fds = {}
    for pid in pids:
        try:
            fds[pid] = os.pidfd_open(pid)
        except (ProcessLookupError, AttributeError, OSError):
            continue
    def send(sig):
        for pid, fd in list(fds.items()):
            try:
                signal.pidfd_send_signal(fd, sig)
            except ProcessLookupError:
                os.close(fd)
                del fds[pid]
            except PermissionError:
                log.error("not allowed to stop process %d", pid)
    def gone(pid):
        return not os.path.exists(f"/proc/{pid}") or is_zombie(pid)
    send(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while fds and time.monotonic() < deadline:
        for pid in [p for p in fds if gone(p)]:
            os.close(fds.pop(pid))
        time.sleep(0.05)
    if fds:
        send(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while fds and time.monotonic() < deadline:
            for pid in [p for p in fds if gone(p)]:
                os.close(fds.pop(pid))
            time.sleep(0.05)
    left = list(fds)
    for fd in fds.values():
        os.close(fd)
    return left


class LocalRuntime(Runtime):
    name = "local"

    def __init__(self, hub_id: str, lifeline_dir: str, stop_grace: float = 5.0,
                 leftovers: Callable[[], int] | None = None):
        self.hub_id = hub_id
        self.lifeline_dir = lifeline_dir
        self.stop_grace = stop_grace
        self.leftovers = leftovers  # removes this hub's empty server cgroups (isolation.Enforcer.sweep)
        # concurrent stops (a class leaving at once) share one look through /proc (fresh.py)
        self.scan = Fresh(lambda: scan(hub_id))

    def _found(self) -> list[Found]:
        out = []
        for spawn, entry in self.scan().items():
            env = entry["env"]
            for root in entry["roots"] or entry["pids"][:1]:
                out.append(Found(spawn, env.get("JUPYTERHUB_USER", ""), env.get("JUPYTERHUB_SERVER_NAME", ""),
                                 str(root), env.get("JUPYTERHUB_SERVICE_URL", "")))
        return out

    async def list(self) -> list[Found]:
        return await asyncio.to_thread(self._found)

    def _stop_spawn(self, spawn_id: str) -> int:
        entry = self.scan().get(spawn_id)
        if not entry:
            return 0
        left = kill_all(entry["pids"], self.stop_grace)
        if left:
            log.error("processes %s of spawn %s would not stop", left, spawn_id)
        return len(entry["pids"])

    async def stop(self, found: Found) -> bool:
        await asyncio.to_thread(self._stop_spawn, found.spawn_id)
        return True

    async def stop_spawn(self, spawn_id: str) -> int:
        return await asyncio.to_thread(self._stop_spawn, spawn_id)

    async def remove_leftovers(self) -> int:
        return await asyncio.to_thread(self.leftovers) if self.leftovers else 0

    def environ_of(self, pid: int) -> dict[str, str]:
        return read_environ(pid) or {}

    # -- lifeline files ----------------------------------------------------------------------
    def lifeline_path(self, spawn_id: str) -> str:
        return os.path.join(self.lifeline_dir, spawn_id)

    def open_lifeline(self, spawn_id: str) -> int:
        """A descriptor for the lifeline of a server about to start (passed to it)."""
        os.makedirs(self.lifeline_dir, mode=0o700, exist_ok=True)
        return os.open(self.lifeline_path(spawn_id), os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)

    async def last_alive(self, spawn_id: str) -> dt.datetime | None:
        return self.last_alive_here(spawn_id)

    def last_alive_here(self, spawn_id: str) -> dt.datetime | None:
        rec = read_record(self.lifeline_path(spawn_id))
        if rec is None:
            return None
        return dt.datetime.fromtimestamp(rec[1], dt.timezone.utc).replace(tzinfo=None)

    def forget(self, spawn_id: str) -> None:
        try:
            os.unlink(self.lifeline_path(spawn_id))
        except OSError:
            pass


def lifeline_file(python: str = sys.executable) -> str:
    """What ``python -I -S`` runs as the lifeline: its current bytecode, else its source
    (``bytecode.py``: each start skips compiling it)."""
    return runnable(LIFELINE, python)


def native_lifeline(python: str = sys.executable) -> str | None:
    """The compiled lifeline (``lifeline.c``, built by ``make install`` beside ``python``) when it
    is there and at least as new as its source; None: the Python one runs (no compiler, or a
    source edited since the build)."""
    path = os.path.join(os.path.dirname(python), NATIVE)
    try:
        if os.stat(path).st_mtime_ns >= os.stat(LIFELINE_C).st_mtime_ns and os.access(path, os.X_OK):
            return path
    except OSError:
        pass
    return None


def lifeline_command(beat_fd: int, every: float, python: str = sys.executable, become: list[str] = ()) -> list[str]:
    """The prefix that runs a server under its lifeline: the compiled one where built (a server's
    start then costs no interpreter's start, 8-12 ms of CPU), else lifeline.py with ``-I -S``
    (the standard library only, nothing from the environment or the user's site directory);
    ``become``: its ``--join``, ``--user`` and ``--chdir`` (see lifeline.py)."""
    native = native_lifeline(python)
    head = [native] if native else [python, "-I", "-S", lifeline_file(python)]
    return [*head, *server_args(beat_fd, every, become)]


def server_args(beat_fd: int, every: float, become: list[str] = ()) -> list[str]:
    """A server's lifeline options, the same for both lifelines, up to the ``--`` before its command."""
    return ["--beat-fd", str(beat_fd), "--every", f"{every:g}", *become, "--"]


def adoption(runtime: LocalRuntime, found: Found) -> dict | None:
    """What a local spawner takes over from a running server it has no pid for: its pid, port
    and API token (so that stopping it later revokes that token, as for any server)."""
    try:
        pid = int(found.handle)
    except ValueError:
        return None
    env = runtime.environ_of(pid)
    if env.get(HUB_ID_VAR) != runtime.hub_id or env.get(SPAWN_ID_VAR) != found.spawn_id:
        return None  # gone (or replaced) since it was listed
    if not is_lifeline(cmdline(pid)):
        return None  # a helper (a kernel) that outlived its server: stopped, not adopted
    port = urlparse(found.url).port if found.url else None
    return {"pid": pid, "port": port or 0, "api_token": env.get("JUPYTERHUB_API_TOKEN", "")}
