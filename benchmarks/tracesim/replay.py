"""Replay sessions on a simulated cluster under one policy (an event simulation).

The decisions are the hub's own pure code: ``queue.discipline.plan`` (who starts, where, who
waits), ``queue.borrow.reclaims`` (which borrowed servers go back), ``gpu.placement.place`` (the
refuse-when-full policies), ``services/culler/decide.py`` (when an idle server is stopped) and
``queue.order.typical_duration`` (the estimate of a running server's end). This module only keeps
time, state and accounts.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections import defaultdict, deque
from dataclasses import dataclass, field

from hub_plugins.gpu.placement import place
from hub_plugins.queue.borrow import RECLAIM_AFTER, reclaims
from hub_plugins.queue.discipline import Request, Rules, Server, plan
from hub_plugins.queue.order import typical_duration
from services.culler import decide as culler

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
RETRY = 15 * 60.0  # a refused user asks again this often...
RECLAIM_GRACE = 10 * 60.0  # a reclaimed server stops this long after its warning
TYPICAL_WINDOW = 30 * 86400.0  # the hub's estimate uses the sessions of the last 30 days
TYPICAL_EVERY = 25  # stops between two refreshes of that median


def at(t: float) -> dt.datetime:
    return EPOCH + dt.timedelta(seconds=t)


@dataclass(frozen=True)
class Policy:
    name: str
    queue: bool  # wait in a queue; False: refused when it does not fit, the user retries
    cull: culler.Settings
    rules: Rules = Rules()
    time_limit: float | None = None  # SLURM-like estimates: running jobs end at this limit
    over_quota: str = "refuse"  # refuse (the user retries) | pend (waits until within quota) | borrow
    shares: int = 0  # >0: a task asking for at most 1/N GPU takes one share of a GPU shared N ways
    cull_every: float = 60.0  # seconds between the culler's rounds
    reclaim_after: dt.timedelta = RECLAIM_AFTER  # a request within quota waits this long before reclaiming


@dataclass
class St:
    """One session's state in one run."""

    types: tuple[str, ...]
    count: int
    weight: float  # GPU-equivalents held when running
    queued_at: float | None = None
    queued_dt: dt.datetime | None = None
    started: float | None = None
    server: Server | None = None
    stopped: bool = False
    borrowed: bool = False
    reclaiming: bool = False
    idle_at: float | None = None
    gave_up: bool = False


@dataclass
class Result:
    offered_gpu_s: float = 0.0
    useful_gpu_s: float = 0.0  # GPU-equivalent-seconds of work done
    demand_gpu_s: float = 0.0  # the same, counting what each task really uses (fractions)
    allocated_gpu_s: float = 0.0
    idle_gpu_s: float = 0.0  # allocated while idle
    lost_reclaim_gpu_s: float = 0.0  # work reclaimed servers did not finish
    waits: dict = field(default_factory=dict)  # session id -> wait (s): served or given up
    served: set = field(default_factory=set)
    abandoned: int = 0
    reclaimed: int = 0
    borrowed: int = 0
    over_quota: int = 0
    end: float = 0.0


class Replay:
    def __init__(self, sessions, inventory, policy: Policy, quota: float, max_wait: float):
        self.sessions = {s.id: s for s in sessions}
        self.inv, self.policy, self.quota, self.max_wait = inventory, policy, quota, max_wait
        self.total = float(sum(d.weight for d in inventory.devices))
        self.interval = policy.cull_every
        self.share_type = next((d.gpu_type for d in inventory.devices if d.kind == "shared"), None)
        self.whole_type = next(d.gpu_type for d in inventory.devices if d.kind == "gpu")
        self.st: dict[int, St] = {}
        self.taken: dict[str, int] = {}
        self.queue: dict[int, None] = {}  # waiting session ids (insertion ordered)
        self.running: dict[int, None] = {}
        self.held = defaultdict(float)  # user -> GPU-eq held within quota
        self.held_all = defaultdict(float)
        self.armed: dict[int, None] = {}
        self.tick_at: float | None = None
        self.events: list = []
        self.seq = 0
        self.r = Result()
        self.durations: deque = deque()  # (end, held seconds) of recent sessions
        self.typical = dt.timedelta(hours=1)
        self.stops = 0
        self.recent: dict[str, deque] = defaultdict(deque)  # user -> (end, GPU-hours)
        self.recent_sum = defaultdict(float)
        self.run_w = defaultdict(float)  # user -> sum of weights running
        self.run_ws = defaultdict(float)  # user -> sum of weight x start

    # -- bookkeeping ------------------------------------------------------------------------
    def push(self, t: float, kind: str, sid: int) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, sid))

    def shape(self, s) -> St:
        if self.policy.shares and self.share_type and s.fractional and s.milli * self.policy.shares <= 1000:
            return St((self.share_type,), 1, 1.0 / self.policy.shares)
        return St((self.whole_type,), s.gpus, float(s.gpus))

    def usage(self, user: str, now: float) -> float:
        """Fair share: GPU-hours over the window (a server that ended within it counts whole)."""
        since = now - self.fair_share_s
        q = self.recent[user]
        while q and q[0][0] < since:
            self.recent_sum[user] -= q.popleft()[1]
        running = (self.run_w[user] * now - self.run_ws[user]) / 3600
        return max(0.0, self.recent_sum[user]) + running

    def within(self, user: str, st: St) -> bool:
        return self.held[user] + st.weight <= self.quota + 1e-9

    def free(self):
        return self.inv.free(set(self.taken))

    # -- starting and stopping --------------------------------------------------------------
    def start(self, sid: int, devices, now: float, borrowed: bool) -> None:
        s, st = self.sessions[sid], self.st[sid]
        for d in devices:
            self.taken[d.key] = sid
        limit = dt.timedelta(seconds=self.policy.time_limit) if self.policy.time_limit else None
        st.server = Server(sid, s.user, tuple(devices), at(now), limit, borrowed)
        st.started, st.borrowed = now, borrowed
        self.queue.pop(sid, None)
        self.running[sid] = None
        if not borrowed:
            self.held[s.user] += st.weight
        self.held_all[s.user] += st.weight
        self.run_w[s.user] += st.weight
        self.run_ws[s.user] += st.weight * now
        self.r.borrowed += borrowed
        self.r.served.add(sid)
        self.r.waits[sid] = now - s.arrival
        self.push(now + s.active, "idle", sid)

    def stop(self, sid: int, now: float, reclaimed: bool = False) -> None:
        s, st = self.sessions[sid], self.st[sid]
        if st.stopped or st.started is None:
            return
        st.stopped = True
        for d in st.server.devices:
            self.taken.pop(d.key, None)
        self.running.pop(sid, None)
        self.armed.pop(sid, None)
        if not st.borrowed:
            self.held[s.user] -= st.weight
        self.held_all[s.user] -= st.weight
        self.run_w[s.user] -= st.weight
        self.run_ws[s.user] -= st.weight * st.started
        held = now - st.started
        work = min(s.active, held)
        self.r.useful_gpu_s += st.weight * work
        self.r.demand_gpu_s += s.demand * work
        self.r.allocated_gpu_s += st.weight * held
        self.r.idle_gpu_s += st.weight * (held - work)
        if reclaimed:
            self.r.reclaimed += 1
            self.r.lost_reclaim_gpu_s += st.weight * (s.active - work)
        self.recent[s.user].append((now, st.weight * held / 3600))
        self.recent_sum[s.user] += st.weight * held / 3600
        self.durations.append((now, held))
        while self.durations and self.durations[0][0] < now - TYPICAL_WINDOW:
            self.durations.popleft()
        self.stops += 1
        if self.stops % TYPICAL_EVERY == 1:  # a median over thousands moves slowly: refresh it now and then
            self.typical = typical_duration([dt.timedelta(seconds=h) for _, h in self.durations])
        self.dispatch(now)

    # -- the policies -----------------------------------------------------------------------
    def arrive(self, sid: int, now: float) -> None:
        s, st = self.sessions[sid], self.st[sid]
        if st.started is not None or st.gave_up:
            return
        over = not self.within(s.user, st)
        if now == s.arrival:
            self.r.over_quota += over
        if over and self.policy.over_quota == "refuse" or not self.policy.queue:
            if not over:
                devices = place(self.free(), st.count, st.types[0])
                if devices is not None:
                    self.start(sid, devices, now, False)
                    return
            self.retry_or_give_up(sid, now)
            return
        st.queued_at, st.queued_dt = now, at(now)
        self.queue[sid] = None
        self.push(max(now, s.arrival + self.max_wait), "abandon", sid)  # patience counts from the first try
        self.dispatch(now)

    def retry_or_give_up(self, sid: int, now: float) -> None:
        s = self.sessions[sid]
        if now + RETRY <= s.arrival + self.max_wait:
            self.push(now + RETRY, "arrive", sid)
        else:
            self.give_up(sid)

    def give_up(self, sid: int) -> None:
        st = self.st[sid]
        st.gave_up = True
        self.queue.pop(sid, None)
        self.r.abandoned += 1
        self.r.waits[sid] = self.max_wait

    def dispatch(self, now: float) -> None:
        if not self.queue:
            return
        pol = self.policy
        free = self.free()
        borrowing = pol.over_quota == "borrow" and any(
            self.st[i].borrowed and not self.st[i].reclaiming for i in self.running)
        if not free and borrowing:
            # a reclaim is for a request that has waited reclaim_after; the queue is in joining
            # order, so its first entry is the one that has waited longest
            borrowing = now - self.st[next(iter(self.queue))].queued_at >= pol.reclaim_after.total_seconds()
        if not free and not borrowing:
            return  # nothing can start (plan would start nobody) and nothing to reclaim
        requests = []
        usage, within = {}, {}
        for sid in list(self.queue):
            s, st = self.sessions[sid], self.st[sid]
            key = (s.user, st.weight)
            if key not in within:
                within[key] = self.within(s.user, st)
            if not within[key] and pol.over_quota == "pend":
                continue  # SLURM: a job over its user's limit pends without blocking others
            if not within[key] and pol.over_quota == "refuse":
                self.queue.pop(sid)  # the hub checks the quota again at start: refused
                self.retry_or_give_up(sid, now)
                continue
            if s.user not in usage:
                usage[s.user] = self.usage(s.user, now) if pol.rules.fair_share else 0.0
            requests.append(Request(sid, s.user, st.queued_dt, st.count, st.types, usage[s.user], within[key]))
        servers = [self.st[i].server for i in self.running]
        p = plan(requests, free, servers, at(now), pol.rules, self.typical)
        for start in p.starts:
            self.start(start.request.id, start.devices, now, not start.request.within_quota)
        if borrowing and any(r.within_quota for r in requests):
            freeing = [d for i in self.running if self.st[i].reclaiming for d in self.st[i].server.devices]
            for _r, victims in reclaims(p, servers, freeing, at(now), pol.reclaim_after):
                for v in victims:
                    self.st[v.id].reclaiming = True
                    self.push(now + RECLAIM_GRACE, "reclaim", v.id)

    # -- the culler -------------------------------------------------------------------------
    def culler_view(self, sid: int, now: float) -> culler.Server:
        s, st = self.sessions[sid], self.st[sid]
        idle = at(st.idle_at)
        return culler.Server(s.user, str(sid), gpu_count=st.count, ready_at=at(st.started),
                             last_activity=at(now) if s.browser_open else idle, cpu_busy_at=idle,
                             gpu_idle_since=idle, gpu_samples=True)

    def arm_time(self, sid: int) -> float | None:
        """The earliest time the culler could stop this idle server (then it is asked each round)."""
        s, st = self.sessions[sid], self.st[sid]
        p = self.policy.cull.policy_for(self.culler_view(sid, st.idle_at))
        if p is None:
            return None
        limits = [m for m in (p.gpu_idle_minutes, None if s.browser_open else p.inactive_minutes) if m is not None]
        if not limits:
            return None
        factor = min(1.0, self.policy.cull.scarcity_factor)
        return max(st.idle_at + min(limits) * 60 * factor, st.started + p.startup_grace_minutes * 60)

    def idle(self, sid: int, now: float) -> None:
        s, st = self.sessions[sid], self.st[sid]
        st.idle_at = now
        if s.tail <= 0:
            self.stop(sid, now)
            return
        self.push(now + s.tail, "leave", sid)
        t = self.arm_time(sid)
        if t is not None and t < now + s.tail:
            self.push(t, "arm", sid)

    def arm(self, sid: int, now: float) -> None:
        self.armed[sid] = None
        if self.tick_at is None:
            self.tick_at = (now // self.interval + 1) * self.interval  # the culler's next round
            self.push(self.tick_at, "tick", -1)

    def tick(self, now: float) -> None:
        self.tick_at = None
        if not self.armed:
            return
        used = sum(self.held_all.values())
        actions = culler.decide([self.culler_view(i, now) for i in self.armed], self.policy.cull, at(now),
                                used / self.total)
        for a in actions:
            if a.kind == "cull":
                self.stop(int(a.server), now)
        if self.armed:
            self.tick_at = now + self.interval
            self.push(self.tick_at, "tick", -1)

    # -- the loop ---------------------------------------------------------------------------
    def run(self, fair_share_days: float) -> Result:
        self.fair_share_s = fair_share_days * 86400
        for s in self.sessions.values():
            self.st[s.id] = self.shape(s)
            self.r.offered_gpu_s += self.st[s.id].weight * s.active
            self.push(s.arrival, "arrive", s.id)
        now = 0.0
        while self.events:
            now, _, kind, sid = heapq.heappop(self.events)
            if kind == "tick":
                self.tick(now)
                continue
            st = self.st[sid]
            if kind == "arrive":
                self.arrive(sid, now)
            elif kind == "abandon":
                if sid in self.queue:
                    self.give_up(sid)
            elif st.stopped or st.started is None:
                continue
            elif kind == "idle":
                self.idle(sid, now)
            elif kind == "arm":
                self.arm(sid, now)
            elif kind == "leave":
                self.stop(sid, now)
            elif kind == "reclaim":
                self.stop(sid, now, reclaimed=True)
        self.r.end = now
        return self.r
