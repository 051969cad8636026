"""Allocator decisions per second and latency: gpulab's allocator on SQLite and PostgreSQL beside
a naive file-lock + JSON-state allocator, measured in the same run on the same workload, with 1
process and with 8 concurrent processes.

Workload: 10,000 decisions on an 8-GPU host, a random mix of allocations (1-2 GPUs for a new
server, quota-checked) and releases, keeping about half the GPUs busy, so every allocator sees
refusals, fragmentation and releases. Each decision is one state change (or refusal). With
several processes each has its own users and its share of the decisions, on the same GPUs.

Each allocator is compared with the baseline of its own durability, both shown:

- survives a killed process, not a power cut: the baseline writing a temp file and renaming it
  (no fsync), and gpulab's SQLite as it runs in production (WAL, ``synchronous=NORMAL``);
- survives a power cut (each decision on disk before it is answered): the baseline with an
  fsync of the file and of its directory, gpulab's SQLite with ``synchronous=FULL`` (an fsync of
  the WAL at each commit; the same code, one pragma), and PostgreSQL with fsync on (its default).

PostgreSQL's rows also say how much CPU a decision costs, in the allocator's processes and in
the database server, and so the most decisions/s this machine's CPUs allow when both share them
(as here): a figure near that ceiling is bound by the CPUs, not by the allocator's locking.

Run: ``make bench`` or ``.venv/bin/python benchmarks/allocator.py [--decisions N] [--no-postgres]``.
Not a test: it prints figures and ratios, it asserts nothing. Its last line, for scripts:
``allocator: sqlite_vs_durable=<x> sqlite_vs_rename=<x> postgres_8_per_s=<n>`` (SQLite FULL
against the fsync baseline, SQLite NORMAL against the rename baseline, the worse of the two rounds).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub_plugins.gpu.placement import place  # noqa: E402
from hub_plugins.gpu.simulated import parse_spec  # noqa: E402
from hub_plugins.quota import Decision  # noqa: E402
from hub_plugins.store.allocator import Allocator, NoCapacity, Owner, QuotaRefused  # noqa: E402
from hub_plugins.store.db import Database  # noqa: E402

INV = parse_spec("8xA100-80GB")
MAX_GPUS_PER_USER = Fraction(2)


class FileLockJSONAllocator:
    """What one writes without a database: flock a lock file, read the JSON state, decide, write
    the state to a temp file and rename it over the old one. Same placement and quota rule.
    ``durable``: fsync the temp file before the rename and the directory after it, so that a
    decision is on disk before it is answered (what a database's commit promises)."""

    def __init__(self, directory: str, durable: bool = False):
        self.durable = durable
        self.dir = directory
        self.state = os.path.join(directory, "allocations.json")
        self.lock = os.path.join(directory, "allocations.lock")
        with open(self.lock, "w") as lf:
            fcntl.flock(lf, fcntl.LOCK_EX)
            if not os.path.exists(self.state):
                with open(self.state, "w") as f:
                    json.dump({}, f)

    def _locked(self, fn):
        with open(self.lock, "w") as lf:
            fcntl.flock(lf, fcntl.LOCK_EX)
            try:
                with open(self.state) as f:
                    state = json.load(f)
                result, changed = fn(state)
                if changed:
                    tmp = self.state + ".tmp"
                    with open(tmp, "w") as f:
                        json.dump(state, f)
                        if self.durable:
                            f.flush()
                            os.fsync(f.fileno())
                    os.replace(tmp, self.state)
                    if self.durable:
                        fd = os.open(self.dir, os.O_RDONLY)
                        try:
                            os.fsync(fd)
                        finally:
                            os.close(fd)
                return result
            finally:
                fcntl.flock(lf, fcntl.LOCK_UN)

    def allocate(self, owner: Owner, count: int):
        def decide(state):
            key = f"{owner.user_id}/{owner.server_name}"
            used = sum(len(v["devices"]) for k, v in state.items() if v["user"] == owner.user_id)
            if used + count > MAX_GPUS_PER_USER:
                raise QuotaRefused(Decision(False, "gpus", "over quota"))
            taken = {d for v in state.values() for d in v["devices"]}
            chosen = place(INV.free(taken), count, "A100-80GB")
            if chosen is None:
                raise NoCapacity("A100-80GB", count, 0, 8)
            state[key] = {"user": owner.user_id, "devices": [d.key for d in chosen]}
            return chosen, True

        return self._locked(decide)

    def release(self, owner: Owner):
        def drop(state):
            return state.pop(f"{owner.user_id}/{owner.server_name}", None), True

        return self._locked(drop)


class GPULabAllocator:
    def __init__(self, url: str, synchronous: str | None = None):
        self.db = Database(url)
        if synchronous:  # after gpulab's own pragmas (db.py), on every connection
            sa.event.listen(self.db.engine, "connect",
                            lambda conn, _rec: conn.execute(f"PRAGMA synchronous={synchronous}"))
        self.db.upgrade()
        self.alloc = Allocator(self.db)

    def allocate(self, owner: Owner, count: int):
        def quota(usage, _gpu_type):
            used = sum((u.equivalents for u in usage), Fraction(0))
            ok = used + count <= MAX_GPUS_PER_USER
            return Decision(ok, "" if ok else "gpus", "" if ok else "over quota")

        return self.alloc.allocate(owner, "minimal", "A100-80GB", count, INV, quota)

    def release(self, owner: Owner):
        return self.alloc.release(owner)


def workload(n: int, seed: int = 1, user_base: int = 0):
    """The same sequence of decisions for every allocator."""
    rng = random.Random(seed)
    live: list[Owner] = []
    serial = 0
    for _ in range(n):
        if live and (len(live) > 3 and rng.random() < 0.55 or rng.random() < 0.3):
            yield "release", live.pop(rng.randrange(len(live))), 0
        else:
            serial += 1
            owner = Owner(user_base + rng.randrange(40), "u", f"s{serial}")
            live.append(owner)
            yield "allocate", owner, rng.choice((1, 1, 2))


def _decide(allocator, n: int, seed: int = 1, user_base: int = 0):
    lat = []
    outcomes = {"granted": 0, "refused": 0, "released": 0}
    for op, owner, count in workload(n, seed, user_base):
        t0 = time.perf_counter()
        if op == "allocate":
            try:
                allocator.allocate(owner, count)
                outcomes["granted"] += 1
            except (NoCapacity, QuotaRefused):
                outcomes["refused"] += 1
        else:
            allocator.release(owner)
            outcomes["released"] += 1
        lat.append(time.perf_counter() - t0)
    return lat, outcomes


def _worker(make, n, seed, out):
    out.put(_decide(make(), n, seed, user_base=1000 * seed))


def _cpu(who: int) -> float:
    used = resource.getrusage(who)
    return used.ru_utime + used.ru_stime


def run(make, n: int, workers: int = 1, server=None) -> dict:
    """``make()`` builds the allocator (in each worker process when ``workers`` > 1). ``server``:
    the database server whose CPU time to count beside the clients' (PostgreSQL)."""
    who = resource.RUSAGE_SELF if workers == 1 else resource.RUSAGE_CHILDREN
    cpu0, server0 = _cpu(who), server.cpu_seconds() if server else 0.0
    start = time.perf_counter()
    if workers == 1:
        lat, outcomes = _decide(make(), n)
    else:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        out = ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(make, n // workers, w + 1, out)) for w in range(workers)]
        for p in procs:
            p.start()
        parts = [out.get(timeout=1800) for _ in procs]
        for p in procs:
            p.join()
            if p.exitcode:
                raise RuntimeError(f"a benchmark worker failed (exit {p.exitcode})")
        lat = [x for part, _ in parts for x in part]
        outcomes = {k: sum(o[k] for _, o in parts) for k in parts[0][1]}
    wall = time.perf_counter() - start
    lat.sort()
    return {
        "p50_ms": statistics.median(lat) * 1e3,
        "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1e3,
        "per_s": len(lat) / wall,
        # CPU per decision, of the allocator's processes and of the database server
        "client_cpu_ms": (_cpu(who) - cpu0) / len(lat) * 1e3,
        "server_cpu_ms": (server.cpu_seconds() - server0) / len(lat) * 1e3 if server else 0.0,
        **outcomes,
    }


def commit_floor_ms(url: str, n: int = 300) -> float:
    """Median cost of the smallest durable write on this database (one row in, one out)."""
    eng = sa.create_engine(url)
    with eng.begin() as c:
        c.execute(sa.text("CREATE TABLE IF NOT EXISTS bench_floor (k integer)"))
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        with eng.begin() as c:
            c.execute(sa.text("INSERT INTO bench_floor VALUES (1)"))
            c.execute(sa.text("DELETE FROM bench_floor"))
        lat.append(time.perf_counter() - t0)
    eng.dispose()
    return statistics.median(lat) * 1e3


BASE = "baseline: file lock + JSON, rename"
DURABLE = "baseline: file lock + JSON, fsync"
SQLITE = "gpulab: SQLite (WAL, sync NORMAL)"
SQLITE_FULL = "gpulab: SQLite (WAL, sync FULL)"
POSTGRES = "gpulab: PostgreSQL (fsync on)"
# which baseline each allocator is held against: the one of its durability
AGAINST = {BASE: BASE, SQLITE: BASE, DURABLE: DURABLE, SQLITE_FULL: DURABLE, POSTGRES: DURABLE}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--decisions", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=8, help="processes for the concurrent round")
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    n = args.decisions
    tmp = tempfile.mkdtemp(prefix="gpulab-bench-")
    pg = None
    if not args.no_postgres:
        from tests.support.pgserver import PGServer, pg_bindir

        if pg_bindir():
            pg = PGServer(fsync=True).start()
        else:
            print("PostgreSQL not installed: skipping it (apt-get install postgresql)")
    makers = {
        BASE: lambda d: (lambda: FileLockJSONAllocator(d)),
        DURABLE: lambda d: (lambda: FileLockJSONAllocator(d, durable=True)),
        SQLITE: lambda d: (lambda: GPULabAllocator(f"sqlite:///{d}/gpulab.sqlite")),
        SQLITE_FULL: lambda d: (lambda: GPULabAllocator(f"sqlite:///{d}/gpulab.sqlite", "FULL")),
    }
    if pg:
        makers[POSTGRES] = lambda d: (
            lambda url=pg.create_db(f"bench_{os.path.basename(d)}"): GPULabAllocator(url))
    summary = {}
    try:
        for workers in (1, args.workers):
            results = {}
            for name, maker in makers.items():
                d = tempfile.mkdtemp(dir=tmp)
                make = maker(d)
                make()  # create the state (schema, file) before the clock starts
                results[name] = run(make, n, workers, pg if name == POSTGRES else None)
            print(f"\nAllocator: {n} decisions on 8 simulated GPUs, {workers} process(es), same workload, "
                  f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
            print(f"{'allocator':36} {'p50 ms':>8} {'p99 ms':>8} {'decisions/s':>12} {'vs its baseline':>16}"
                  "  granted/refused/released")
            for name, r in results.items():
                ratio = r["per_s"] / results[AGAINST[name]]["per_s"]
                print(f"{name:36} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['per_s']:12.0f} {ratio:15.2f}x  "
                      f"{r['granted']}/{r['refused']}/{r['released']}")
            summary[workers] = results
            if pg:
                r = results[POSTGRES]
                cpu = r["client_cpu_ms"] + r["server_cpu_ms"]
                print(f"PostgreSQL's CPU per decision: {r['client_cpu_ms']:.2f} ms in the allocator's "
                      f"process(es) + {r['server_cpu_ms']:.2f} ms in the database = {cpu:.2f} ms; with "
                      f"both on this machine's {os.cpu_count()} CPUs that allows at most "
                      f"{os.cpu_count() / cpu * 1e3:.0f} decisions/s")
        if pg:
            print(f"\nContext: the smallest durable write (insert + delete one row) costs "
                  f"{commit_floor_ms(pg.create_db('floor')):.3f} ms on this PostgreSQL (fsync on) and "
                  f"{commit_floor_ms(f'sqlite:///{tmp}/floor.sqlite'):.3f} ms on plain SQLite.")
    finally:
        if pg:
            pg.stop()
    # the goals: SQLite at least its baseline's speed in both classes, in both rounds (worst shown)
    vs = min(summary[w][SQLITE]["per_s"] / summary[w][BASE]["per_s"] for w in summary)
    vs_full = min(summary[w][SQLITE_FULL]["per_s"] / summary[w][DURABLE]["per_s"] for w in summary)
    pg_rate = summary[args.workers][POSTGRES]["per_s"] if pg else 0
    print(f"\nallocator: sqlite_vs_durable={vs_full:.2f} sqlite_vs_rename={vs:.2f} "
          f"postgres_{args.workers}_per_s={pg_rate:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
