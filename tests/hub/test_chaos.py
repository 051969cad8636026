"""Chaos: bursts of 50 concurrent spawns (and stops), the hub killed with SIGKILL at a random
moment (every third round stopped with SIGTERM instead, as a restart does), restarted; many
times, on SQLite and on PostgreSQL. The invariants are read from the
processes themselves (``/proc/<pid>/environ`` of every single-user server and service):

- no device is ever in two live servers (sampled all along, also while the hub is down);
- every live server is known to the hub (its REST API shows it with the same spawn id), or
  stopped, within one poll interval of the start-up reconcile;
- no allocation without a live server once the hub has reconciled;
- every usage record is closed exactly once (closed records never change afterwards, and all are
  closed at the end);
- exactly one process of each service (never two, not even around a crash);
- no cgroup of a server that is gone (a crash mid-start leaves them prepared but empty).

``GPULAB_CHAOS_ROUNDS`` (default 10) kills per database; ``GPULAB_CHAOS_SEED`` replays a run.
Each run appends its figures to ``$GPULAB_CHAOS_REPORT`` when set (the README's reliability
figures come from there).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from tests.support.hubproc import hub_cgroups
from tests.support.polling import wait_for
from tests.support.procs import cmdline, devices_held_twice, hub_processes, live_servers, parent, service_processes
from tests.support.profiles import make_profiles

pytestmark = [pytest.mark.hub, pytest.mark.slow]

ROUNDS = int(os.environ.get("GPULAB_CHAOS_ROUNDS", "10"))
BURST = 50
GPUS = 8
POLL = 2  # hub.poll_interval in test hubs
SERVICES = {"billing": 1, "quotas": 1, "culler": 1}
SETTLE = 30


@pytest.fixture(scope="module")
def profiles():
    d = make_profiles()
    yield str(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
def hub(request, hub_factory, profiles):
    db_url = None
    if request.param == "postgres":
        db_url = request.getfixturevalue("pg").create_db(f"chaos_{random.getrandbits(40):x}")
    return hub_factory(inventory=f"{GPUS}xA100-80GB", db_url=db_url, profiles_dir=profiles,
                       quotas={"default": {"max_gpus": 1, "max_servers": 1}},
                       extra={"billing": {"heartbeat_seconds": POLL}})


class Sampler(threading.Thread):
    """Looks at the processes every half second for the whole test: devices held twice, and the
    most instances of each service seen running their command at once (a restarted hub's new
    lifeline waits for the stale instance to be gone before it starts the service), with what
    ran whenever that was more than one."""

    def __init__(self, hub_port: int):
        super().__init__(daemon=True)
        self.hub_port = hub_port
        self.twice: list[dict] = []
        self.services_max: dict[str, int] = {}
        self.services_twice: list[str] = []
        self.samples = 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            twice = devices_held_twice(live_servers(self.hub_port))
            if twice:
                self.twice.append(twice)
            for name, n in service_processes(self.hub_port, commands=True).items():
                self.services_max[name] = max(n, self.services_max.get(name, 0))
                if n > 1 and len(self.services_twice) < 10:
                    self.services_twice.append(f"{time.time():.1f} {name}: " + "; ".join(
                        f"{pid}<{parent(pid)} {' '.join(cmdline(pid))[:120]}"
                        for pid, env in hub_processes(self.hub_port).items()
                        if env.get("JUPYTERHUB_SERVICE_NAME") == name))
            self.samples += 1
            self.halt.wait(0.5)


def usage_rows(hub) -> dict[int, tuple]:
    eng = sa.create_engine(hub.gpulab_db_url)
    try:
        with eng.connect() as c:
            return {r.id: (r.spawn_id, r.stopped_at, r.stop_reason) for r in c.execute(sa.text(
                "SELECT id, spawn_id, stopped_at, stop_reason FROM gpulab_usage"))}
    finally:
        eng.dispose()


def hub_knows(hub) -> dict[str, str]:
    """spawn id -> 'user:server' for every server the hub's REST API lists."""
    st, users = hub.api("GET", "/users?state=active&limit=1000")
    assert st == 200, users
    users = users["items"] if isinstance(users, dict) else users
    return {(s.get("state") or {}).get("spawn_id", ""): f"{u['name']}:{n}"
            for u in users for n, s in u["servers"].items()}


def queued(hub) -> list[tuple[str, str, str]]:
    eng = sa.create_engine(hub.gpulab_db_url)
    try:
        with eng.connect() as c:
            return [tuple(r) for r in c.execute(sa.text("SELECT user_name, server_name, state FROM gpulab_queue"))]
    finally:
        eng.dispose()


def stop_everything(hub) -> bool:
    """One round of what an admin does to empty the hub; True once nothing runs, is held or waits.
    Stops are repeated each round: a stop is refused (503, try again) while the restarted hub still
    checks a server it found at start-up, and a queued request whose waiting spawn died with the
    hub is not a server the hub lists, so it is withdrawn through the queue API instead."""
    live, allocations, waiting = live_servers(hub.hub_port), hub.allocations(), queued(hub)
    if not live and not allocations and not waiting:
        return True
    for who in hub_knows(hub).values():
        user, server = who.split(":", 1)
        hub.api("DELETE", hub.server_path(user, server))
    for user in {u for u, _s, state in waiting if state == "waiting"}:
        r = hub.service("billing", f"api/queue/{user}", method="DELETE")
        assert r.status_code < 300, (r.status_code, r.text)
    return False


def consistent(hub) -> list[str]:
    """What is wrong right now (empty: nothing)."""
    problems = []
    live = live_servers(hub.hub_port)
    if devices_held_twice(live):
        problems.append(f"devices held twice: {devices_held_twice(live)}")
    known = hub_knows(hub)
    unknown = [f"{s.user}:{s.server} ({sid})" for sid, s in live.items() if sid not in known]
    if unknown:
        problems.append(f"live servers the hub does not know: {unknown}")
    leaked = [f"{a['user_name']}:{a['server_name']} {a['visible_id']}" for a in hub.allocations()
              if a["spawn_id"] not in live]
    if leaked:
        problems.append(f"allocations without a live server: {leaked}")
    # a crash mid-start leaves a server's cgroups prepared but empty; the restarted hub removes them
    empty = hub_cgroups(hub.tag, empty=True) if os.geteuid() == 0 else set()
    if empty:
        problems.append(f"empty cgroups of servers that are gone: {sorted(empty)}")
    services = dict(service_processes(hub.hub_port))
    if services != SERVICES:
        problems.append(f"service processes: {services}")
    return problems


def test_kill_9_during_spawn_bursts(hub):
    seed = int(os.environ.get("GPULAB_CHAOS_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    print(f"chaos seed {seed}")
    sampler = Sampler(hub.hub_port)
    sampler.start()
    closed_before: dict[int, tuple] = {}
    figures = {"crashes": 0, "restarts": 0, "live_at_kill": 0, "adopted": 0, "seconds_to_consistent": []}
    pool = ThreadPoolExecutor(BURST + GPUS)
    try:
        for rnd in range(ROUNDS):
            users = [f"c{rnd:02d}u{i:02d}" for i in range(BURST)]
            st, body = hub.api("POST", "/users", {"usernames": users})
            assert st == 201, body
            # churn: about half of the running servers are stopped in the same burst
            running = sorted({s.user for s in live_servers(hub.hub_port).values()})
            stops = rng.sample(running, len(running) // 2)

            def spawn(u):
                try:
                    hub.spawn(u, {"profile": "patient", "gpus": 1})  # servers that outlive a restart
                except Exception:
                    pass  # the hub died under it

            def stop(u):
                try:
                    hub.api("DELETE", f"/users/{u}/server")
                except Exception:
                    pass

            jobs = [(stop, u) for u in stops] + [(spawn, u) for u in users]
            rng.shuffle(jobs)
            for fn, u in jobs:
                pool.submit(fn, u)
            # a random moment: after 0..all of this burst's servers have started, then 0-1.5 s more
            # (so kills land before any start, mid-start, and with servers up but not recorded)
            target = rng.randint(0, GPUS - len(running) + len(stops))
            mine = lambda: sum(1 for s in live_servers(hub.hub_port).values() if s.user in users)  # noqa: E731
            deadline = time.monotonic() + 30
            while mine() < target and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(rng.uniform(0.0, 1.5))
            if rnd % 3 == 2:
                # a restart instead of a crash: JupyterHub's SIGTERM stops the services and the
                # proxy and cancels the requests still running, spawns among them (their servers
                # go on starting, or never start, at any point of gpulab's start-up)
                hub.terminate(timeout=60)
                figures["restarts"] += 1
            else:
                hub.kill()
                figures["crashes"] += 1
            figures["live_at_kill"] += len(live_servers(hub.hub_port))
            time.sleep(rng.uniform(0.0, 2.0))
            hub.start(timeout=180)
            t_answer = time.monotonic()
            # JupyterHub first checks the servers it knows (waits until they answer), then the
            # reconcile runs; everything must be consistent well within SETTLE seconds of the hub
            # answering (the figures report how long it really took)
            deadline = t_answer + SETTLE
            problems = consistent(hub)
            while problems and time.monotonic() < deadline:
                time.sleep(0.25)
                problems = consistent(hub)
            assert not problems, f"round {rnd} (seed {seed}): {problems}\n{hub.log_tail(80)}"
            figures["seconds_to_consistent"].append(round(time.monotonic() - t_answer, 1))
            # a usage record, once closed, never changes (closed exactly once)
            rows = usage_rows(hub)
            for rid, was in closed_before.items():
                assert rows[rid] == was, f"usage record {rid} closed again: {was} -> {rows[rid]}"
            closed_before = {rid: r for rid, r in rows.items() if r[1] is not None}
        figures["adopted"] = hub.log_path.read_text(errors="replace").count("adopted its server")
        # the end: every server stopped, every record closed, nothing held
        pool.shutdown(wait=True)
        try:
            wait_for(lambda: stop_everything(hub), timeout=120, every=2, what="every server to stop and release")
        except AssertionError as e:
            left = {sid: f"{s.user}:{s.server}" for sid, s in live_servers(hub.hub_port).items()}
            raise AssertionError(
                f"{e} (seed {seed}): live {left}, allocations {hub.allocations()}, queued {queued(hub)}, "
                f"the hub knows {hub_knows(hub)}\n{hub.log_tail(120)}") from None
        rows = usage_rows(hub)
        assert all(r[1] is not None for r in rows.values()), [r for r in rows.values() if r[1] is None]
        assert not hub_cgroups(hub.tag), hub_cgroups(hub.tag)  # every stop removed its server's
        for rid, was in closed_before.items():
            assert rows[rid] == was, f"usage record {rid} closed again: {was} -> {rows[rid]}"
    finally:
        sampler.halt.set()
        sampler.join(5)
        pool.shutdown(wait=False, cancel_futures=True)
    assert sampler.twice == [], f"devices held twice (seed {seed}): {sampler.twice[:3]}"
    assert all(n == 1 for n in sampler.services_max.values()), (sampler.services_max, sampler.services_twice)
    figures.update(db="postgres" if hub.config["hub"]["db_url"] else "sqlite", seed=seed, rounds=ROUNDS,
                   samples=sampler.samples, gpus_held_twice=0, gpus_leaked=0,
                   max_seconds_to_consistent=max(figures["seconds_to_consistent"]))
    print("chaos figures:", json.dumps(figures))
    report = os.environ.get("GPULAB_CHAOS_REPORT")
    if report:
        with open(report, "a") as f:
            f.write(json.dumps(figures) + "\n")
