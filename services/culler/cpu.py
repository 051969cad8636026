"""CPU activity of local servers (the local backend): processes are found by the environment
JupyterHub gives every server (``JUPYTERHUB_USER``, ``JUPYTERHUB_SERVER_NAME``), which kernels and
terminals inherit; their CPU time between two rounds says whether the server is working."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds_by_server(proc: Path = Path("/proc")) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for p in proc.iterdir():
        if not p.name.isdigit():
            continue
        try:
            env = dict(e.split(b"=", 1) for e in (p / "environ").read_bytes().split(b"\0") if b"=" in e)
            user = env.get(b"JUPYTERHUB_USER")
            if user is None:
                continue
            fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            seconds = (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
        except (OSError, ValueError, IndexError):
            continue  # gone, or not ours to read
        key = (user.decode(), env.get(b"JUPYTERHUB_SERVER_NAME", b"").decode())
        out[key] = out.get(key, 0.0) + seconds
    return out


class CpuTracker:
    def __init__(self, threshold_pct: float, reader=cpu_seconds_by_server):
        self.threshold = threshold_pct
        self.reader = reader
        self.last: dict[tuple[str, str], float] = {}
        self.last_at: float | None = None
        self.busy: dict[tuple[str, str], dt.datetime] = {}
        self.current: dict[tuple[str, str], float] = {}

    def sample(self, now: dt.datetime) -> None:
        t = time.monotonic()
        current = self.reader()
        if self.last_at is not None and t > self.last_at:
            span = t - self.last_at
            for key, secs in current.items():
                used = secs - self.last.get(key, secs)
                if used / span * 100 >= self.threshold:
                    self.busy[key] = now
        self.last, self.last_at = current, t

    def busy_at(self, user: str, server: str) -> dt.datetime | None:
        """As of the last :meth:`sample` (the round takes one, before it looks at any server: a
        sample reads every process on the host, and one per server was most of a round)."""
        return self.busy.get((user, server))
