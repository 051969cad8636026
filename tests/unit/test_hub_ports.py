"""The hub's own ports checked before it starts (``settings/ports.py``): which ones, what a taken one
says, and the probe and the holder read from the real kernel (a socket this test listens on)."""

from __future__ import annotations

import errno
import os
import socket
from types import SimpleNamespace

import pytest

from hub_plugins.settings.ports import (Endpoint, address, holder, hub_endpoints, pid_file_of, probe, problem,
                                       shortened, still_runs, taken)


@pytest.mark.parametrize("url, expected", [
    ("http://127.0.0.1:8000", ("127.0.0.1", 8000)),
    ("http://127.0.0.1:8000/base/", ("127.0.0.1", 8000)),
    ("http://:8081", ("", 8081)),
    ("http://0.0.0.0:8081", ("0.0.0.0", 8081)),
    ("http://[::1]:8001", ("::1", 8001)),
    ("http://hub.example.org", ("hub.example.org", 80)),
    ("https://hub.example.org", ("hub.example.org", 443)),
    ("http+unix://%2Ftmp%2Fhub.sock", None),
    ("http://127.0.0.1:99999", None),  # JupyterHub's own parse reports it
    ("ftp://127.0.0.1", None),
])
def test_the_address_a_url_listens_on(url, expected):
    assert address(url) == expected


E = Endpoint("hub.bind_url", "http://127.0.0.1:8000/base/")  # the message names the server, not the path


@pytest.mark.parametrize("err, who, expected", [
    (None, None, None),
    (errno.EADDRINUSE, "pid 7 (node chp)", "port 8000 (hub.bind_url: http://127.0.0.1:8000) is in use by pid 7 "
     "(node chp). Stop that program, or give this hub a free port in hub.bind_url of gpulab.yaml"),
    (errno.EADDRINUSE, None, "port 8000 (hub.bind_url: http://127.0.0.1:8000) is in use by another program. "
     "Stop that program, or give this hub a free port in hub.bind_url of gpulab.yaml"),
    (errno.EACCES, None, "port 8000 (hub.bind_url: http://127.0.0.1:8000) needs privileges this user does not "
     "have; use a port above 1023 in hub.bind_url (with a reverse proxy in front for port 8000)"),
    (errno.EADDRNOTAVAIL, None, None),  # left for the server's own bind to say
])
def test_what_a_probe_result_says(err, who, expected):
    assert problem(E, 8000, err, who) == expected


@pytest.fixture
def listener():
    sock = socket.socket()
    # as servers listen (tornado, node): Linux lets a port be bound again past TIME_WAIT only
    # when the closed connections' listener had it too
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


def test_a_listening_port_is_taken_and_named_with_its_holder(listener):
    port = listener.getsockname()[1]
    assert probe("127.0.0.1", port) == errno.EADDRINUSE
    assert probe("", port) == errno.EADDRINUSE  # every interface includes loopback
    me = holder(port)
    assert me is not None and me.startswith(f"pid {os.getpid()} (")
    [said] = taken([Endpoint("hub.hub_bind_url", f"http://127.0.0.1:{port}")])
    assert f"is in use by pid {os.getpid()} (" in said


def test_a_port_closed_again_is_free_even_with_connections_in_time_wait(listener):
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = listener.accept()
    conn.close()  # the server side closes first: its end waits in TIME_WAIT
    client.close()
    listener.close()
    assert probe("127.0.0.1", port) is None
    assert holder(port) is None
    assert taken([Endpoint("hub.bind_url", f"http://127.0.0.1:{port}")]) == []


def test_a_name_that_does_not_resolve_is_left_for_the_server_to_report():
    assert probe("no-such-host.invalid", 8000) is None


def _app(tmp_path, should_start=True, pid=None, api_url="http://127.0.0.1:8001", services=()):
    pid_file = tmp_path / "proxy.pid"
    pid_file.unlink(missing_ok=True)
    if pid is not None:
        pid_file.write_text(str(pid))
    proxy = SimpleNamespace(should_start=should_start, pid_file=str(pid_file), public_url="http://127.0.0.1:8000",
                            api_url=api_url)
    return SimpleNamespace(hub_bind_url="", hub=SimpleNamespace(bind_url="http://127.0.0.1:8081/hub/"), proxy=proxy,
                           services=list(services))


def _keys(app):
    return [e.key for e in hub_endpoints(app)]


def test_the_ports_checked_are_those_this_hub_is_about_to_listen_on(tmp_path):
    everything = ["hub.hub_bind_url", "hub.bind_url", "hub.proxy_api_url"]
    assert _keys(_app(tmp_path)) == everything
    assert _keys(_app(tmp_path, pid=2**22 + 1)) == everything  # a stale pid file: no such process
    # an external proxy answers there by design
    assert _keys(_app(tmp_path, should_start=False)) == ["hub.hub_bind_url"]
    # this state's proxy from an earlier run: JupyterHub stops it before starting its own
    assert _keys(_app(tmp_path, pid=os.getpid())) == ["hub.hub_bind_url"]
    assert _keys(_app(tmp_path, api_url=None)) == ["hub.hub_bind_url", "hub.bind_url"]  # not CHP


def test_the_services_ports_are_checked_unless_an_earlier_run_of_theirs_still_runs(tmp_path):
    alive, dead = tmp_path / "alive.pid", tmp_path / "dead.pid"
    alive.write_text(str(os.getpid()))
    dead.write_text(str(2**22 + 1))
    services = [
        {"name": "billing", "url": "http://127.0.0.1:10101", "command": ["lifeline", "--pidfile", str(dead), "--", "x"]},
        {"name": "quotas", "url": "http://127.0.0.1:7000", "command": ["lifeline", "--pidfile", str(alive), "--", "x"]},
        {"name": "culler", "command": ["x"]},  # listens nowhere
        {"name": "lab-wiki", "url": "http://10.0.0.5:80"},  # external: runs elsewhere
        {"name": "mine", "url": "http://127.0.0.1:7001", "command": ["x"]},  # no lifeline: always checked
    ]
    assert _keys(_app(tmp_path, should_start=False, services=services)) == [
        "hub.hub_bind_url", "billing.port", "the mine service's url"]


@pytest.mark.parametrize("command, expected", [
    (["python", "lifeline.py", "--pidfile", "/s/services/billing.pid", "--", "python"], "/s/services/billing.pid"),
    (["python", "-m", "services.billing"], None),
    (["x", "--pidfile"], None),  # nothing after it
])
def test_the_pid_file_a_services_lifeline_keeps(command, expected):
    assert pid_file_of(command) == expected


@pytest.mark.parametrize("content", ["", "x", "0", "-1"])
def test_a_pid_file_without_a_process_names_no_running_proxy(tmp_path, content):
    (tmp_path / "p").write_text(content)
    assert not still_runs(str(tmp_path / "p"))
    assert not still_runs(str(tmp_path / "missing"))
    assert not still_runs(None)


@pytest.mark.parametrize("argv, width, expected", [
    (["node", "chp", "--port", "8000"], 120, "node chp --port 8000"),
    (["node", "chp", "--port", "8000"], 14, "node chp ..."),
    (["node", "chp", "--port", "8000"], 15, "node chp --port ..."),  # never a number cut short
    (["x" * 200], 120, "x" * 200),  # one word is never cut
    ([], 120, ""),
])
def test_a_holders_command_line_is_cut_between_words(argv, width, expected):
    assert shortened(argv, width) == expected
