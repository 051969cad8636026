"""Which server a process belongs to, read from ``/proc`` (an adapter; ``attribution.py`` decides).

Every server gpulab starts, on every backend, has ``GPULAB_SPAWN_ID`` in its environment, and
every process it starts inherits it: kernels, terminals, ``python train.py``, a container's
processes (which the host's ``/proc`` shows too). A process that cleared its environment
(``env -i``) is attributed through its parents, up the process tree, to the first that carries
it. Reading another user's ``/proc/<pid>/environ`` needs root (or the same user), which is how
gpulab's services run beside servers of several users; a process that cannot be read belongs to
no server (and so never makes an idle sharer look busy).

A user can only point their own processes at a spawn id they know; spawn ids are shown to no one
but admins, so no one can make a neighbour's server look busy or idle.
"""

from __future__ import annotations

import os

VAR = b"GPULAB_SPAWN_ID="
MAX_DEPTH = 64  # process trees are shallow; a loop in /proc (a recycled pid) must not hang us


def _environ_spawn_id(pid: int, proc: str) -> str | None:
    try:
        raw = open(os.path.join(proc, str(pid), "environ"), "rb").read()
    except OSError:
        return None
    for item in raw.split(b"\0"):
        if item.startswith(VAR):
            return item[len(VAR):].decode(errors="replace") or None
    return None


def parent_of(pid: int, proc: str = "/proc") -> int | None:
    """The parent pid from ``/proc/<pid>/stat`` (the command name may hold spaces and ')')."""
    try:
        with open(os.path.join(proc, str(pid), "stat"), "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None


def spawn_id_of(pid: int, proc: str = "/proc") -> str | None:
    """The spawn id of the server ``pid`` belongs to, or None."""
    seen = set()
    while pid and pid > 1 and pid not in seen and len(seen) < MAX_DEPTH:
        seen.add(pid)
        found = _environ_spawn_id(pid, proc)
        if found:
            return found
        pid = parent_of(pid, proc)
    return None


def owners(pids, proc: str = "/proc") -> dict[int, str]:
    """pid -> spawn id for the pids that belong to a server."""
    out = {}
    for pid in set(pids):
        s = spawn_id_of(pid, proc)
        if s:
            out[pid] = s
    return out
