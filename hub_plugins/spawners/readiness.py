"""Is a starting server up yet? The probe's pieces, apart from the spawner that waits.

A starting server is probed with a bare TCP connection, and with an HTTP request only once
something listens (``port_open``). How often is a budget shared by the servers starting at once
(``probe_interval``): one server alone is probed every 10 ms, so its person learns it is up
within milliseconds, not up to a whole interval late; a class of 50 starting together shares the
same number of probes a second, so that refused connections (0.14 ms of the hub's one thread
each, measured) never crowd out the spawns themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

SHORTEST = 0.01  # seconds: below this a probe costs more than the milliseconds it can save


async def port_open(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether something accepts a TCP connection there now (closed again at once)."""
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True


def probe_interval(starting: int, per_second: float, longest: float, shortest: float = SHORTEST) -> float:
    """Seconds between one server's probes while ``starting`` servers (itself included) start:
    the hub's ``per_second`` shared among them, within [``shortest``, ``longest``]. A budget of
    0 or less: every ``longest`` seconds, whatever the number."""
    if per_second <= 0:
        return longest
    return min(longest, max(shortest, max(starting, 1) / per_second))


class Starting:
    """How many servers this hub is waiting on right now (one event loop: no lock)."""

    def __init__(self) -> None:
        self.count = 0

    @contextlib.contextmanager
    def one(self):
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1


STARTING = Starting()


async def wait_answering(probe: str, timeout: float, exit_every: float,
                         poll: Callable[[], Awaitable[int | None]], interval: Callable[[], float]) -> int | None:
    """Probe ``probe`` (the server's API URL) until it answers: None; or until ``poll`` (the
    backend, asked every ``exit_every`` s) says the server exited: its status. ``TimeoutError``
    after ``timeout`` s, as JupyterHub's own wait. ``interval()``: the pause before the next probe."""
    where = urlsplit(probe)
    client = AsyncHTTPClient()
    deadline = time.monotonic() + timeout
    next_poll = 0.0
    while time.monotonic() < deadline:
        # a bare connection first, the HTTP request only once something listens: while a server
        # starts, a refused connection costs the hub's loop a fraction of a refused HTTP request
        # (50 servers starting at once, 10 probes a second each, made those requests a large
        # part of the hub's CPU: benchmarks/spawn_overhead.py)
        if await port_open(where.hostname, where.port or 80):
            try:
                resp = await client.fetch(probe, raise_error=False, request_timeout=2, follow_redirects=False)
                if resp.code < 500:  # as JupyterHub's own wait: a 5xx is not up yet
                    return None
            except (OSError, HTTPClientError):  # closed again, or a timeout (599) on a busy machine
                pass
        if time.monotonic() >= next_poll:
            status = await poll()
            if status is not None:
                return status
            next_poll = time.monotonic() + exit_every
        await asyncio.sleep(interval())
    raise TimeoutError(f"Server at {probe} didn't respond in {timeout} seconds")
