"""The environments directory: where each profile's environment is built, its progress, its lock.

Layout of ``environments.dir``::

    pytorch-01e80b7689/            the environment (a venv; npm packages in node/ and npm/)
    pytorch-01e80b7689/.gpulab-env.json   written last: the environment is ready
    .gpulab/pytorch-01e80b7689.json       progress or failure (read by the hub's form)
    .gpulab/pytorch-01e80b7689.lock       held while it builds: one build of one environment
    .gpulab/pytorch-01e80b7689.log        the build's output
    .cache/uv  .cache/npm                 the installers' caches (same disk: uv hard-links)

``ensure`` builds an environment unless its stamp is already there (used by ``make envs`` and the
``envs`` hub service); ``read_state`` tells what a profile's environment is doing (used by the hub).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass

from . import install
from ..settings.errors import ConfigError
from .spec import EnvSpec

STATE = ".gpulab"


def default_dir(is_root: bool, home: str) -> str:
    """``environments.dir: auto``: ``/opt/gpulab/envs`` for a hub run as root (outside any
    private home, so every user's system account can reach it), else the hub user's
    ``~/.local/share/gpulab/envs`` (writable without root; servers run as that same user)."""
    return "/opt/gpulab/envs" if is_root else os.path.join(home, ".local", "share", "gpulab", "envs")


def resolve_prefix(prefix: str, envs_dir: str, hub_prefix: str = sys.prefix) -> str:
    """A profile's ``local.prefix`` with ``{hub}`` (the hub's own environment) and ``{envs}``
    (``environments.dir``) filled in."""
    return prefix.replace("{hub}", hub_prefix).replace("{envs}", envs_dir)


def find_uv() -> str:
    """The uv pinned in requirements.txt, in the hub's own environment."""
    here = os.path.join(os.path.dirname(sys.executable), "uv")
    return here if os.access(here, os.X_OK) else (shutil.which("uv") or "uv")


def buildable(catalog, names: list[str] | None):
    """The profiles whose environment gpulab builds (a pinned spec, installed under {envs})."""
    out = [p for p in catalog if p.environment is not None and p.local_prefix.startswith("{envs}")]
    if names:
        known = {p.name for p in out}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"PROFILES: {', '.join(unknown)} has no environment to build "
                              f"(these do: {', '.join(sorted(known)) or 'none'})")
        out = [p for p in out if p.name in names]
    return out


@dataclass(frozen=True)
class EnvState:
    """What a profile's environment is doing: ready | building | queued | failed | missing."""

    state: str
    step: int = 0
    steps: int = 0
    what: str = ""
    started: float = 0.0
    error: str = ""
    log: str = ""
    size: int = 0
    path: str = ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's (a root builder seen by a non-root hub)
        return True
    return True


class EnvDir:
    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.state_dir = os.path.join(self.root, STATE)

    def prefix(self, spec: EnvSpec) -> str:
        return os.path.join(self.root, spec.dirname)

    def _file(self, spec: EnvSpec, ext: str) -> str:
        return os.path.join(self.state_dir, f"{spec.dirname}.{ext}")

    def status_file(self, spec: EnvSpec) -> str:
        return self._file(spec, "json")

    def log_file(self, spec: EnvSpec) -> str:
        return self._file(spec, "log")

    def marker(self, spec: EnvSpec) -> dict | None:
        try:
            with open(os.path.join(self.prefix(spec), install.MARKER)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    # -- the hub's view ----------------------------------------------------------------------
    def read_state(self, spec: EnvSpec) -> EnvState:
        """Never blocks on a build: reads the marker and the progress file."""
        prefix = self.prefix(spec)
        done = self.marker(spec)
        if done is not None:
            return EnvState("ready", size=int(done.get("size", 0)), path=prefix)
        try:
            with open(self.status_file(spec)) as f:
                st = json.load(f)
        except (OSError, ValueError):
            return EnvState("missing", path=prefix)
        state = st.get("state", "missing")
        if state in ("building", "queued") and not _alive(int(st.get("pid", 0) or 0)):
            state = "missing"  # its builder died (hub stopped mid-build): the next one restarts it
        return EnvState(state, int(st.get("step", 0)), int(st.get("steps", 0)), st.get("what", ""),
                        float(st.get("started", 0)), st.get("error", ""), self.log_file(spec), 0, prefix)

    # -- building ----------------------------------------------------------------------------
    def _prepare(self) -> None:
        for d in (self.root, self.state_dir):
            os.makedirs(d, mode=0o755, exist_ok=True)

    def mark_queued(self, spec: EnvSpec) -> None:
        """Say a build is coming (the form shows 'waiting to be installed')."""
        self._prepare()
        if self.marker(spec) is None and self.read_state(spec).state != "building":
            install.Status(self.status_file(spec), spec.as_dict(), spec.stamp).update(state="queued")

    def ensure(self, spec: EnvSpec, uv: str | None = None, wait: bool = True, log=print) -> EnvState:
        """Build the environment unless it is there. Holds its lock while building; with
        ``wait=False`` returns at once (state 'building') if another process builds it."""
        self._prepare()
        lock = open(self._file(spec, "lock"), "a")
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                return self.read_state(spec)
            if self.marker(spec) is not None:
                return self.read_state(spec)  # the stamp is there: nothing to do
            return self._build(spec, uv or find_uv(), log)
        finally:
            lock.close()

    def _build(self, spec: EnvSpec, uv: str, log) -> EnvState:
        prefix = self.prefix(spec)
        cache = os.path.join(self.root, ".cache")
        # the installers' caches beside the environments (uv hard-links from its cache)
        os.environ.setdefault("UV_CACHE_DIR", os.path.join(cache, "uv"))
        os.environ.setdefault("npm_config_cache", os.path.join(cache, "npm"))
        with open(self.log_file(spec), "w") as f:
            f.write(f"gpulab: building {prefix} for profile '{spec.profile}'\n")
        status = install.Status(self.status_file(spec), spec.as_dict(), spec.stamp)
        status.update()
        log(f"envs: building {spec.profile} ({spec.summary()}) in {prefix}; log: {self.log_file(spec)}")
        try:
            info = install.build(spec.as_dict(), prefix, uv, status, install.Runner(self.log_file(spec)))
        except Exception as e:  # a failure is reported to admins, never retried in a loop
            message = str(e) if isinstance(e, install.BuildError) else f"{type(e).__name__}: {e}"
            status.update(state="failed", error=message)
            log(f"envs: {spec.profile} FAILED: {message}\n      log: {self.log_file(spec)}")
            return self.read_state(spec)
        status.update(state="ready", size=info["size"], seconds=info["seconds"])
        log(f"envs: {spec.profile} ready in {info['seconds']:.0f} s, {info['size'] / 1e9:.2f} GB ({prefix})")
        self.prune(spec, log)
        return self.read_state(spec)

    def prune(self, spec: EnvSpec, log=print) -> list[str]:
        """Remove this profile's superseded environments (other stamps) that no process runs from."""
        removed = []
        keep = spec.dirname
        for name in sorted(os.listdir(self.root)):
            old = os.path.join(self.root, name)
            if name == keep or not name.startswith(spec.profile + "-") or not os.path.isdir(old):
                continue
            if not os.path.exists(os.path.join(old, install.MARKER)) and _building(self, name):
                continue
            if in_use(old):
                log(f"envs: keeping {old}: a running server uses it")
                continue
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
            log(f"envs: removed the superseded {old}")
        return removed


def _building(envdir: EnvDir, dirname: str) -> bool:
    try:
        with open(os.path.join(envdir.state_dir, f"{dirname}.json")) as f:
            st = json.load(f)
        return st.get("state") == "building" and _alive(int(st.get("pid", 0)))
    except (OSError, ValueError):
        return False


def in_use(path: str) -> bool:
    """Whether a process runs from ``path`` (servers are started by its real path)."""
    needle = (path.rstrip("/") + "/").encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if needle in f.read():
                    return True
        except OSError:
            continue
    return False


def wait_ready(envdir: EnvDir, spec: EnvSpec, timeout: float, poll: float = 2.0) -> EnvState:
    """Wait for a build someone else runs (tests wait for .ci/run's background builds)."""
    deadline = time.monotonic() + timeout
    while True:
        st = envdir.read_state(spec)
        if st.state in ("ready", "failed") or time.monotonic() > deadline:
            return st
        time.sleep(poll)
