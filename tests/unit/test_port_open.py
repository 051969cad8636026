"""The readiness probe's two steps (spawners/readiness.py): a bare connection tells a port that
listens from one that does not, and never hangs on an address that drops packets (``port_open``);
then an HTTP request through JupyterHub's own client (``answers``)."""

import asyncio
import socket
import time

import pytest
from jupyterhub.httpclient import JupyterHubHTTPClient
from jupyterhub.utils import wait_for_http_server

from hub_plugins.spawners.readiness import answers, port_open


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


async def test_a_name_is_resolved_and_probed():
    first = socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)[0][4][0]  # what port_open connects to
    server = await asyncio.start_server(lambda r, w: w.close(), first, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await port_open("localhost", port)
    finally:
        server.close()
        await server.wait_closed()


async def test_an_ipv6_address_is_probed():
    try:
        server = await asyncio.start_server(lambda r, w: w.close(), "::1", 0)
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    port = server.sockets[0].getsockname()[1]
    try:
        assert await port_open("::1", port)
    finally:
        server.close()
        await server.wait_closed()
    assert not await port_open("::1", port)


async def test_jupyterhubs_own_check_after_the_probe_reuses_its_connection():
    """``answers`` goes through JupyterHub's shared HTTP client: the check JupyterHub makes once
    ``start`` returns (``wait_for_http_server``) finds the probe's connection in the pool."""
    accepted = []

    async def serve(reader, writer):
        accepted.append(1)
        while True:  # HTTP/1.1, kept alive: one short answer per request
            try:
                await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:  # the client closed it
                break
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/user/a/api"
    try:
        assert await answers(url)
        assert await wait_for_http_server(url, timeout=5)
        assert len(accepted) == 1
    finally:
        await JupyterHubHTTPClient.loop_instance().close()
        server.close()


async def test_a_5xx_is_not_an_answer():
    async def serve(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        assert not await answers(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/api")
    finally:
        await JupyterHubHTTPClient.loop_instance().close()
        server.close()
