"""A killed hub forgets nothing and hands nothing out twice; services live and die with the hub;
a stop is quick. Read from the processes themselves (/proc) and gpulab's tables."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import uuid

import pytest

from tests.support.hubproc import ROOT, VENV_BIN, hub_cgroups, server_cgroups
from tests.support.polling import gpulab_rows, wait_for
from tests.support.procs import environ, hub_processes, live_servers, parent, service_processes
from tests.support.profiles import make_profiles

pytestmark = pytest.mark.hub

SLOW = "display_name: Slow\nlocal:\n  prefix: {prefix}\ngpus:\n  counts: [0, 1]\nenv: {{GPULAB_TEST_START_DELAY: '4'}}\n"


@pytest.fixture(scope="module")
def profiles():
    d = make_profiles()
    (d / "slow.yaml").write_text(SLOW.format(prefix=d / "patient-env"))
    yield str(d)
    shutil.rmtree(d, ignore_errors=True)


def lifeline_of(server) -> int:
    """The server's root process (its lifeline): the one whose parent is not part of it."""
    return next(p for p in server.pids if parent(p) not in server.pids)


def test_server_started_but_not_recorded_is_adopted(hub_factory, profiles):
    """The hub dies after starting a server and before recording it (the server takes 4 s to
    answer): the restarted hub adopts it, with its GPU, and never gives that GPU to anyone else."""
    hub = hub_factory(profiles_dir=profiles, inventory="2xA100-80GB")
    hub.create_users("ada", "bob", "cyd")
    st, _ = hub.spawn("ada", {"profile": "slow", "gpus": 1})
    assert st in (201, 202)
    wait_for(lambda: live_servers(hub.hub_port), timeout=60, what="ada's server process")
    (ada,) = live_servers(hub.hub_port).values()
    hub.kill()
    hub.start()
    model = hub.wait_ready("ada", timeout=90)
    assert model["state"]["spawn_id"] == ada.spawn_id and model["state"]["gpus"] == list(ada.devices)
    assert lifeline_of(ada) in live_servers(hub.hub_port)[ada.spawn_id].pids  # the same process
    bob = hub.start_server("bob", {"gpus": 1})
    assert bob["state"]["gpus"] != list(ada.devices)
    st, body = hub.spawn("cyd", {"gpus": 1})
    assert st == 409, body  # both GPUs really are in use
    (rec,) = [r for r in gpulab_rows(hub, "gpulab_usage", "ada")]
    assert rec["stopped_at"] is None and rec["ready_at"] is not None  # charged, still running


def test_a_restarted_hub_removes_the_cgroups_a_crash_left_empty(hub_factory, profiles):
    """A hub killed between preparing a server's cgroups and starting its process leaves them
    empty (the chaos test's crashes left up to 21 directories a round). The restarted hub removes
    its own empty ones before any spawn goes ahead, and keeps those of the server it adopts and
    those of another hub on the machine."""
    from hub_plugins.isolation import Enforcer
    from hub_plugins.isolation.plan import Limits, cgroup_name

    enforcer = Enforcer.detect("cgroup")
    if os.geteuid() != 0 or enforcer.fs is None:
        pytest.skip("root with the cgroup filesystem")
    hub = hub_factory(profiles_dir=profiles, inventory="2xA100-80GB")
    hub.create_users("ida")
    st, _ = hub.spawn("ida", {"profile": "slow", "gpus": 1})
    assert st in (201, 202)
    wait_for(lambda: live_servers(hub.hub_port), timeout=60, what="ida's server process")
    (ida,) = live_servers(hub.hub_port).values()
    tag = environ(ida.pids[0])["GPULAB_HUB_ID"][:6]
    assert hub.tag == tag  # what the chaos test looks for
    hub.kill()
    # what the dead hub would have left had it died mid-start for jon, and another hub's
    left, theirs = f"{cgroup_name('jon')}-{tag}", f"{cgroup_name('jon')}-{uuid.uuid4().hex[:6]}"
    for name in (left, theirs):
        enforcer.prepare(name, Limits(mem_bytes=2**30))
    try:
        ours = hub_cgroups(tag)
        assert left in ours and len(ours) == 2, ours  # and ida's
        hub.start()
        hub.wait_ready("ida", timeout=90)
        # the hub answers (ida ready, from its database) while it still checks ida's server; the
        # sweep runs once that check and the reconcile are done, and says so in the log
        swept = "removed what 1 server(s) stopped by a crash left behind"
        wait_for(lambda: swept in hub.log_path.read_text(errors="replace"), timeout=90, what="the start-up sweep")
        assert hub_cgroups(tag) == ours - {left}
        assert not enforcer.emptied(theirs)
        hub.stop_server("ida")
        assert hub_cgroups(tag) == set()
        # ida's server is no child of this hub: it was a zombie until init reaped it, not a
        # process that ignored SIGINT, SIGTERM and SIGKILL
        assert "never died" not in hub.log_path.read_text(errors="replace")
    finally:
        enforcer.cleanup(theirs)
        enforcer.cleanup(left)


def test_a_stop_while_the_restarted_hub_checks_the_server_says_to_try_again(hub_factory):
    """JupyterHub answers a stop 500 ("pending check") while a restarted hub still checks the
    server (here one that does not answer: stopped with SIGSTOP while the hub was down). gpulab
    turns it into a 503 that says so and when to retry; once the server answers, the stop works."""
    hub = hub_factory(inventory="1xA100-80GB")
    hub.create_users("kai")
    hub.start_server("kai", {"gpus": 1})
    (kai,) = live_servers(hub.hub_port).values()
    hub.kill()
    for pid in kai.pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        hub.start()
        r = hub.api("DELETE", "/users/kai/server", raw=True)
        assert r.status_code == 503 and r.headers["Retry-After"] == "5", (r.status_code, r.text)
        assert "still checking this server" in r.json()["message"] and "Try again in a few seconds" in r.text
        assert "Uncaught exception" in hub.log_tail(200)  # JupyterHub's own 500 underneath, as before
    finally:
        for pid in kai.pids:
            os.kill(pid, signal.SIGCONT)
    wait_for(lambda: hub.api("DELETE", "/users/kai/server")[0] in (202, 204), timeout=90, every=1,
             what="the stop to go ahead once the server answers")
    hub.wait_gone("kai")
    assert hub.allocations() == []


def test_orphans_are_stopped_within_a_poll_interval(hub_factory):
    """Processes of this hub that no server holds (with or without an allocation row) are
    stopped by the periodic reconcile; their allocation freed, their usage record closed."""
    from hub_plugins.gpu.simulated import parse_spec
    from hub_plugins.store.allocator import Allocator, Owner, UsageTerms
    from hub_plugins.accounting.pricing import Pricing
    from hub_plugins.store.db import Database

    hub = hub_factory(inventory="2xA100-80GB")
    hub.create_users("dan")
    dan = hub.start_server("dan", {"gpus": 1})
    (server,) = live_servers(hub.hub_port).values()
    hub_id = environ(server.pids[0])["GPULAB_HUB_ID"]  # what this hub marks its servers with
    env = dict(os.environ, GPULAB_HUB_ID=hub_id, JUPYTERHUB_API_URL=f"http://127.0.0.1:{hub.hub_port}/hub/api")
    # one with an allocation of a server the hub has never heard of, one with no allocation at all
    db = Database(hub.gpulab_db_url)
    ghost = Allocator(db).allocate(Owner(4242, "ghost", ""), "minimal", "A100-80GB", 1,
                                   parse_spec("2xA100-80GB"), usage=UsageTerms(Pricing.from_config({})))
    db.dispose()
    procs = [subprocess.Popen(["sleep", "600"], env=dict(env, GPULAB_SPAWN_ID=spawn, JUPYTERHUB_USER=who),
                              start_new_session=True) for spawn, who in ((ghost.spawn_id, "ghost"), (uuid.uuid4().hex, "nobody"))]
    t0 = time.monotonic()
    wait_for(lambda: all(p.poll() is not None for p in procs), timeout=20, what="the orphans to be stopped")
    took = time.monotonic() - t0
    assert took < 2 + 5, took  # poll_interval is 2 s in test hubs (slack for a busy machine)
    # the same round frees the ghost's GPU right after its process is gone
    wait_for(lambda: [a["user_name"] for a in hub.allocations()] == ["dan"], timeout=5,
             what="the orphan's allocation to be freed")
    (rec,) = gpulab_rows(hub, "gpulab_usage", "ghost")
    assert rec["stopped_at"] is not None and rec["stop_reason"] == "failed"  # never ready: not charged
    assert hub.wait_ready("dan")["state"]["pid"] == dan["state"]["pid"]  # the real server untouched


def test_servers_killed_while_the_hub_is_down_are_charged_until_they_died(hub_factory):
    hub = hub_factory(inventory="2xA100-80GB", quotas={"default": {"max_gpus": 1, "max_servers": 2}},
                      extra={"billing": {"heartbeat_seconds": 5}})
    hub.create_users("eve", "fox")
    hub.start_server("eve", {"gpus": 1})
    hub.start_server("fox", {"gpus": 1})
    servers = {s.user: s for s in live_servers(hub.hub_port).values()}
    hub.kill()
    time.sleep(8)  # they keep running while the hub is down
    eve_root = lifeline_of(servers["eve"])
    eve_server = next(p for p in servers["eve"].pids if parent(p) == eve_root)
    os.kill(eve_server, signal.SIGKILL)  # eve's server dies; its lifeline notes the moment
    t_eve = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    fox_root = lifeline_of(servers["fox"])
    for pid in servers["fox"].pids:  # fox's whole tree, lifeline included, at once
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # already gone: the lifeline's death takes its server with it
            pass
    t_fox = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    assert fox_root
    time.sleep(4)
    hub.start()
    wait_for(lambda: all(r["stopped_at"] for r in gpulab_rows(hub, "gpulab_usage")), timeout=60,
             what="both usage records to close")
    recs = {r["user_name"]: r for r in gpulab_rows(hub, "gpulab_usage")}
    assert {r["stop_reason"] for r in recs.values()} == {"crashed"}
    assert abs((recs["eve"]["stopped_at"] - t_eve).total_seconds()) < 1.5, (recs["eve"]["stopped_at"], t_eve)
    # its lifeline was killed too: what is known is its last heartbeat, at most 5 s before
    lost = (t_fox - recs["fox"]["stopped_at"]).total_seconds()
    assert -1 < lost < 5 + 1.5, (recs["fox"]["stopped_at"], t_fox)
    assert hub.allocations() == []


def test_a_pid_another_program_took_while_the_hub_was_down_is_never_signalled(hub_factory):
    """The server died while the hub was down, and the pid the hub recorded for it is now another
    program's (the machine rebooted, or the pids wrapped: 32,768 by default). Stock JupyterHub's
    poll finds that pid alive, takes the server for running and, once its URL does not answer,
    stops it: SIGTERM, then SIGKILL to that program. Here the server is gone, its GPU freed, and
    that program lives on. (The record is pointed at the program, as a reboot would leave it.)"""
    hub = hub_factory(inventory="1xA100-80GB")
    hub.create_users("gus")
    hub.start_server("gus", {"gpus": 1})
    [server] = live_servers(hub.hub_port).values()
    hub.kill()
    for pid in server.pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        db = sqlite3.connect(hub.state_dir / "jupyterhub.sqlite")
        with db:
            [(row, state)] = db.execute("SELECT id, state FROM spawners WHERE state LIKE '%\"pid\"%'").fetchall()
            assert json.loads(state)["pid"] == lifeline_of(server)
            db.execute("UPDATE spawners SET state = ? WHERE id = ?",
                       (json.dumps({**json.loads(state), "pid": bystander.pid}), row))
        db.close()
        hub.start()
        hub.wait_gone("gus", timeout=60)
        wait_for(lambda: hub.allocations() == [], timeout=30, what="its GPU to be freed")
        time.sleep(2)  # a stop would have signalled it by now
        assert bystander.poll() is None, "the program that took the server's pid was stopped"
    finally:
        bystander.kill()
        bystander.wait()


def test_services_die_with_the_hub_and_a_stale_one_is_replaced(hub_factory):
    hub = hub_factory()
    wait_for(lambda: dict(service_processes(hub.hub_port)) == {"billing": 1, "quotas": 1, "culler": 1},
             timeout=60, what="the services")
    hub.wait_service("billing")
    billing = next(p for p, env in _services(hub).items() if env["JUPYTERHUB_SERVICE_NAME"] == "billing"
                   and parent(p) == hub.proc.pid)
    cmd = open(f"/proc/{billing}/cmdline", "rb").read().split(b"\0")[:-1]
    env = open(f"/proc/{billing}/environ", "rb").read().split(b"\0")
    hub.kill()
    wait_for(lambda: not service_processes(hub.hub_port), timeout=5, what="the services to follow the hub")
    # a stale billing service holding the port, as one that did not follow its hub would
    args = [a.decode() for a in cmd]
    args[args.index("--with-parent") + 1] = str(os.getpid())
    stale = subprocess.Popen(args, env=dict(kv.decode().split("=", 1) for kv in env if b"=" in kv), cwd=str(ROOT),
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: service_processes(hub.hub_port).get("billing") == 1, timeout=30, what="the stale billing")
    wait_for(lambda: listening(hub.config["billing"]["port"]), timeout=60, what="the stale billing on its port")
    hub.start()
    wait_for(lambda: stale.poll() is not None, timeout=30, what="the stale billing to be replaced")
    wait_for(lambda: dict(service_processes(hub.hub_port)) == {"billing": 1, "quotas": 1, "culler": 1},
             timeout=60, what="one of each service")
    hub.wait_service("billing")
    assert "Service billing exited with status" not in hub.log_path.read_text(errors="replace")


def test_a_second_hub_on_the_same_state_is_refused_and_the_first_runs_on(hub_factory):
    """A second `make run` on the same state: refused before it touches anything (stock
    JupyterHub would stop the running hub's proxy as a stale one first)."""
    hub = hub_factory()
    proxy = int((hub.state_dir / "jupyterhub-proxy.pid").read_text())
    second = subprocess.run([str(VENV_BIN / "jupyterhub"), "-f", str(ROOT / "config" / "jupyterhub_config.py")],
                            cwd=hub.dir, env=dict(os.environ, GPULAB_CONFIG=str(hub.config_path)),
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"another hub already runs on the state directory {hub.state_dir} (pid {hub.proc.pid})" in second.stderr
    assert environ(proxy) is not None and hub.api("GET", "/")[0] == 200  # its proxy and API untouched
    hub.kill()
    hub.start()  # the lock went with the killed hub
    assert hub.api("GET", "/")[0] == 200


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _services(hub):
    return {p: e for p, e in hub_processes(hub.hub_port).items() if "JUPYTERHUB_SERVICE_NAME" in e}


@pytest.mark.slow
def test_sigterm_stops_hub_and_services_in_under_10_s(hub_factory):
    """Servers and all four services running (MLflow, whose servers have taken credentials)."""
    hub = hub_factory(inventory="2xA100-80GB", extra={"mlflow": {"enabled": True}},
                      quotas={"default": {"max_gpus": 1, "max_servers": 2}})
    hub.create_users("gil", "hal")
    hub.wait_service("mlflow", "gpulab/health", timeout=240)
    hub.start_server("gil", {"gpus": 1})
    hub.start_server("hal", {"gpus": 1})
    hub.wait_service("billing")
    wait_for(lambda: dict(service_processes(hub.hub_port)) == {"billing": 1, "quotas": 1, "culler": 1, "mlflow": 1},
             timeout=60, what="four services")
    servers = live_servers(hub.hub_port)
    t0 = time.monotonic()
    hub.proc.send_signal(signal.SIGTERM)
    hub.proc.wait(60)
    took = time.monotonic() - t0
    assert took < 10, f"shutdown took {took:.1f} s:\n{hub.log_tail(40)}"
    wait_for(lambda: not service_processes(hub.hub_port), timeout=5, what="no service process left")
    assert set(live_servers(hub.hub_port)) == set(servers)  # servers outlive a clean hub stop, by design
    print(f"SIGTERM shutdown: {took:.2f} s")
    # with the hub gone, the suite's clean-up stops them and removes their cgroups (no hub will)
    groups = server_cgroups([pid for s in servers.values() for pid in s.pids])
    assert groups or os.geteuid() != 0, "as root the servers run in gpulab's cgroups"
    hub.close()
    wait_for(lambda: not live_servers(hub.hub_port), timeout=10, what="the servers stopped")
    assert not [d for d in groups if d.exists()], groups
