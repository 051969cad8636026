"""The hub's own ports checked before it starts (``settings/ports.py``): which ones, what a taken one
says, and the probe and the holder read from the real kernel (a socket this test listens on)."""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from hub_plugins.lifeline import cmdline

from hub_plugins.settings.ports import (Endpoint, address, forget_foreign_proxy, holder, hub_endpoints, pid_file_of,
                                       probe, problem, proxy_left_running, shortened, taken)


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


def _started(argv: list[str]) -> subprocess.Popen:
    """A process running ``argv``, once /proc shows that command line (on a loaded machine it can
    read empty for a moment after the start)."""
    p = subprocess.Popen(argv)
    deadline = time.monotonic() + 10
    while cmdline(p.pid) != argv and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cmdline(p.pid) == argv
    return p


@pytest.fixture
def proxy_like():
    """A live process whose command line reads like a proxy's (what a pid file may name)."""
    p = _started([sys.executable, "-c", "import time; time.sleep(60)", "configurable-http-proxy"])
    yield p
    p.kill()
    p.wait()


@pytest.fixture
def other_program():
    p = _started(["sleep", "60"])
    yield p
    p.kill()
    p.wait()


def _app(tmp_path, should_start=True, pid=None, api_url="http://127.0.0.1:8001", services=()):
    pid_file = tmp_path / "proxy.pid"
    pid_file.unlink(missing_ok=True)
    if pid is not None:
        pid_file.write_text(str(pid))
    proxy = SimpleNamespace(should_start=should_start, pid_file=str(pid_file), public_url="http://127.0.0.1:8000",
                            api_url=api_url, command=["/opt/x/node_modules/.bin/configurable-http-proxy"])
    return SimpleNamespace(hub_bind_url="", hub=SimpleNamespace(bind_url="http://127.0.0.1:8081/hub/"), proxy=proxy,
                           services=list(services))


def _keys(app):
    return [e.key for e in hub_endpoints(app)]


def test_the_ports_checked_are_those_this_hub_is_about_to_listen_on(tmp_path, proxy_like, other_program):
    everything = ["hub.hub_bind_url", "hub.bind_url", "hub.proxy_api_url"]
    assert _keys(_app(tmp_path)) == everything
    assert _keys(_app(tmp_path, pid=2**22 + 1)) == everything  # a stale pid file: no such process
    assert _keys(_app(tmp_path, pid=other_program.pid)) == everything  # a pid reused by another program
    # an external proxy answers there by design
    assert _keys(_app(tmp_path, should_start=False)) == ["hub.hub_bind_url"]
    # this state's proxy from an earlier run: JupyterHub stops it before starting its own
    assert _keys(_app(tmp_path, pid=proxy_like.pid)) == ["hub.hub_bind_url"]
    assert _keys(_app(tmp_path, api_url=None)) == ["hub.hub_bind_url", "hub.bind_url"]  # not CHP


def test_the_services_ports_are_checked_unless_their_lifeline_from_an_earlier_run_runs(tmp_path, other_program):
    dead, reused, alive = tmp_path / "dead.pid", tmp_path / "reused.pid", tmp_path / "alive.pid"
    dead.write_text(str(2**22 + 1))
    reused.write_text(str(other_program.pid))  # alive, but no lifeline: the lifeline never stops it
    lifeline = _started([sys.executable, "-c", "import time; time.sleep(60)", "lifeline.py", "--pidfile", str(alive)])
    alive.write_text(str(lifeline.pid))
    try:
        services = [
            {"name": "billing", "url": "http://127.0.0.1:10101", "command": ["l", "--pidfile", str(dead), "--", "x"]},
            {"name": "mlflow", "url": "http://127.0.0.1:5000", "command": ["l", "--pidfile", str(reused), "--", "x"]},
            {"name": "quotas", "url": "http://127.0.0.1:7000", "command": ["l", "--pidfile", str(alive), "--", "x"]},
            {"name": "culler", "command": ["x"]},  # listens nowhere
            {"name": "lab-wiki", "url": "http://10.0.0.5:80"},  # external: runs elsewhere
            {"name": "mine", "url": "http://127.0.0.1:7001", "command": ["x"]},  # no lifeline: always checked
        ]
        assert _keys(_app(tmp_path, should_start=False, services=services)) == [
            "hub.hub_bind_url", "billing.port", "mlflow.port", "the mine service's url"]
    finally:
        lifeline.kill()
        lifeline.wait()


def test_what_a_proxy_pid_file_names(tmp_path, proxy_like, other_program):
    f = tmp_path / "proxy.pid"
    cmd = ["configurable-http-proxy"]
    for content, expected in [(str(proxy_like.pid), proxy_like.pid), (str(other_program.pid), None),
                              (str(2**22 + 1), 0), ("", 0), ("x", 0), ("-1", 0)]:
        f.write_text(content)
        assert proxy_left_running(str(f), cmd) == expected, content
    assert proxy_left_running(str(tmp_path / "missing"), cmd) == 0
    assert proxy_left_running(None, cmd) == 0


def test_a_proxy_pid_file_naming_another_program_is_removed_before_jupyterhub_signals_it(
        tmp_path, proxy_like, other_program, caplog):
    log = logging.getLogger("test")
    app = _app(tmp_path, pid=other_program.pid)
    forget_foreign_proxy(app.proxy, log)
    assert not os.path.exists(app.proxy.pid_file)
    assert f"names pid {other_program.pid}, which now runs another program (sleep 60)" in caplog.text
    app = _app(tmp_path, pid=proxy_like.pid)
    forget_foreign_proxy(app.proxy, log)  # a proxy: JupyterHub's to stop
    assert os.path.exists(app.proxy.pid_file)
    app = _app(tmp_path, pid=other_program.pid, should_start=False)
    forget_foreign_proxy(app.proxy, log)  # not this hub's proxy to start: its file is not read
    assert os.path.exists(app.proxy.pid_file)
    assert other_program.poll() is None and proxy_like.poll() is None


@pytest.mark.parametrize("command, expected", [
    (["python", "lifeline.py", "--pidfile", "/s/services/billing.pid", "--", "python"], "/s/services/billing.pid"),
    (["python", "-m", "services.billing"], None),
    (["x", "--pidfile"], None),  # nothing after it
])
def test_the_pid_file_a_services_lifeline_keeps(command, expected):
    assert pid_file_of(command) == expected


@pytest.mark.parametrize("argv, width, expected", [
    (["node", "chp", "--port", "8000"], 120, "node chp --port 8000"),
    (["node", "chp", "--port", "8000"], 14, "node chp ..."),
    (["node", "chp", "--port", "8000"], 15, "node chp --port ..."),  # never a number cut short
    (["x" * 200], 120, "x" * 200),  # one word is never cut
    ([], 120, ""),
])
def test_a_holders_command_line_is_cut_between_words(argv, width, expected):
    assert shortened(argv, width) == expected
