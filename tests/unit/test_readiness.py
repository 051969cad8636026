"""Is a starting server up yet (``spawners/readiness.py``): how often one is probed while others
start, and the wait itself against a real server that comes up late, one that dies, and one that
never answers."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from jupyterhub.httpclient import JupyterHubHTTPClient

from hub_plugins.spawners import listening
from hub_plugins.spawners.readiness import SHORTEST, Starting, probe_interval, wait_answering


@pytest.mark.parametrize("starting, per_second, longest, want", [
    (1, 200, 0.1, SHORTEST),  # alone: as often as is worth it
    (0, 200, 0.1, SHORTEST),  # (counted before it registered)
    (2, 200, 0.1, SHORTEST),
    (4, 200, 0.1, 0.02),  # the budget shared
    (10, 200, 0.1, 0.05),
    (20, 200, 0.1, 0.1),
    (50, 200, 0.1, 0.1),  # never less often than the longest wait
    (50, 200, 1.0, 0.25),
    (1, 0, 0.1, 0.1),  # no budget: the old fixed interval
    (1, -5, 0.3, 0.3),
    (1, 200, 0.005, 0.005),  # a longest wait under the floor wins
])
def test_how_often_a_starting_server_is_probed(starting, per_second, longest, want):
    assert probe_interval(starting, per_second, longest) == pytest.approx(want)


def test_the_count_of_servers_starting_goes_back_down_whatever_happens():
    starting = Starting()
    with starting.one():
        with starting.one():
            assert starting.count == 2
        with pytest.raises(RuntimeError):
            with starting.one():
                raise RuntimeError("the spawn failed")
        assert starting.count == 1
    assert starting.count == 0


class _Api(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_wait(args):
    """wait_answering on a loop of its own, then JupyterHub's HTTP client for that loop closed
    (the probe's HTTP request goes through it), as the hub closes it at shutdown."""
    async def main():
        try:
            return await wait_answering(*args)
        finally:
            await JupyterHubHTTPClient.loop_instance().close()

    return asyncio.run(main())


async def _alive():
    return None


def test_a_server_that_starts_listening_late_is_seen_within_a_probe():
    port = _free_port()
    server: list[HTTPServer] = []

    def start_late():
        time.sleep(0.3)
        server.append(HTTPServer(("127.0.0.1", port), _Api))
        server[0].serve_forever(poll_interval=0.05)

    threading.Thread(target=start_late, daemon=True).start()
    t0 = time.monotonic()
    try:
        got = run_wait((f"http://127.0.0.1:{port}/user/a/api", 10, 0.25, _alive, lambda: 0.01))
        took = time.monotonic() - t0
    finally:
        while not server:
            time.sleep(0.01)
        server[0].shutdown()
    assert got is None
    assert 0.3 <= took < 1.5, took


def test_a_server_that_exits_while_starting_ends_the_wait_with_its_status():
    port = _free_port()  # nothing listens
    polls = []

    async def exited():
        polls.append(time.monotonic())
        return 3 if len(polls) >= 2 else None

    t0 = time.monotonic()
    assert run_wait((f"http://127.0.0.1:{port}/api", 10, 0.1, exited, lambda: 0.01)) == 3
    assert time.monotonic() - t0 < 2
    assert polls[1] - polls[0] >= 0.09  # the backend is asked every exit_every, not every probe


def test_a_server_that_never_answers_times_out_as_jupyterhubs_own_wait():
    port = _free_port()
    with pytest.raises(TimeoutError, match=f"127.0.0.1:{port}.*didn't respond in 0.3 seconds"):
        run_wait((f"http://127.0.0.1:{port}/api", 0.3, 0.1, _alive, lambda: 0.02))


def test_where_listening_is_up_the_open_port_ends_the_wait_without_a_request():
    """The local backend (``gpulab_listening_is_up``): a server that listens but has not answered
    yet ends the wait; with ``http`` (other backends) the wait goes on until it answers."""
    port = _free_port()
    listener = socket.socket()
    listener.bind(("127.0.0.1", port))
    listener.listen(8)  # accepts (the kernel's backlog), never answers
    try:
        assert run_wait((f"http://127.0.0.1:{port}/api", 5, 0.1, _alive, lambda: 0.01, False)) is None
        with pytest.raises(TimeoutError):
            run_wait((f"http://127.0.0.1:{port}/api", 0.5, 0.1, _alive, lambda: 0.01, True))
    finally:
        listener.close()


def test_a_local_server_is_looked_for_in_the_kernels_table_without_connecting(monkeypatch):
    """Where the port is the server's own socket, the wait never connects to it (a refused
    connection per probe was most of the hub's cost while 50 servers started); where the kernel
    cannot say (``listening.py`` gave up), it connects as before."""
    port = _free_port()
    listener = socket.socket()
    listener.bind(("127.0.0.1", port))
    listener.listen(8)
    listener.setblocking(False)
    try:
        assert run_wait((f"http://127.0.0.1:{port}/api", 5, 0.1, _alive, lambda: 0.01, False)) is None
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected

        monkeypatch.setattr(listening.TABLE, "usable", False)
        assert run_wait((f"http://127.0.0.1:{port}/api", 5, 0.1, _alive, lambda: 0.01, False)) is None
        conn, _addr = listener.accept()  # the probe's connection, closed again
        conn.close()
    finally:
        listener.close()
