"""Trace-driven utilisation: gpulab (queue + fair share + GPU-idle culling) against a baseline
(first-come-first-served, refuse when full, activity-only culling) on the Alibaba "openb" GPU
trace (../shared/data/alibaba-openb, 8,152 tasks), replayed onto a configurable cluster.

How the trace becomes notebook sessions (stated, because the trace has no notebooks in it):

- every task with GPUs is a session asking for ``num_gpu`` whole GPUs on one host (tasks that
  share a fraction of a GPU ask for a whole one); its *active* time is its trace duration, capped
  at 24 h (tasks the trace shows running until its end would otherwise run for months);
- arrivals keep the trace's order and relative spacing, compressed so that the work offered
  (active time plus idle tails) is ``--load`` times what the cluster can serve;
- idle gaps are synthetic: after its active time a session stays open, GPUs allocated and idle,
  with probability 0.6, for a log-normal time (median 2 h, capped at 24 h) before its user stops
  it; in half of those idle tails the user's browser stays open, so JupyterHub still sees activity.

Policies (the same pure code as the hub: ``gpu.placement.place`` for placement,
``queue.order`` for the queue, ``services/culler/decide.py``'s timeouts):

- baseline: a request that does not fit the free GPUs is refused (lost); an idle server is
  stopped 60 min after its last activity, so an idle tail with an open browser is never stopped;
- gpulab: a request that does not fit waits in the queue (fair share, backfill, the head
  protected after 10 min, at most 24 h); a server whose GPUs are idle is stopped after 30 min
  (15 min while more than 80% of GPUs are allocated), open browser or not.

Prints, per policy: allocated GPU-hours / available, useful (active) GPU-hours served, idle
GPU-hours reclaimed vs the physical bound (sum of idle tails minus the policy's timeout), queue
wait (mean, p95), refusals. Not a test: it prints figures.

Run: ``.venv/bin/python benchmarks/trace_utilisation.py [--hosts 8 --gpus-per-host 8 --load 1.2]``
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import heapq
import math
import random
import statistics
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hub_plugins.gpu.placement import place  # noqa: E402
from hub_plugins.gpu.simulated import parse_spec  # noqa: E402
from hub_plugins.queue.order import Waiting, may_start, order  # noqa: E402

TRACE = ROOT.parent / "shared" / "data" / "alibaba-openb" / "openb_pods.csv"
TYPE = "A100-80GB"
H = 3600.0


@dataclass
class Session:
    id: int
    user: str
    arrival: float
    gpus: int
    active: float  # seconds of real GPU work
    tail: float  # seconds open and idle after it (0: stopped at once)
    browser_open: bool
    idle_at: float = 0.0  # when its active time ended


def load_sessions(path: Path, max_gpus: int, seed: int) -> list[Session]:
    rng = random.Random(seed)
    out = []
    with open(path) as f:
        for row in csv.DictReader(f):
            gpus = int(row["num_gpu"])
            if gpus == 0 and int(row["gpu_milli"] or 0) == 0:
                continue
            gpus = max(1, gpus)
            if gpus > max_gpus:
                continue
            start = int(row["scheduled_time"] or row["creation_time"])
            active = min(24 * H, max(60.0, int(row["deletion_time"]) - start))
            tail = min(24 * H, rng.lognormvariate(math.log(2 * H), 1.0)) if rng.random() < 0.6 else 0.0
            user = f"u{zlib.crc32(row['name'].encode()) % 60:02d}"  # the trace has no users: 60 synthetic ones
            out.append(Session(len(out), user, float(row["creation_time"]), gpus, active, tail, rng.random() < 0.5))
    out.sort(key=lambda s: (s.arrival, s.id))
    return out


def compress(sessions: list[Session], capacity: int, load: float) -> float:
    """Scale arrival gaps so the offered work is ``load`` x capacity over the arrival span."""
    work = sum(s.gpus * (s.active + s.tail) for s in sessions)
    span = sessions[-1].arrival - sessions[0].arrival
    factor = work / (load * capacity * span)
    t0 = sessions[0].arrival
    for s in sessions:
        s.arrival = (s.arrival - t0) * factor
    return factor


@dataclass
class Result:
    allocated_gpu_s: float = 0.0
    useful_gpu_s: float = 0.0
    idle_gpu_s: float = 0.0  # idle tails that stayed allocated
    reclaimed_gpu_s: float = 0.0
    bound_gpu_s: float = 0.0
    waits: list[float] = field(default_factory=list)
    refused: int = 0
    refused_gpu_h: float = 0.0
    abandoned: int = 0
    served: int = 0


class Sim:
    def __init__(self, sessions, hosts: int, per_host: int, policy: str):
        self.inv = parse_spec(", ".join(f"{per_host}x{TYPE}@n{h}" for h in range(hosts)))
        self.capacity = len(self.inv.devices)
        self.policy = policy
        self.sessions = sessions
        self.taken: dict[str, int] = {}  # device key -> session id
        self.events: list = []
        self.queue: dict[int, Session] = {}
        self.recent: dict[str, list[tuple[float, float]]] = {}  # user -> [(end, gpu-hours)]
        self.r = Result()
        self.seq = 0

    def push(self, t, kind, sid):
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, sid))

    def free(self):
        return self.inv.free(set(self.taken))

    def start(self, s: Session, now: float) -> bool:
        devs = place(self.free(), s.gpus, TYPE)
        if devs is None:
            return False
        for d in devs:
            self.taken[d.key] = s.id
        s.devices = [d.key for d in devs]
        s.started = now
        self.r.served += 1
        self.r.useful_gpu_s += s.gpus * s.active
        self.push(now + s.active, "idle", s.id)
        return True

    def stop(self, s: Session, now: float):
        for k in s.devices:
            self.taken.pop(k, None)
        held = now - s.started
        self.r.allocated_gpu_s += s.gpus * held
        idle = max(0.0, held - s.active)
        self.r.idle_gpu_s += s.gpus * idle
        self.r.reclaimed_gpu_s += s.gpus * (s.tail - idle)
        self.recent.setdefault(s.user, []).append((now, s.gpus * held / H))
        s.stopped = True
        self.dispatch(now)

    def timeout(self, now: float) -> float:
        if self.policy == "baseline":
            return 60 * 60.0
        scarce = len(self.taken) / self.capacity > 0.8
        return (15 if scarce else 30) * 60.0

    def on_idle(self, s: Session, now: float):
        if s.tail <= 0:
            self.stop(s, now)
            return
        self.push(now + s.tail, "leave", s.id)  # the user comes back and stops it
        # the bound: everything past the shortest timeout the policy ever uses
        timeout = 60 * 60.0 if self.policy == "baseline" else 15 * 60.0
        self.r.bound_gpu_s += s.gpus * max(0.0, s.tail - timeout)
        if self.policy == "baseline":
            if not s.browser_open:  # activity-only: an open browser keeps it "active"
                self.push(now + self.timeout(now), "cull", s.id)
        else:
            s.idle_at = now
            self.push(now + 15 * 60.0, "gpu_check", s.id)

    def fair_weight(self, user: str, now: float) -> float:
        week = now - 7 * 24 * H
        items = [x for x in self.recent.get(user, []) if x[0] >= week]
        self.recent[user] = items
        return sum(h for _, h in items)

    def dispatch(self, now: float):
        """Start waiting requests, in the hub's order, while they fit (one sort per release)."""
        if self.policy == "baseline" or not self.queue or len(self.taken) == self.capacity:
            return
        weights = {u: self.fair_weight(u, now) for u in {s.user for s in self.queue.values()}}
        items = order([Waiting(s.id, s.user, dt.datetime.fromtimestamp(s.queued, dt.timezone.utc), s.gpus,
                               (TYPE,), weights[s.user]) for s in self.queue.values()])
        nowdt = dt.datetime.fromtimestamp(now, dt.timezone.utc)
        by_count: dict[int, bool] = {}

        def fits(item):  # one GPU type: whether a request fits depends only on its size
            if item.count not in by_count:
                by_count[item.count] = place(self.free(), item.count, TYPE) is not None
            return by_count[item.count]

        while items:
            # may_start() approves exactly the first request that fits (or only the head once it
            # has waited past reserve_after): find it in one pass, then let may_start confirm
            if nowdt - items[0].created_at > dt.timedelta(minutes=10):
                pick = items[0] if fits(items[0]) else None
            else:
                pick = next((i for i in items if fits(i)), None)
            if pick is None:
                return
            assert may_start(pick.id, items, fits, nowdt)
            items.remove(pick)
            s = self.queue.pop(pick.id)
            self.r.waits.append(now - s.queued)
            self.start(s, now)
            by_count.clear()
            if len(self.taken) == self.capacity:
                return

    def run(self) -> Result:
        for s in self.sessions:
            s.stopped = False
            self.push(s.arrival, "arrive", s.id)
        by_id = {s.id: s for s in self.sessions}
        while self.events:
            now, _, kind, sid = heapq.heappop(self.events)
            s = by_id[sid]
            if kind == "arrive":
                if not self.start(s, now):
                    if self.policy == "baseline":
                        self.r.refused += 1
                        self.r.refused_gpu_h += s.gpus * s.active / H
                    else:
                        s.queued = now
                        self.queue[s.id] = s
                        self.push(now + 24 * H, "abandon", s.id)
            elif kind == "abandon":
                if sid in self.queue:
                    del self.queue[sid]
                    self.r.abandoned += 1
            elif kind == "idle" and not s.stopped:
                self.on_idle(s, now)
            elif kind == "gpu_check" and not s.stopped:
                # the same sums as the times pushed, so float rounding never re-checks forever
                if now >= s.idle_at + self.timeout(now):  # idle 15 min while scarce, or 30 min
                    self.stop(s, now)
                else:
                    self.push(s.idle_at + 30 * 60.0, "gpu_check", s.id)
            elif kind in ("cull", "leave") and not s.stopped:
                self.stop(s, now)
        self.end = now
        return self.r


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trace", default=str(TRACE))
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--gpus-per-host", type=int, default=8)
    ap.add_argument("--load", type=float, default=1.2, help="offered work / cluster capacity")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="replay only the first N sessions (quick runs)")
    args = ap.parse_args()
    if not Path(args.trace).exists():
        print(f"trace not found at {args.trace}: this benchmark needs ../shared/data/alibaba-openb "
              "(or --trace PATH to openb_pods.csv)")
        return 2
    results = {}
    for policy in ("baseline", "gpulab"):
        sessions = load_sessions(Path(args.trace), args.gpus_per_host, args.seed)
        if args.limit:
            sessions = sessions[: args.limit]
        factor = compress(sessions, args.hosts * args.gpus_per_host, args.load)
        sim = Sim(sessions, args.hosts, args.gpus_per_host, policy)
        results[policy] = (sim.run(), sim)
    n = len(sessions)
    print(f"\nTrace: {n} GPU sessions from {Path(args.trace).name}, cluster {args.hosts} x {args.gpus_per_host} GPUs, "
          f"offered load {args.load:g} (arrivals x{factor:.4f}); idle tails synthetic (see the docstring)\n")
    print(f"{'':44}{'baseline':>16}{'gpulab':>16}")

    def row(label, f):
        print(f"{label:44}" + "".join(f"{f(r, sim):>16}" for r, sim in results.values()))

    row("allocated GPU-h / available GPU-h", lambda r, s: f"{r.allocated_gpu_s / (s.capacity * s.end):.1%}")
    row("useful (active) GPU-hours served", lambda r, s: f"{r.useful_gpu_s / H:,.0f}")
    row("idle GPU-hours left allocated", lambda r, s: f"{r.idle_gpu_s / H:,.0f}")
    row("idle GPU-hours reclaimed", lambda r, s: f"{r.reclaimed_gpu_s / H:,.0f}")
    row("  of the bound (idle tails - timeout)", lambda r, s: f"{r.reclaimed_gpu_s / r.bound_gpu_s:.1%}" if r.bound_gpu_s else "-")
    row("sessions served", lambda r, s: f"{r.served:,}")
    row("refused (lost) / abandoned after 24 h", lambda r, s: f"{r.refused:,} / {r.abandoned:,}")
    row("queue wait mean / p95 (min)",
        lambda r, s: f"{statistics.mean(r.waits) / 60:.1f} / {pct(r.waits, .95) / 60:.1f}" if r.waits else "-")
    row("time to serve the trace (days)", lambda r, s: f"{s.end / 86400:.1f}")
    b, g = results["baseline"][0], results["gpulab"][0]
    print(f"\nratios gpulab / baseline: useful GPU-hours x{g.useful_gpu_s / b.useful_gpu_s:.2f}, "
          f"sessions served x{g.served / b.served:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
