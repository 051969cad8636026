"""gpulab at a lab's scale: a real hub with 200 users, 500 running servers and a year of usage.

What it builds (all in one run, on this machine):
- a real hub (gpulab's config, SQLite by default, ``--db-url`` for PostgreSQL) with ``--users``
  people and ``--servers`` running servers, started through the REST API as the Start button does.
  Servers run the minimal single-user stand-in of the overhead benchmark (``mini_singleuser.py``):
  the figures are the hub's and gpulab's, not JupyterLab's. The first servers hold one simulated GPU
  each (``--gpus`` in the inventory), the others none. As root each person is a system account
  (``local.system_users: auto``, servers in their own cgroups), as on a lab's host;
- a year of history written into gpulab's tables before the measurements: ``--records`` usage
  records (synthetic: people, start times spread over 365 days, lengths drawn from a log-normal with a
  median of 1.5 h and a cap of 3 days, 0-4 GPUs; written in the order they started, as a hub writes
  them), ``--events`` events (queue, refusals, culls,
  warnings) and the GPU samples the culler keeps (``culler.keep_samples_hours`` of samples, one per
  device per culler interval). The history is synthetic; its size and shape are what matters here.

What it measures (each page ``--requests`` times, 200 by default so that the p99 is not simply the
slowest answer, one request at a time, people's own tokens; the slowest is printed too):
the spawn form (``/hub/spawn/<user>/<new server>``, gpulab's form with quota, prices and free GPUs),
stock JupyterHub's own token page on the same hub (``/hub/token``: a page of JupyterHub's that gpulab
does not change, the baseline for "what a hub page costs here"), a person's billing page, the admin
billing page (30 days, everyone), the quota page, the Prometheus scrape, the culler's round (from
its own log line, ``cull round: ... ms``) and a year's CSV export (everyone, 365 days: its time and
the billing service's peak memory above its level before the export, sampled every 20 ms).

Run: ``.venv/bin/python benchmarks/scale.py`` (about 10 minutes on 2 cores; ``--servers 100
--records 100000`` for a quick look; ``--csv-only --servers 0`` for the year's CSV alone, its
export ``--csv-runs`` times, the pages' figures then ``nan``). Not a test: it prints figures and
the goals beside them.
Last line, for scripts:
``scale: form_p99_ms=<n> stock_page_p99_ms=<n> billing_user_p99_ms=<n> billing_admin_p99_ms=<n>
quota_p99_ms=<n> metrics_p99_ms=<n> culler_round_ms=<n> csv_year_s=<n> csv_peak_mb=<n>``
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from spawn_overhead import Accounts, bench_env, pct, wait_ready  # noqa: E402

from hub_plugins.gpu.simulated import parse_spec  # noqa: E402
from hub_plugins.store.db import Database  # noqa: E402
from hub_plugins.store.models import Event, GPUSample, UsageRecord  # noqa: E402
from tests.support.hubproc import Hub  # noqa: E402

UTC = dt.timezone.utc
NAMES = ["", "s1", "s2"]  # each person's servers, in the order they are started


def history(db_url: str, users: list[str], n_records: int, n_events: int, devices: list[str],
            interval_s: float, keep_hours: float, seed: int) -> None:
    """A year of synthetic usage, events and the culler's recent GPU samples, in bulk."""
    rng = random.Random(seed)
    now = dt.datetime.now(UTC).replace(tzinfo=None)
    year = 365 * 86400
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as c:
            chunk = []
            # in the order they started, as a hub writes them (record ids follow start times)
            ages = sorted((rng.uniform(3 * 86400, year) for _ in range(n_records)), reverse=True)
            for i, age in enumerate(ages):
                start = now - dt.timedelta(seconds=age)
                length = min(3 * 86400, rng.lognormvariate(math.log(5400), 1.2))
                stop = start + dt.timedelta(seconds=length)
                gpus = rng.choice((0, 1, 1, 1, 2, 4))
                chunk.append(dict(
                    spawn_id=f"hist-{i}-{secrets.token_hex(4)}", user_id=0, user_name=rng.choice(users),
                    server_name=rng.choice(NAMES), profile="bench", project="", gpu_type="A100-80GB" if gpus else "",
                    gpu_count=gpus, equivalents=str(gpus), devices=",".join(map(str, range(gpus))),
                    device_keys="", host="", rate_per_hour=2.0, minimum_seconds=60, runtime_limit_s=None,
                    queued_seconds=0.0, started_at=start, ready_at=start + dt.timedelta(seconds=3),
                    last_seen_at=stop, stopped_at=stop,
                    stop_reason=rng.choice(("user", "user", "user", "gpu_idle", "inactive", "failed")),
                    pending_reason="", stopped_by="", util_sum=rng.uniform(0, 100) * 10, util_samples=10,
                    energy_wh=0.0, idle_since=None, warned=""))
                if len(chunk) == 20000:
                    c.execute(sa.insert(UsageRecord.__table__), chunk)
                    chunk = []
            if chunk:
                c.execute(sa.insert(UsageRecord.__table__), chunk)
            kinds = (("queued", ""), ("dequeued", ""), ("refused", "quota"), ("refused", "capacity"),
                     ("culled", "gpu_idle"), ("warned", "gpu_idle"))
            events = []
            for _ in range(n_events):
                kind, reason = rng.choice(kinds)
                events.append(dict(at=now - dt.timedelta(seconds=rng.uniform(3600, year)), kind=kind, reason=reason,
                                   user_name=rng.choice(users), server_name="", detail="",
                                   value=rng.uniform(0, 3600) if kind == "dequeued" else 0.0))
            for j in range(0, len(events), 20000):
                c.execute(sa.insert(Event.__table__), events[j:j + 20000])
            samples = []
            steps = int(keep_hours * 3600 / interval_s)
            for key in devices:
                for k in range(steps):
                    samples.append(dict(device_key=key, at=now - dt.timedelta(seconds=k * interval_s),
                                        util=rng.uniform(0, 100), memory_used_mib=1000.0, power_w=200.0))
            for j in range(0, len(samples), 20000):
                c.execute(sa.insert(GPUSample.__table__), samples[j:j + 20000])
    finally:
        engine.dispose()


PASSWORD = "scale-benchmark-" + secrets.token_hex(4)


def xsrf_of(s: requests.Session, url: str) -> str:
    r = s.get(url, timeout=60)
    r.raise_for_status()
    return s.cookies.get("_xsrf") or re.search(r'name="_xsrf" value="([^"]+)"', r.text).group(1)


def browser(hub: Hub, name: str, approver: requests.Session | None) -> requests.Session:
    """A signed-in person's session, as a browser has it: signed up with the built-in accounts,
    approved by the admin (``approver``; none for the admin), signed in, and through each
    service's OAuth once (so that the measured requests are the pages, not the sign-in)."""
    s = requests.Session()
    s.post(f"{hub.url}/hub/signup", timeout=60, data={
        "username": name, "signup_password": PASSWORD, "signup_password_confirmation": PASSWORD,
        "email": f"{name}@example.org", "_xsrf": xsrf_of(s, f"{hub.url}/hub/signup")})
    if approver is not None:
        approver.get(f"{hub.url}/hub/authorize/{name}", timeout=60).raise_for_status()
    r = s.post(f"{hub.url}/hub/login", allow_redirects=False, timeout=60,
               data={"username": name, "password": PASSWORD, "_xsrf": xsrf_of(s, f"{hub.url}/hub/login")})
    if r.status_code != 302:
        raise RuntimeError(f"{name} could not sign in: {r.status_code} {r.text[:300]}")
    for path in ("/services/billing/", "/services/quotas/"):
        s.get(hub.url + path, timeout=60).raise_for_status()
    return s


def timed(s: requests.Session, url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = s.get(url, allow_redirects=False, timeout=120)
        out.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"GET {url}: {r.status_code} {r.headers.get('Location', '')} {r.text[:300]}")
    return out


def service_pid(name: str, hub: Hub) -> int:
    """The process of a hub-managed service (its module on the command line, this hub's API URL)."""
    marker = f"JUPYTERHUB_API_URL=http://127.0.0.1:{hub.hub_port}/hub/api".encode()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes()
            # the service itself, not the lifeline that watches it (whose command line names it too)
            if (f"services.{name}".encode() in cmd and b"lifeline" not in cmd
                    and marker in (p / "environ").read_bytes().split(b"\0")):
                return int(p.name)
        except OSError:
            continue
    raise RuntimeError(f"no process for service {name}")


def wait_settled(db_url: str, t0: float, timeout: float = 900) -> float:
    """Until every closed record's charge is settled; seconds since ``t0``."""
    engine = sa.create_engine(db_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with engine.connect() as c:
                left = c.scalar(sa.text("SELECT count(*) FROM gpulab_usage WHERE stopped_at IS NOT NULL "
                                        "AND charged_until IS NULL"))
            if not left:
                return time.perf_counter() - t0
            time.sleep(1)
        raise RuntimeError(f"{left} records still not settled after {timeout} s")
    finally:
        engine.dispose()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """CPU seconds a process has used (user and system): its work, whatever else the machine runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def csv_export(hub: Hub, s: requests.Session) -> tuple[float, float, int, float]:
    """A year's CSV for everyone: seconds, the billing service's peak RSS above its level before
    (MB), the lines received, and the service's CPU seconds for it."""
    pid = service_pid("billing", hub)
    base, peak, done = rss_mb(pid), [0.0], threading.Event()
    cpu0 = cpu_s(pid)

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.02)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    since = (dt.datetime.now(UTC) - dt.timedelta(days=365)).date().isoformat()
    t0 = time.perf_counter()
    lines = 0
    with s.get(f"{hub.url}/services/billing/api/usage", params={"format": "csv", "since": since},
               stream=True, timeout=600) as r:
        r.raise_for_status()
        for chunk in r.iter_content(1 << 16):
            lines += chunk.count(b"\n")
    elapsed = time.perf_counter() - t0
    cpu = cpu_s(pid) - cpu0
    done.set()
    t.join()
    print(f"CSV: {elapsed:.2f} s, billing service pid {pid}: {cpu:.2f} s of CPU, {base:.1f} MB before, "
          f"{peak[0]:.1f} MB at most during; load average {os.getloadavg()[0]:.1f}", flush=True)
    return elapsed, max(0.0, peak[0] - base), lines, cpu


def culler_rounds(hub: Hub, after: int) -> list[float]:
    text = hub.log_path.read_text(errors="replace")[after:]
    return [float(m) for m in re.findall(r"cull round: .*? in (\d+(?:\.\d+)?) ms", text)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--servers", type=int, default=500, help="running servers (at most 3 per person)")
    ap.add_argument("--gpus", type=int, default=64, help="simulated GPUs; the first servers hold one each")
    ap.add_argument("--records", type=int, default=500_000, help="usage records of the year")
    ap.add_argument("--events", type=int, default=100_000)
    # a p99 needs at least 100 answers: of 50 it is the slowest one (the table shows that too)
    ap.add_argument("--requests", type=int, default=200, help="requests per page")
    ap.add_argument("--db-url", default=None, help="gpulab's database (default: SQLite in the hub's state)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--csv-only", action="store_true", help="measure the year's CSV export only (no pages)")
    ap.add_argument("--csv-runs", type=int, default=1, help="exports in a row (the last line: the fastest)")
    args = ap.parse_args()
    if args.servers > 3 * args.users:
        ap.error("at most 3 servers per person")
    root = Path(tempfile.mkdtemp(prefix="gpulab-scale-", dir="/tmp"))
    profiles = bench_env(root)
    accounts = Accounts(root, args.users) if os.geteuid() == 0 else None
    local = ({"system_users": "auto", "system_user_prefix": accounts.prefix, "home_root": str(accounts.homes)}
             if accounts else {"system_users": "never"})
    interval = 60
    hub = Hub(root / "hub", inventory=f"{args.gpus}xA100-80GB", profiles_dir=str(profiles), db_url=args.db_url,
              quotas={"default": {"max_gpus": 1, "max_servers": 3}}, local=local,
              extra={"culler": {"interval_seconds": interval}})
    hub.config["hub"].update(poll_interval=30, concurrent_spawn_limit=0, log_level="WARN")
    hub.config["default_profile"] = "bench"
    users = [f"u{j:03d}" for j in range(args.users)]
    try:
        # the year is there before the hub starts, as on a hub upgraded to this version: the
        # billing service settles its charges at start-up (timed below), pages wait for nothing
        t0 = time.perf_counter()
        hub.state_dir.mkdir(parents=True, exist_ok=True)
        db = Database(hub.gpulab_db_url)
        db.upgrade()
        db.dispose()
        devices = [d.key for d in parse_spec(f"{args.gpus}xA100-80GB").devices]
        history(hub.gpulab_db_url, users, args.records, args.events, devices, interval, 6, args.seed)
        print(f"history: {args.records} usage records, {args.events} events, {len(devices) * 360} GPU samples "
              f"written in {time.perf_counter() - t0:.0f} s", flush=True)
        t0 = time.perf_counter()
        hub.start(timeout=120)
        hub.api("POST", "/users", {"usernames": users})
        settle_s = wait_settled(hub.gpulab_db_url, t0)
        print(f"hub up; the billing service settled the year's charges {settle_s:.0f} s after the hub's start",
              flush=True)

        # servers: person j's k-th server for k = 0, 1, 2 until there are enough
        plan = [(users[j], NAMES[k]) for k in range(3) for j in range(args.users)][:args.servers]
        t0 = time.perf_counter()

        def spawn(i_item):
            i, (user, name) = i_item
            body = {"profile": "bench", "gpus": 1 if i < args.gpus else 0}
            st, payload = hub.spawn(user, body, name)
            if st == 202:
                wait_ready(hub, user, hub.token, name)
            elif st != 201:
                raise RuntimeError(f"spawn {user}/{name}: {st} {payload}")

        with ThreadPoolExecutor(20) as pool:
            list(pool.map(spawn, enumerate(plan)))
        print(f"servers: {len(plan)} running after {time.perf_counter() - t0:.0f} s", flush=True)
        log_mark = hub.log_path.stat().st_size

        admin = browser(hub, "admin", None)
        results: dict[str, list[float]] = {k: [] for k in ("form", "stock", "user", "admin", "quota", "metrics")}
        # people with a free server slot see the form (the others are at their quota of servers)
        free = [u for u in users if sum(1 for _u, n in plan if _u == u) < 3] or users
        people = {} if args.csv_only else {u: browser(hub, u, admin) for u in free[: min(len(free), 10)]}
        per = max(1, args.requests // max(1, len(people)))
        for u, s in people.items():  # interleaved, so that drift hits every page alike
            results["form"] += timed(s, f"{hub.url}/hub/spawn/{u}/new1", per)
            results["stock"] += timed(s, f"{hub.url}/hub/token", per)
            results["user"] += timed(s, f"{hub.url}/services/billing/", per)
            results["quota"] += timed(s, f"{hub.url}/services/quotas/", per)
            results["admin"] += timed(admin, f"{hub.url}/services/billing/admin", per)
            results["metrics"] += timed(admin, f"{hub.url}/services/billing/metrics", per)
        csv_s, csv_mb, csv_lines, csv_cpu = min(csv_export(hub, admin) for _ in range(args.csv_runs))
        # the culler's rounds while the pages were read (at least two: wait for them)
        deadline = time.monotonic() + 3 * interval
        while not args.csv_only and len(culler_rounds(hub, log_mark)) < 2 and time.monotonic() < deadline:
            time.sleep(2)
        rounds = culler_rounds(hub, log_mark)
    finally:
        hub.close()
        if accounts:
            accounts.remove()

    p = {k: statistics_p(v) for k, v in results.items()}
    cull = max(rounds) if rounds else float("nan")
    print(f"\nScale: {args.users} people, {len(plan)} running servers ({min(args.gpus, len(plan))} with a GPU), "
          f"{args.records} usage records over a year, {args.events} events; {len(results['form'])} requests "
          f"per page; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end\n")
    print(f"{'':26}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}  goal")
    for key, label, goal in (
        ("form", "spawn form", "p99 within 50 ms of stock"), ("stock", "stock page (/hub/token)", "baseline"),
        ("user", "billing, a person", "p99 < 500"), ("admin", "billing, admin (30 days)", "p99 < 500"),
        ("quota", "quota page", "p99 < 500"), ("metrics", "metrics scrape", "p99 < 500"),
    ):
        print(f"{label:26}{p[key][0]:9.1f}{p[key][1]:9.1f}{max(results[key], default=math.nan):9.1f}  {goal}")
    print(f"{'culler round':26}{cull:18.1f}  < 2000 (worst of {len(rounds)} rounds)")
    print(f"{'CSV, a year, everyone':26}{csv_s:17.2f}s  < 10 s; {csv_lines - 1} lines, "
          f"peak {csv_mb:.1f} MB above the service's level before (flat memory), {csv_cpu:.1f} s of its CPU")
    print(f"scale: form_p99_ms={p['form'][1]:.1f} stock_page_p99_ms={p['stock'][1]:.1f} "
          f"billing_user_p99_ms={p['user'][1]:.1f} billing_admin_p99_ms={p['admin'][1]:.1f} "
          f"quota_p99_ms={p['quota'][1]:.1f} metrics_p99_ms={p['metrics'][1]:.1f} culler_round_ms={cull:.1f} "
          f"csv_year_s={csv_s:.2f} csv_peak_mb={csv_mb:.1f}")
    return 0


def statistics_p(values: list[float]) -> tuple[float, float]:
    if not values:  # --csv-only
        return float("nan"), float("nan")
    return statistics.median(values), pct(values, 0.99)


if __name__ == "__main__":
    sys.exit(main())
