"""Is a starting server up yet? The probe's pieces, apart from the spawner that waits.

A starting server is first looked for listening (``listens``): a local server, whose own process
binds its port on this host, in the kernel's socket table (``listening.py``: no connection at
all); a server behind a proxy or on another host, by a bare TCP connection (``port_open``). Then,
except for a local server, by an HTTP request (``answers``), made through JupyterHub's own HTTP
client so that the check JupyterHub makes after every start reuses that connection. How often is
a budget shared by the servers starting at once (``probe_interval``): one server alone is probed
every 10 ms, so its person learns it is up within milliseconds, not up to a whole interval late;
a class of 50 starting together shares the same number of probes a second, so that refused
connections (0.14 ms of the hub's one thread each, measured) never crowd out the spawns themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from typing import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp
from jupyterhub.httpclient import fetch

from .listening import TABLE

SHORTEST = 0.01  # seconds: below this a probe costs more than the milliseconds it can save


async def port_open(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether something accepts a TCP connection there now (closed again at once). A bare
    socket: no transport, protocol and stream objects for a connection that is closed at once."""
    loop = asyncio.get_running_loop()
    try:
        family, addr = await _address(loop, host, port)
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(sock, addr), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    return True


async def listens(host: str, port: int, own: bool) -> bool:
    """Whether something listens at ``host:port``. ``own``: that port is the server's own socket
    on this host, so the kernel's socket table answers without a connection (``listening.py``);
    otherwise (or where the kernel can't say) by connecting: a proxy or a forwarded port may
    accept with no socket of the server's here."""
    if own:
        found = TABLE.listening(host, port)
        if found is not None:
            return found
    return await port_open(host, port)


async def _address(loop, host: str, port: int) -> tuple[int, tuple]:
    """(family, address) to connect to; a name is resolved (in a worker thread), an IP address
    (what a local server gives) is taken as it is."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        family, _kind, _proto, _name, addr = (await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))[0]
        return family, addr
    return (socket.AF_INET6, (host, port, 0, 0)) if ip.version == 6 else (socket.AF_INET, (host, port))


async def answers(url: str, timeout: float = 2.0) -> bool:
    """Whether the server at ``url`` answers HTTP with anything but a 5xx (JupyterHub's own test
    of a started server). Through JupyterHub's shared HTTP client, whose pool keeps the
    connection: JupyterHub's own check that follows the start reuses it, rather than connecting
    again."""
    try:
        resp = await fetch(url, raise_for_status=False, allow_redirects=False,
                           timeout=aiohttp.ClientTimeout(total=timeout))
    except (OSError, aiohttp.ClientError, asyncio.TimeoutError):  # closed again, or a busy machine
        return False
    resp.release()
    return resp.status < 500


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
                         poll: Callable[[], Awaitable[int | None]], interval: Callable[[], float],
                         http: bool = True) -> int | None:
    """Probe ``probe`` (the server's API URL) until it answers: None; or until ``poll`` (the
    backend, asked every ``exit_every`` s) says the server exited: its status. ``TimeoutError``
    after ``timeout`` s, as JupyterHub's own wait. ``interval()``: the pause before the next probe.
    ``http``: False where a listening port is the server itself
    (``GPUSpawnerMixin.gpulab_listening_is_up``): then the open port ends the wait, and
    JupyterHub's own HTTP check that follows every start is the only request."""
    where = urlsplit(probe)
    deadline = time.monotonic() + timeout
    next_poll = 0.0
    while time.monotonic() < deadline:
        # a look for a listening socket first, the HTTP request only once something listens: while
        # a server starts, a refused connection costs the hub's loop a fraction of a refused HTTP request
        # (50 servers starting at once, 10 probes a second each, made those requests a large
        # part of the hub's CPU: benchmarks/spawn_overhead.py)
        if await listens(where.hostname, where.port or 80, own=not http) and (not http or await answers(probe)):
            return None
        if time.monotonic() >= next_poll:
            status = await poll()
            if status is not None:
                return status
            next_poll = time.monotonic() + exit_every
        await asyncio.sleep(interval())
    raise TimeoutError(f"Server at {probe} didn't respond in {timeout} seconds")
