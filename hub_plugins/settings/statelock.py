"""One hub per state directory.

A second hub started on the same state (a second ``make run`` in another terminal, a service
manager starting one while another runs) would take over the first one's files: JupyterHub stops
the proxy named in the state's pid file as a stale one, then fails to bind the ports the running
hub holds, and the running hub is left without its proxy until it notices. So the hub holds a
lock on ``<state>/hub.lock`` for as long as its process lives, and a second one is refused before
it touches anything, with the pid of the hub that holds it.

An ``flock``: the kernel drops it when the process ends, however it ends, so a hub killed with
SIGKILL never blocks its own restart, and no stale file can keep one from starting. The
descriptor is not inherited by anything the hub starts (Python opens files non-inheritable), so
servers that outlive the hub do not hold it either.
"""

from __future__ import annotations

import fcntl
import os

_held: dict[str, object] = {}  # path -> the open lock file, for the life of this process


class StateInUse(RuntimeError):
    pass


def claim(state_dir: str) -> None:
    """Hold the state's lock for the life of this process (again: nothing to do), or raise
    :class:`StateInUse` saying which hub holds it."""
    path = os.path.join(state_dir, "hub.lock")
    if path in _held:
        return
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise StateInUse(f"another hub already runs on the state directory {state_dir} (pid {holder}): "
                         "stop it first, or give this one its own hub.state_dir") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    _held[path] = f
