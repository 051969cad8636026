"""The queue discipline (pure): given the free devices, the running servers and every request
that wants GPUs, which requests start now and on which devices, and why the others wait.

One rule for everybody. A new spawn and a waiting request woken by a release go through the same
decision (:func:`decide`), so a newcomer never takes GPUs that an earlier request in the order
could use. The rules, in order:

1. **Order.** Requests within their quota come before requests that would *borrow* (start beyond
   their quota, preemptible). Within each class: requests that have waited ``age_after`` (6 h)
   or more first, oldest first; then fair share (the user's GPU-hours over the recent window,
   least first), then age (the earlier request first), then the id.
2. **Start in order.** Walking the order, a request whose GPUs are free (``count`` devices of one
   of its types, on one host, chosen by :func:`~hub_plugins.gpu.placement.place`) starts, and its
   devices are no longer free for the requests after it.
3. **Reserve for the head.** The first within-quota request that cannot start (the *head*) gets a
   reservation: the host and type where it would start soonest, estimated from the running
   servers' expected ends (their chosen runtime, else a typical session; one already past that is
   assumed to end within a quarter of it). The free devices on that host (up to its count) are held
   for it, and so are the devices that free up there later: each new decision holds them again.
   ``reservations`` > 1 gives the same to the next waiting within-quota requests in turn, each
   counting only the devices the earlier reservations did not hold.
4. **Backfill only where it cannot delay the head.** A later request may start on free devices
   that no reservation holds; on held devices only if it has a runtime that ends before the
   reservation's estimated start. With ``backfill`` off, nobody starts behind a waiting request.
5. **Borrowers never hold anything back.** A request beyond quota gets no reservation and starts
   only on devices nobody ahead of it can use now or holds; it may be reclaimed later
   (:mod:`hub_plugins.queue.borrow`).

Requests that could never start (more devices than any host has of their types) are skipped so
that they block nobody; the caller should refuse them before they wait.

Deterministic and stateless: the same inputs give the same decision, and reservations are not
stored anywhere, they are recomputed from the state each time.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..gpu.devices import Device
from ..gpu.placement import place


@dataclass(frozen=True)
class Request:
    """A request for GPUs: waiting in the queue, or new (a fresh spawn)."""

    id: int | str
    user: str
    created_at: dt.datetime  # when it asked (a request resumed after a restart keeps its time)
    count: int
    types: tuple[str, ...]  # candidate GPU types, preferred first
    usage: float = 0.0  # the user's recent GPU-hours: the fair-share weight
    within_quota: bool = True  # False: it would borrow (start beyond quota, preemptible)
    runtime: dt.timedelta | None = None  # the runtime its user chose, if any


@dataclass(frozen=True)
class Server:
    """A running server as the queue sees it: what it holds and when it is expected to end."""

    id: int | str
    user: str
    devices: tuple[Device, ...]
    started_at: dt.datetime
    runtime_limit: dt.timedelta | None = None
    borrowed: bool = False  # started beyond its user's quota: preemptible

    @property
    def weight(self) -> float:
        return float(sum(d.weight for d in self.devices))


@dataclass(frozen=True)
class Rules:
    backfill: bool = True
    fair_share: bool = True  # False: age only (first come, first served)
    reservations: int = 1  # how many waiting within-quota requests hold devices (1: the head)
    # a request that has waited this long goes before all that have not, oldest first, whatever
    # its user's recent use, so fair share cannot starve a heavy user's request until its user
    # gives up (a quarter of the queue's 24 h maximum wait). None: fair share alone
    age_after: dt.timedelta | None = dt.timedelta(hours=6)


@dataclass(frozen=True)
class Reservation:
    request_id: int | str
    gpu_type: str
    host: str
    at: dt.datetime  # estimated start
    held: tuple[Device, ...]  # free devices held for it now


@dataclass(frozen=True)
class Start:
    request: Request
    gpu_type: str
    devices: tuple[Device, ...]
    backfill: bool = False  # it starts while a request before it waits


@dataclass
class Plan:
    order: list[Request]
    starts: list[Start] = field(default_factory=list)
    reservations: list[Reservation] = field(default_factory=list)
    why: dict = field(default_factory=dict)  # request id -> why it waits (see WHY), when known
    left: tuple[Device, ...] = ()  # free devices nobody starts on
    held: frozenset[str] = frozenset()  # keys of the free devices reservations hold

    def start_of(self, request_id) -> Start | None:
        return next((s for s in self.starts if s.request.id == request_id), None)


WHY = {
    "no_room": "not enough free GPUs of its types on one host",
    "reserved": "it is next: the GPUs that free up on its host are held for it",
    "held": "the free GPUs are held for a request ahead of it in the queue",
    "behind": "requests ahead of it wait (strict order, no backfill)",
    "never": "no host has that many GPUs of its types",
}


@dataclass(frozen=True)
class Decision:
    """What the spawner does with one request."""

    start: bool
    gpu_type: str | None = None
    devices: tuple[Device, ...] = ()
    position: int = 0  # 1-based place among the requests that wait (0 when it starts)
    waiting: int = 0  # how many wait (this one included when it waits)
    reason: str = ""  # a key of WHY when it waits
    estimate: dt.datetime | None = None  # its reservation's estimated start, when it holds one
    ahead: tuple[Request, ...] = ()  # the requests that wait before it

    @property
    def message(self) -> str:
        return WHY.get(self.reason, "")


def order(requests: Iterable[Request], rules: Rules = Rules(), now: dt.datetime | None = None) -> list[Request]:
    """The queue's order (see the module docstring); ``now`` is needed for ``age_after``."""
    if rules.age_after is None or now is None:
        cutoff = None
    else:
        cutoff = now - rules.age_after
    fair = rules.fair_share

    def key(r: Request):
        overdue = cutoff is not None and r.created_at <= cutoff
        return (not r.within_quota, not overdue, round(r.usage, 6) if fair and not overdue else 0.0,
                r.created_at, str(r.id))

    return sorted(requests, key=key)


def expected_end(s: Server, now: dt.datetime, typical: dt.timedelta) -> dt.datetime:
    end = s.started_at + (s.runtime_limit or typical)
    return end if end >= now else now + typical / 4  # past its typical length: soon, not never


def _capacity(devices: Iterable[Device]) -> dict[str, int]:
    """The most devices of each type on one host (what any request of that type could ever get)."""
    per: dict[tuple[str, str], int] = defaultdict(int)
    for d in devices:
        per[(d.gpu_type, d.host)] += 1
    out: dict[str, int] = defaultdict(int)
    for (t, _h), n in per.items():
        out[t] = max(out[t], n)
    return out


class _Planner:
    def __init__(self, free, running, now, rules, typical):
        self.now, self.rules, self.typical = now, rules, typical
        self.free = {d.key: d for d in free}
        self.claims: dict[str, Reservation] = {}  # free device key -> the reservation holding it
        self.claimed_later: set[str] = set()  # running devices promised to a reservation
        self.releases = sorted(((expected_end(s, now, typical), d) for s in running for d in s.devices),
                               key=lambda x: (x[0], x[1].key))
        self.cap = _capacity(list(self.free.values()) + [d for s in running for d in s.devices])
        self.version = 0  # bumped when the free or held set changes; keys the fit cache
        self.cache: dict = {}

    def usable(self, r: Request) -> list[Device]:
        out = []
        for key, d in self.free.items():
            res = self.claims.get(key)
            if res is None or (r.runtime is not None and self.now + r.runtime <= res.at):
                out.append(d)
        return out

    def fit(self, r: Request) -> tuple[str, tuple[Device, ...]] | None:
        cache_key = (self.version, r.count, r.types) if r.runtime is None else None
        if cache_key is not None and cache_key in self.cache:
            return self.cache[cache_key]
        devices = self.usable(r)
        got = None
        for t in r.types:
            placed = place(devices, r.count, t)
            if placed is not None:
                got = (t, placed)
                break
        if cache_key is not None:
            self.cache[cache_key] = got
        return got

    def could_ever(self, r: Request) -> bool:
        return any(self.cap.get(t, 0) >= r.count for t in r.types)

    def take(self, r: Request, devices: Iterable[Device]) -> None:
        """``r`` starts on ``devices``: they are no longer free, and free up when it is expected to end."""
        end = self.now + (r.runtime or self.typical)
        for d in devices:
            self.free.pop(d.key, None)
            self.claims.pop(d.key, None)
            self.releases.append((end, d))
        self.releases.sort(key=lambda x: (x[0], x[1].key))
        self.version += 1

    def reserve(self, r: Request) -> Reservation | None:
        """Where ``r`` would start soonest, given what is free and unheld and what frees later."""
        best = None
        for rank, t in enumerate(r.types):
            hosts: dict[str, list] = defaultdict(list)  # host -> [(time, device)], free ones at now
            for key, d in self.free.items():
                if d.gpu_type == t and key not in self.claims:
                    hosts[d.host].append((self.now, d))
            for end, d in self.releases:
                if d.gpu_type == t and d.key not in self.claimed_later:
                    hosts[d.host].append((end, d))
            for host, slots in hosts.items():
                if len(slots) < r.count:
                    continue
                slots.sort(key=lambda x: (x[0], x[1].key))
                n_free = sum(1 for _, d in slots if d.key in self.free)
                # soonest; then the host with the most free now (so the choice stays put as
                # devices free up there); then the preferred type; then the host name
                key = (slots[r.count - 1][0], -n_free, rank, host)
                if best is None or key < best[0]:
                    best = (key, t, host, slots[: r.count])
        if best is None:
            return None
        _, t, host, slots = best
        held = tuple(d for _, d in slots if d.key in self.free)
        res = Reservation(r.id, t, host, slots[-1][0], held)
        for d in held:
            self.claims[d.key] = res
        self.claimed_later.update(d.key for _, d in slots if d.key not in self.free)
        self.version += 1
        return res


def plan(requests: Iterable[Request], free: Iterable[Device], running: Iterable[Server], now: dt.datetime,
         rules: Rules = Rules(), typical: dt.timedelta = dt.timedelta(hours=1)) -> Plan:
    """Every request's fate now: who starts on which devices and who holds a reservation.
    ``free``: the devices nobody holds; ``running``: the servers that hold the rest.

    The reason a request without a reservation waits is left to :func:`decide` (it costs a
    placement per request, and a queue in a burst can be thousands long)."""
    p = _Planner(free, running, now, rules, typical)
    out = Plan(order(requests, rules, now))
    # from which position on no request has a runtime (only those may use held devices)
    timed_after = [False] * (len(out.order) + 1)
    for i in range(len(out.order) - 1, -1, -1):
        timed_after[i] = timed_after[i + 1] or out.order[i].runtime is not None
    waiting_before = False
    for i, r in enumerate(out.order):
        if not p.could_ever(r):
            out.why[r.id] = "never"
            continue
        if waiting_before and not rules.backfill:
            out.why[r.id] = "behind"
            continue
        got = p.fit(r) if p.free else None
        if got is not None:
            out.starts.append(Start(r, got[0], got[1], backfill=waiting_before))
            p.take(r, got[1])
            continue
        waiting_before = True
        if r.within_quota and len(out.reservations) < rules.reservations:
            res = p.reserve(r)
            if res is not None:
                out.reservations.append(res)
                out.why[r.id] = "reserved"
        if (len(out.reservations) >= rules.reservations and not timed_after[i + 1]
                and all(k in p.claims for k in p.free)):
            break  # nothing unheld is free and nobody after may use held devices: all wait
    out.left = tuple(p.free.values())
    out.held = frozenset(p.claims)
    return out


def decide(me: Request, waiting: Iterable[Request], free: Iterable[Device], running: Iterable[Server],
           now: dt.datetime, rules: Rules = Rules(), typical: dt.timedelta = dt.timedelta(hours=1)) -> Decision:
    """The spawner's one question, for a new request or a waiting one that woke up: start now on
    these devices, or wait (where, why, and about when if it holds the reservation).

    ``waiting`` may or may not contain ``me`` (matched by id)."""
    requests = [r for r in waiting if r.id != me.id] + [me]
    p = plan(requests, free, running, now, rules, typical)
    mine = p.start_of(me.id)
    if mine is not None:
        return Decision(True, mine.gpu_type, mine.devices)
    started = {s.request.id for s in p.starts}
    still = [r for r in p.order if r.id not in started]
    pos = next(n for n, r in enumerate(still, 1) if r.id == me.id)
    res = next((x for x in p.reservations if x.request_id == me.id), None)
    reason = p.why.get(me.id)
    if reason is None:
        # it would fit if nothing were held: then a reservation ahead of it keeps it waiting
        unheld_fit = p.held and me.runtime is None and any(place(p.left, me.count, t) for t in me.types)
        reason = "held" if unheld_fit else "no_room"
    return Decision(False, res.gpu_type if res else None, (), pos, len(still), reason,
                    res.at if res else None, tuple(still[: pos - 1]))
