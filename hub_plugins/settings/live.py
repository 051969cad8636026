"""gpulab.yaml while gpulab runs: quotas, prices, budgets, culler and queue policies reload
without a restart.

Every process (the hub and each service) holds one :class:`LiveSettings`. It hands out the typed
:class:`~hub_plugins.settings.typed.Settings` it last loaded (``current``) and looks at the file's
modification time at most every few seconds; when the file changed it loads it again, validated
by the same schema and checks as at start-up. A file that does not validate changes nothing: the
running settings stay, the error is logged and kept (``outcome``) for the admin's page and the
REST answer. A valid file replaces the running settings in one assignment, so a reader sees the
old settings or the new ones, never a mix.

Only the reloadable sections (:data:`RELOADABLE`) take effect; the rest of a changed file (ports,
the backend, sign-in, which services run) is reported as needing a restart and keeps its running
values.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .errors import ConfigError
from .loader import load
from .typed import Settings, plain

log = logging.getLogger("gpulab.settings")

# sections that apply while running, each with the keys inside it that still need a restart
RELOADABLE: dict[str, tuple[str, ...]] = {
    "quotas": (),
    "billing": ("port",),
    "budgets": (),
    "culler": ("enabled", "metrics"),
    "queue": (),
    "notifications": (),  # read by the notifier at each look
}
CHECK_EVERY = 5.0  # seconds between looks at the file's modification time


def changes(old: Mapping, new: Mapping) -> tuple[list[str], list[str]]:
    """(what applies now, what needs a restart) between two validated files, as dotted keys
    (pure): a reloadable section that changed, or a key of a section that needs a restart."""
    applied, restart = [], []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if name not in RELOADABLE:
            restart.append(name)
            continue
        pinned = RELOADABLE[name]
        keys = sorted(set(a or {}) | set(b or {}))
        restart += [f"{name}.{k}" for k in keys if k in pinned and (a or {}).get(k) != (b or {}).get(k)]
        if any((a or {}).get(k) != (b or {}).get(k) for k in keys if k not in pinned):
            applied.append(name)
    return applied, restart


def merged(running: Mapping, new: Mapping) -> dict:
    """The settings to run with: ``new``'s reloadable sections (their pinned keys kept as they
    run), everything else as it runs."""
    out = plain(running)
    for name, pinned in RELOADABLE.items():
        section = dict(plain(new[name]))
        for k in pinned:
            section[k] = plain(running[name][k])
        out[name] = section
    return out


@dataclass(frozen=True)
class Outcome:
    """What the last look at the file did (for the log, the admin page and the REST answer)."""

    ok: bool
    at: dt.datetime
    applied: tuple[str, ...] = ()
    needs_restart: tuple[str, ...] = ()
    error: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def message(self) -> str:
        if not self.ok:
            return f"The file has an error, so the running settings stay as they were: {self.error}"
        parts = [f"Applied: {', '.join(self.applied)}." if self.applied else "Nothing to apply."]
        if self.needs_restart:
            parts.append(f"Needs a restart to take effect: {', '.join(self.needs_restart)}.")
        return " ".join([*parts, *self.notes])

    def as_dict(self) -> dict:
        return {"ok": self.ok, "at": self.at.isoformat(), "applied": list(self.applied),
                "needs_restart": list(self.needs_restart), "error": self.error, "notes": list(self.notes),
                "message": self.message}


class LiveSettings:
    """The running settings of one process, reloaded when gpulab.yaml changes."""

    def __init__(self, path: str | os.PathLike, initial: Settings | None = None, check_every: float = CHECK_EVERY,
                 loader: Callable[[str], Mapping] = lambda p: load(p, secrets=False)):
        self.path = str(path)
        self._load = loader
        self._lock = threading.Lock()
        self.check_every = check_every
        self._mtime = self._stat()
        self._current = initial or Settings.from_config(self._load(self.path))
        self._checked = time.monotonic()
        self.loaded_at = dt.datetime.now(dt.timezone.utc)
        self.outcome: Outcome | None = None
        self._listeners: list[Callable[[Settings], None]] = []

    def _stat(self) -> float | None:
        try:
            return os.stat(self.path).st_mtime
        except OSError:
            return None

    @property
    def current(self) -> Settings:
        """The running settings (after a look at the file if the last one is old enough)."""
        if time.monotonic() - self._checked >= self.check_every:
            self.check()
        return self._current

    def on_change(self, listener: Callable[[Settings], None]) -> None:
        """Call ``listener(new)`` after each change is applied (e.g. a cache to drop)."""
        self._listeners.append(listener)

    def check(self) -> Outcome | None:
        """Reload if the file changed since it was last read; None if it did not."""
        self._checked = time.monotonic()
        if self._stat() == self._mtime:
            return None
        return self.reload()

    def reload(self) -> Outcome:
        """Read the file now; apply it if it is valid, else keep the running settings."""
        with self._lock:
            self._checked = time.monotonic()
            self._mtime = self._stat()
            now = dt.datetime.now(dt.timezone.utc)
            try:
                cfg = self._load(self.path)
                running = self._current
                applied, restart = changes(plain(running.raw), {k: v for k, v in cfg.items() if not k.startswith("_")})
                new = Settings.from_config({**merged(running.raw, cfg), "_path": self.path})
            except (ConfigError, KeyError, ValueError, TypeError, OverflowError) as e:
                self.outcome = Outcome(False, now, error=str(e))
                log.error("gpulab: %s changed but %s", self.path, self.outcome.message)
                return self.outcome
            notes = ()
            if "quotas" in applied:
                added = sorted(set(new.raw["quotas"]["groups"]) - set(running.raw["quotas"]["groups"]))
                if added:
                    notes = (f"New quota group{'s' if len(added) > 1 else ''} {', '.join(added)}: created in "
                             "the hub at the next restart, or now on the hub's admin page (Groups).",)
            self._current = new  # one assignment: readers see the old settings or the new ones
            self.loaded_at = now
            self.outcome = Outcome(True, now, tuple(applied), tuple(restart), notes=notes)
        log.info("gpulab: reloaded %s. %s", self.path, self.outcome.message)
        for listener in list(self._listeners):
            try:
                listener(new)
            except Exception:
                log.exception("gpulab: a settings listener failed")
        return self.outcome

    def status(self) -> dict:
        modified = dt.datetime.fromtimestamp(self._mtime, dt.timezone.utc).isoformat() if self._mtime else None
        return {"path": self.path, "loaded_at": self.loaded_at.isoformat(), "modified_at": modified,
                "last": self.outcome.as_dict() if self.outcome else None,
                "reloadable": {k: [f"{k}.{p}" for p in v] for k, v in RELOADABLE.items()}}
