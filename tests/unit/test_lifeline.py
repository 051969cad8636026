"""The lifeline (hub_plugins/lifeline.py, and lifeline.c for servers) and the local runtime
adapter, with real processes: heartbeats through a passed descriptor, the exact exit time, the
child dying with its lifeline, services following their parent and replacing a stale instance,
and /proc as the truth. Each server case runs against both lifelines (``lifeline_head``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from hub_plugins.lifeline import replace_stale
from hub_plugins.reconcile.local import (LIFELINE, LocalRuntime, kill_all, lifeline_command, native_lifeline,
                                         read_record, scan, server_args)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def beat(tmp_path):
    path = tmp_path / "beat"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    yield str(path), fd
    os.close(fd)


def server(head, fd, every, *become):
    return [*head, *server_args(fd, every, list(become))]


def test_heartbeat_and_exact_exit_time(beat, lifeline_head):
    path, fd = beat
    p = subprocess.Popen(server(lifeline_head, fd, 0.2) + ["sleep", "30"], pass_fds=[fd], start_new_session=True)
    assert wait(lambda: read_record(path) is not None)
    first = read_record(path)[1]
    assert wait(lambda: read_record(path)[1] > first + 0.15)  # it keeps beating
    (child,) = children(p.pid)
    os.kill(child, signal.SIGKILL)  # the server dies; its lifeline notes when
    t = time.time()
    assert p.wait(5) == 128 + signal.SIGKILL
    kind, when, status = read_record(path)
    assert (kind, status) == ("exit", 137) and abs(when - t) < 0.5


def test_the_server_dies_with_its_lifeline(beat, lifeline_head):
    path, fd = beat
    p = subprocess.Popen(server(lifeline_head, fd, 60) + ["sleep", "30"], pass_fds=[fd], start_new_session=True)
    assert wait(lambda: len(children(p.pid)) == 1)
    (child,) = children(p.pid)
    p.kill()  # SIGKILL: no code of the lifeline runs, the kernel's parent-death signal does
    p.wait(5)
    assert wait(lambda: not alive(child), 5)
    assert read_record(path)[0] == "beat"  # the last heartbeat is what is known


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_reaches_the_server(beat, lifeline_head, sig):
    path, fd = beat
    p = subprocess.Popen(server(lifeline_head, fd, 60) + ["sleep", "30"], pass_fds=[fd], start_new_session=True)
    assert wait(lambda: len(children(p.pid)) == 1)
    t = time.monotonic()
    p.send_signal(sig)  # what JupyterHub sends first, then
    assert p.wait(5) == 128 + sig and time.monotonic() - t < 1
    assert read_record(path)[0] == "exit"


def service(pidfile, parent=None, prog="import time; time.sleep(60)"):
    cmd = [sys.executable, "-I", "-S", LIFELINE, "--with-parent", str(parent or os.getpid()), "--pidfile",
           str(pidfile), "--grace", "0.5", "--", sys.executable, "-c", prog]
    return subprocess.Popen(cmd, start_new_session=True)


def test_service_stops_fast_even_if_it_ignores_signals(tmp_path):
    ready = tmp_path / "ignoring"
    stubborn = ("import signal, time\nfor s in (signal.SIGINT, signal.SIGTERM): signal.signal(s, signal.SIG_IGN)\n"
                f"open({str(ready)!r}, 'w').close()\ntime.sleep(60)")
    p = service(tmp_path / "svc.pid", prog=stubborn)
    assert wait(ready.exists)
    t = time.monotonic()
    p.send_signal(signal.SIGINT)
    assert p.wait(5) == 137 and time.monotonic() - t < 1.5  # SIGKILL after the grace


def test_a_new_instance_replaces_a_stale_one(tmp_path):
    first = service(tmp_path / "svc.pid")
    assert wait(lambda: (tmp_path / "svc.pid").exists() and len(children(first.pid)) == 1)
    (old_child,) = children(first.pid)
    second = service(tmp_path / "svc.pid")
    assert first.wait(10) is not None and wait(lambda: not alive(old_child), 5)
    assert wait(lambda: (tmp_path / "svc.pid").read_text() == str(second.pid))
    second.send_signal(signal.SIGTERM)
    second.wait(5)


def test_a_stale_instance_is_all_gone_before_the_file_is_claimed(tmp_path):
    """A stale lifeline that never acts on SIGTERM (stopped here; starved on a loaded machine),
    its service ignoring SIGTERM and a process the service started: none of them is left when
    the new instance goes on (the service's parent-death signal does not reach its own child)."""
    pidfile, ready = tmp_path / "svc.pid", tmp_path / "pids"
    stubborn = ("import os, signal, subprocess, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "helper = subprocess.Popen(['sleep', '60'])\n"
                f"open({str(ready)!r}, 'w').write(f'{{os.getpid()}} {{helper.pid}}')\ntime.sleep(60)")
    first = service(pidfile, prog=stubborn)
    assert wait(lambda: ready.exists() and ready.read_text() and pidfile.exists())
    old = [first.pid, *map(int, ready.read_text().split())]
    first.send_signal(signal.SIGSTOP)
    t = time.monotonic()
    replace_stale(str(pidfile), wait=0.5)
    assert time.monotonic() - t < 1.6
    try:
        assert [p for p in old if alive(p)] == []
        assert pidfile.read_text() == str(os.getpid())
    finally:
        kill_all(old, 0.1)
        first.wait(5)


def test_a_stale_instance_that_stops_is_not_waited_for_longer(tmp_path):
    """A stale instance that follows SIGTERM is replaced as soon as it is gone, also when its
    service left a child it never reaped (a zombie: no command line, nothing to wait for)."""
    pidfile, ready = tmp_path / "svc.pid", tmp_path / "ready"
    prog = ("import subprocess, time\nsubprocess.Popen(['true'])\ntime.sleep(0.3)\n"
            f"open({str(ready)!r}, 'w').close()\ntime.sleep(60)")
    first = service(pidfile, prog=prog)
    assert wait(lambda: ready.exists() and pidfile.exists())
    t = time.monotonic()
    replace_stale(str(pidfile))
    assert time.monotonic() - t < 2 and first.wait(5) is not None


def test_a_service_follows_its_parent(tmp_path):
    """The hub killed with SIGKILL: its service gets SIGTERM from the kernel and is gone."""
    fake_hub = tmp_path / "hub.py"
    fake_hub.write_text(
        "import os, subprocess, sys, time\n"
        f"cmd = [sys.executable, '-I', '-S', {LIFELINE!r}, '--with-parent', str(os.getpid()), '--grace', '0.5',"
        " '--', 'sleep', '60']\n"
        "print(subprocess.Popen(cmd).pid, flush=True)\n"
        "time.sleep(60)\n")
    hub = subprocess.Popen([sys.executable, str(fake_hub)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    svc = int(hub.stdout.readline())
    assert wait(lambda: len(children(svc)) == 1)
    (grandchild,) = children(svc)
    hub.kill()
    hub.wait(5)
    assert wait(lambda: not alive(svc) and not alive(grandchild), 5)


def test_local_runtime_reads_proc(tmp_path, lifeline_head):
    """Servers are found by their environment, helpers grouped with them, all stopped together."""
    hub_id, other = "hubtest" + os.urandom(3).hex(), "other" + os.urandom(3).hex()
    rt = LocalRuntime(hub_id, str(tmp_path / "lifelines"), stop_grace=1)
    fd = rt.open_lifeline("s1")
    env = dict(os.environ, GPULAB_HUB_ID=hub_id, GPULAB_SPAWN_ID="s1", JUPYTERHUB_USER="ann",
               JUPYTERHUB_SERVER_NAME="", JUPYTERHUB_SERVICE_URL="http://127.0.0.1:4711/user/ann/")
    # a server (its lifeline, the server, a helper the server started) and another hub's process
    p = subprocess.Popen(server(lifeline_head, fd, 0.2) + ["sh", "-c", "sleep 60 & sleep 60"], pass_fds=[fd],
                         env=env, start_new_session=True)
    os.close(fd)
    q = subprocess.Popen(["sleep", "60"], env=dict(env, GPULAB_HUB_ID=other), start_new_session=True)
    try:
        assert wait(lambda: len(scan(hub_id).get("s1", {}).get("pids", [])) == 4)
        entry = scan(hub_id)["s1"]
        assert entry["roots"] == [p.pid] and q.pid not in entry["pids"]
        import asyncio

        (found,) = asyncio.run(rt.list())
        assert (found.spawn_id, found.user_name, found.handle, found.url) == (
            "s1", "ann", str(p.pid), "http://127.0.0.1:4711/user/ann/")
        pids = entry["pids"]
        assert asyncio.run(rt.stop_spawn("s1")) == 4
        assert not any(alive(x) for x in pids) and alive(q.pid)
        p.wait(5)
        assert asyncio.run(rt.last_alive("s1")) is not None
        rt.forget("s1")
        assert asyncio.run(rt.last_alive("s1")) is None
    finally:
        kill_all([q.pid], 0.5)
        q.wait(5)


def test_prebind_hands_a_bound_port_to_the_service_and_keeps_no_copy(tmp_path):
    """The port is bound before the (slow) service starts: a client that connects early waits in
    the backlog and gets the service's answer; once the service is gone, connecting fails at once
    (the lifeline does not hold the socket)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    service = ("import os, socket, time; time.sleep(1.0); "
               "s = socket.socket(fileno=int(os.environ['GPULAB_LISTEN_FD'])); c, _ = s.accept(); "
               "c.sendall(os.environ.get('GPULAB_LISTEN_FD', '').encode()); c.close()")
    env = dict(os.environ, JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{port}")
    p = subprocess.Popen([sys.executable, "-I", "-S", LIFELINE, "--prebind", "--", sys.executable, "-c", service],
                         env=env)
    try:
        deadline = time.monotonic() + 5
        while True:  # bound within milliseconds of the lifeline's start, long before the service answers
            try:
                client = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "the port was never bound"
                time.sleep(0.01)
        t0 = time.monotonic()
        with client:
            assert client.recv(16).isdigit()  # the service's answer, on the descriptor it was given
        assert time.monotonic() - t0 > 0.3  # it connected before the service was listening
        assert p.wait(10) == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
    finally:
        if p.poll() is None:
            p.kill()


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root")
def test_it_joins_becomes_the_user_and_hands_the_loader_its_variables_back(tmp_path, lifeline_head):
    """What the hub's child did between fork and exec, done by the lifeline started as root: its
    pid into each procs file, the user's uid, gid and groups only, the nearest directory that
    exists, and the loader's variables only for the server (never for the root process)."""
    import json
    import pwd

    nobody = pwd.getpwnam("nobody")
    procs = [tmp_path / "a.procs", tmp_path / "b.procs"]
    for p in procs:
        p.write_text("")
    probe = ("import json, os; print(json.dumps({'uid': os.getuid(), 'euid': os.geteuid(), 'gid': os.getgid(), "
             "'groups': os.getgroups(), 'cwd': os.getcwd(), 'ld': os.environ.get('LD_LIBRARY_PATH'), "
             "'aside': sorted(k for k in os.environ if k.startswith('GPULAB_LOADER')), 'ppid': os.getppid()}))")
    env = dict(os.environ, GPULAB_LOADER_LD_LIBRARY_PATH="/opt/cuda/lib64 x=y")
    env.pop("LD_LIBRARY_PATH", None)
    cmd = [*lifeline_head, *[a for p in procs for a in ("--join", str(p))], "--user", "nobody",
           "--chdir", "/nonexistent-gpulab/home/x", "--", sys.executable, "-I", "-c", probe]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert (got["uid"], got["euid"], got["gid"]) == (nobody.pw_uid, nobody.pw_uid, nobody.pw_gid)
    assert set(got["groups"]) <= set(os.getgrouplist("nobody", nobody.pw_gid)) and 0 not in got["groups"]
    assert got["cwd"] == "/" and got["ld"] == "/opt/cuda/lib64 x=y" and got["aside"] == []
    assert [p.read_text() for p in procs] == [str(got["ppid"])] * 2  # the lifeline's own pid


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root")
def test_a_user_it_cannot_become_runs_nothing(tmp_path, lifeline_head):
    marker = tmp_path / "ran"
    r = subprocess.run([*lifeline_head, "--user", "no-such-user-gpulab", "--", "touch", str(marker)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "no-such-user-gpulab" in r.stderr and not marker.exists()


def test_a_command_that_cannot_run_exits_127_and_says_why(beat, lifeline_head):
    path, fd = beat
    r = subprocess.run(server(lifeline_head, fd, 60) + ["/nonexistent/jupyterhub-singleuser"], pass_fds=[fd],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 127 and "cannot run /nonexistent/jupyterhub-singleuser" in r.stderr
    assert read_record(path)[0::2] == ("exit", 127)


def test_the_hub_runs_the_compiled_lifeline_only_when_it_is_current(tmp_path):
    """Built beside the environment's python by make install; older than lifeline.c (edited
    since), missing or not executable: the Python one runs."""
    from hub_plugins.reconcile.local import LIFELINE_C

    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text("")
    assert native_lifeline(str(python)) is None
    assert lifeline_command(5, 60, str(python))[1:3] == ["-I", "-S"]
    native = tmp_path / "bin" / "gpulab-lifeline"
    native.write_text("")
    native.chmod(0o755)
    source = os.stat(LIFELINE_C).st_mtime_ns
    os.utime(native, ns=(source + 10**9, source + 10**9))
    assert native_lifeline(str(python)) == str(native)
    assert lifeline_command(5, 60, str(python), become=["--user", "u1"]) == [
        str(native), "--beat-fd", "5", "--every", "60", "--user", "u1", "--"]
    os.utime(native, ns=(source - 10**9, source - 10**9))
    assert native_lifeline(str(python)) is None
    os.utime(native, ns=(source + 10**9, source + 10**9))
    native.chmod(0o644)
    assert native_lifeline(str(python)) is None


def test_the_lifeline_prefix_carries_what_to_become():
    cmd = lifeline_command(5, 60, "/py", become=["--join", "/cg/cgroup.procs", "--user", "u1", "--chdir", "/home/u1"])
    assert cmd == ["/py", "-I", "-S", LIFELINE, "--beat-fd", "5", "--every", "60", "--join", "/cg/cgroup.procs",
                   "--user", "u1", "--chdir", "/home/u1", "--"]
    assert lifeline_command(5, 60, "/py")[-1] == "--"


@pytest.mark.parametrize("text, expected", [
    (b"beat 1764672000.5", ("beat", 1764672000.5, None)),
    (b"exit 1764672000 137", ("exit", 1764672000.0, 137)),
    (b"beat nan", None), (b"beat inf", None), (b"exit -inf 0", None), (b"beat -5", None), (b"beat 1e300", None),
    (b"beat \xd9\xa1\xd9\xa2", None), (b"exit 5 x", None), (b"hello 5", None), (b"", None),
])
def test_a_record_is_read_only_when_it_holds_a_real_moment(tmp_path, text, expected):
    """The stop's release turns the record's time into a date (on the hub's loop): a record that
    says NaN, infinity or a year past 2242 is no record, never an error that keeps the GPUs."""
    path = tmp_path / "rec"
    path.write_bytes(text)
    assert read_record(str(path)) == expected
