"""Waiting for a server's process to exit, woken by the kernel rather than by polls.

JupyterHub's ``wait_for_death`` polls the process at random intervals that grow (full jitter:
up to 0.1 s, then 0.2 s, 0.4 s, ...), so a stop returns some time after the process is gone, on
average half an interval; under a burst of stops the polls are also work on the hub's thread. A
pidfd (Linux 5.3+) becomes readable the moment the process exits, so the event loop learns of it
at once and does nothing until then.
"""

from __future__ import annotations

import asyncio
import os


def open_pidfd(pid: int | None) -> int | None:
    """A pidfd for ``pid``; None when the kernel or Python has none, or the process is gone
    (then the caller's poll says so)."""
    if not pid or not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:  # ESRCH: reaped already; ENOSYS/EPERM: not here
        return None


async def wait_exit(pidfd: int, timeout: float) -> bool:
    """Whether the process behind ``pidfd`` exited within ``timeout`` seconds. Closes ``pidfd``.
    The reader and the timer settle one future that the stop awaits itself: ``asyncio.wait_for``
    put a second future and a turn of the loop between the exit and the stop (~50 ms a turn at
    50 stops at once)."""
    loop = asyncio.get_running_loop()
    gone = loop.create_future()

    def settle(exited: bool) -> None:
        if not gone.done():
            gone.set_result(exited)

    try:
        loop.add_reader(pidfd, settle, True)
        timer = loop.call_later(timeout, settle, False)
        try:
            return await gone
        finally:
            timer.cancel()
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)
