"""What the local backend says and refuses at start-up (issue 10): root with system_users never
does not start; a host whose limits are off says so and the form promises no limits; a profile
its server's account cannot run is refused at spawn with what to do."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sqlite3
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.hub.test_form import form_model, login, signup
from tests.support.hubproc import HubError, wait_api

pytestmark = pytest.mark.hub


def test_root_with_system_users_never_does_not_start(hub_factory, local_backend):
    if os.geteuid() != 0:
        pytest.skip("only a hub running as root is refused")
    hub = hub_factory(start=False, local={**local_backend, "system_users": "never"})
    with pytest.raises(HubError) as e:
        hub.start(timeout=30)
    assert "the hub will not start" in str(e.value) and "Set local.system_users: auto" in str(e.value)


async def test_without_enforced_limits_the_form_promises_none(inprocess_hub, local_backend, capsys):
    # in-process: nothing here needs a hub of its own process (the start-up refusal above does)
    hub = await inprocess_hub(local={**local_backend, "limits": "off"})
    assert "local servers are NOT held to any limit: local.limits is off" in capsys.readouterr().err
    await asyncio.to_thread(signup, hub, "admin")  # hub.admin_users are approved at sign-up
    s, _ = await asyncio.to_thread(login, hub, "admin")
    r = await asyncio.to_thread(s.get, f"{hub.url}/hub/spawn", timeout=60)
    assert r.status_code == 200, r.text[:300]
    minimal = {p["name"]: p for p in form_model(r.text)["profiles"]}["minimal"]
    assert minimal["cpu_limit"] is None and minimal["mem_limit"] is None
    assert "CPUs" not in r.text.split('id="gpulab-model"')[0]  # "(2 CPUs, 4GB memory)" is gone


def _logged_at(log: str, marker: str) -> datetime:
    """When the hub log (JupyterHub's lines, and the services' own) first says ``marker``."""
    line = next(line for line in log.splitlines() if marker in line)
    stamp = re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[.,]\d{3}", line).group(0)
    return datetime.strptime(stamp.replace(",", "."), "%Y-%m-%d %H:%M:%S.%f")


def test_services_start_side_by_side(hub_factory):
    """JupyterHub alone would spawn the quotas service only once billing answers; gpulab's hub
    spawns all its services at once, so the hub waits for the slowest, not for their sum."""
    hub = hub_factory()  # up: JupyterHub answers once every URL service answered
    log = hub.log_path.read_text()
    billing_answers = _logged_at(log, "billing service at http")
    for name in ("quotas", "culler"):
        assert _logged_at(log, f"Starting managed service {name}") < billing_answers, log[-3000:]


def test_the_hub_answers_before_its_services_and_stops_cleanly_meanwhile(hub_factory):
    """JupyterHub routes its proxy to the hub only once every service answered, and handles
    SIGTERM only after that. gpulab's hub routes itself while its services start, so sign-in
    and the API answer at once; a SIGTERM in that window is an ordinary, clean stop."""
    hub = hub_factory(start=False)
    hub.start(wait=False)
    wait_api(hub.url, hub.proc, 120, every=0.02)
    # the billing service is still importing: the hub did not wait for it
    assert "billing service at http" not in hub.log_path.read_text()
    proxy_pid = int((hub.dir / "state" / "jupyterhub-proxy.pid").read_text())
    hub.proc.send_signal(signal.SIGTERM)
    assert hub.proc.wait(10) == 0
    log = hub.log_path.read_text()
    assert "received signal SIGTERM while the services start" in log, log[-3000:]
    assert _gone(proxy_pid, within=5), "the proxy outlived the hub"


def _gone(pid: int, within: float) -> bool:
    """The process has exited (a zombie not yet reaped has exited too)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text():
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def test_the_hubs_own_sqlite_file_keeps_a_write_ahead_log(hub_factory):
    """JupyterHub's database file (not only gpulab's) is in WAL mode once the hub runs: one sync a
    commit in the hub's event loop instead of several (settings/hubapp.py ``journal_ahead``)."""
    hub = hub_factory()
    conn = sqlite3.connect(hub.state_dir / "jupyterhub.sqlite")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] >= 1  # JupyterHub's rows are there
    finally:
        conn.close()


def test_the_hub_freezes_its_long_lived_objects_once_up(hub_factory):
    """Once up, the hub moves what its start built out of the garbage collector's walks
    (hub_plugins/gcpace.py): the log says how many objects the first sweep kept. JupyterHub with
    gpulab's plugins holds well over 50,000 (200,000 here); a pacing that froze nothing would
    leave every full collection walking them all."""
    hub = hub_factory()
    deadline = time.monotonic() + 60
    found = None
    while found is None and time.monotonic() < deadline:
        found = re.search(r"gpulab: full garbage collection: (\d+) objects kept", hub.log_path.read_text(errors="replace"))
        time.sleep(0.2)
    assert found, hub.log_tail()
    assert int(found.group(1)) > 50_000


def test_a_spawn_and_its_stop_log_no_deprecation_of_jupyterhubs_session(hub_factory):
    """gpulab reaches the hub's database session through the user, not ``Spawner.db``, which
    JupyterHub deprecates with a six-line warning the first time each spawner reads it: that was
    every spawn, in every hub's log. Nor are its pages ``JupyterHub.extra_handlers`` (deprecated,
    warned about at every start); they answer all the same."""
    hub = hub_factory(inventory="2xA100-80GB")
    hub.api("POST", "/users", {"usernames": ["dana"]})
    st, body = hub.spawn("dana", {"profile": "minimal", "gpus": 1})
    assert st in (201, 202), body
    hub.wait_ready("dana")
    hub.stop_server("dana")
    assert hub.api("GET", "/gpulab/users/dana/servers")[0] == 200
    assert hub.api("GET", "/gpulab/nothing-here")[0] == 404  # JupyterHub's API 404 still after them
    log = hub.log_path.read_text(errors="replace")
    assert "Spawner.db is deprecated" not in log, log[-3000:]
    assert "extra_handlers is deprecated" not in log, log[-3000:]


def _environ(pid: int) -> dict[bytes, bytes]:
    return dict(kv.split(b"=", 1) for kv in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in kv)


def test_servers_listen_below_the_kernels_ephemeral_range(hub_factory):
    """A server's port comes from below the range the kernel takes outgoing connections' ports
    from (JupyterHub's random port comes from inside it, where a connection can take it before
    the server binds it): read from the servers' own environments, each one a port it listens on."""
    lo, _hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    hub = hub_factory(inventory="4xA100-80GB")
    names = ["pia", "quin", "rex"]
    hub.api("POST", "/users", {"usernames": names})
    for name in names:
        st, body = hub.spawn(name, {"profile": "minimal", "gpus": 1})
        assert st in (201, 202), body
    for name in names:
        hub.wait_ready(name)
    ports = {}  # user -> the port in its server's environment (its lifeline has the same)
    for pid in hub.server_pids():
        env = _environ(pid)
        if env.get(b"JUPYTERHUB_USER", b"").decode() in names:
            url = env[b"JUPYTERHUB_SERVICE_URL"].decode()
            ports[env[b"JUPYTERHUB_USER"].decode()] = int(url.rsplit(":", 1)[1].split("/")[0])
    assert sorted(ports) == names and len(set(ports.values())) == len(names), ports
    assert all(lo - 10_000 <= p < lo for p in ports.values()), (ports, lo)
    listening = {int(line.split()[1].split(":")[1], 16) for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if line.split()[3] == "0A"}
    assert set(ports.values()) <= listening


def test_a_port_range_that_is_not_one_keeps_the_hub_from_starting(hub_factory, local_backend):
    hub = hub_factory(start=False, local={**local_backend, "port_range": "30000-20000"})
    with pytest.raises(HubError) as e:
        hub.start(timeout=30)
    assert "the hub will not start" in str(e.value) and "local.port_range '30000-20000'" in str(e.value)


async def test_an_environment_its_user_cannot_reach_is_refused_and_holds_nothing(inprocess_hub):
    """The system account and the executable's path are checked before the server starts
    (``gpulab_apply``, in a worker thread): the refusal says which directory blocks it and what
    to do, the GPU it reserved is freed and no cgroup is left."""
    if os.geteuid() != 0:
        pytest.skip("servers run as system accounts only under a hub that runs as root")
    from benchmarks.spawn_overhead import bench_env, wait_ready

    root = Path(tempfile.mkdtemp(prefix="gpulab-unreachable-", dir="/tmp"))  # pytest's tmp is root's alone
    try:
        profiles = bench_env(root)
        (root / "bench-env").chmod(0o700)  # root's alone: the server's account cannot reach it
        hub = await inprocess_hub(profiles_dir=str(profiles), extra={"default_profile": "bench"})
        await hub.aio.api("POST", "/users", {"usernames": ["uma"]})
        st, body = await hub.aio.spawn("uma", {"profile": "bench", "gpus": 1})
        if st == 202:  # slower than hub.slow_spawn_seconds: its progress says why it failed
            with pytest.raises(RuntimeError) as e:
                await asyncio.to_thread(wait_ready, hub, "uma", hub.token)
            message = str(e.value)
        else:
            message = body.get("message", "") if isinstance(body, dict) else str(body)
        assert "cannot run as system user" in message, (st, body)
        assert f"directory {root / 'bench-env'} (mode drwx------) is not accessible" in message
        assert "where every user can read it" in message
        for _ in range(100):  # the failed start's stop releases what it reserved
            if not await hub.aio.allocations():
                break
            await asyncio.sleep(0.1)
        assert await hub.aio.allocations() == []
        assert not any("uma" in p for p in _cgroup_dirs()), _cgroup_dirs()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _cgroup_dirs() -> list[str]:
    return [os.path.join(root, d) for root, dirs, _files in os.walk("/sys/fs/cgroup") for d in dirs
            if d.startswith("gpulab-")]
