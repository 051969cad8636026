"""Ports for the servers the tests start (hubs, proxies, services, slapd, SMTP, Prometheus, ...).

A port the kernel hands out for ``bind(("127.0.0.1", 0))`` is free only until the socket closes;
the test then passes the number to a process that binds it seconds later. Meanwhile anything that
asks the kernel for a port (a user server the hub spawns, a service's random port, an outgoing
connection) can be given the same one: CI once saw a hub whose proxy API port another process had
taken, and the hub exited at start. So the tests take their ports from below the kernel's
ephemeral range, which the kernel never hands out on its own, and never the same one twice in a
run. A port something already listens on is skipped.
"""

from __future__ import annotations

import itertools
import os
import socket

FLOOR = 20000  # above the ports people configure (8000, 8081, 10101, ...)


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


_LOW = max(_ephemeral_low(), FLOOR + 1000)
# start at a place of this process's own: two test processes (a benchmark beside the suite) rarely
# walk the same ports
_next = itertools.cycle(range(FLOOR, _LOW))
for _ in range(os.getpid() * 7919 % (_LOW - FLOOR)):
    next(_next)


def free_port() -> int:
    """A port nothing listens on, outside the range the kernel gives out by itself."""
    for _ in range(_LOW - FLOOR):
        port = next(_next)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {FLOOR}-{_LOW - 1}")
