"""The readiness probe's first step (spawners/readiness.py port_open): a bare connection tells a port
that listens from one that does not, and never hangs on an address that drops packets."""

import asyncio
import socket
import time

from hub_plugins.spawners.readiness import port_open


async def test_a_listening_port_is_open_and_a_closed_one_is_not():
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await port_open("127.0.0.1", port)
    finally:
        server.close()
        await server.wait_closed()
    assert not await port_open("127.0.0.1", port)  # refused now


async def test_a_bound_port_that_does_not_listen_yet_is_not_open():
    # a server between bind() and listen(): what a starting JupyterLab looks like for a moment
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    try:
        assert not await port_open("127.0.0.1", s.getsockname()[1])
    finally:
        s.close()


async def test_an_address_that_never_answers_times_out():
    t0 = time.monotonic()
    # TEST-NET-1 (RFC 5737): never routed, so a connection neither succeeds nor is refused
    assert not await port_open("192.0.2.1", 9, timeout=0.3)
    assert time.monotonic() - t0 < 2
