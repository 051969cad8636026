"""Borrowing and reclaim (pure): which borrowed servers to take back for a waiting request.

A user may start a server beyond their quota on GPUs nobody within quota is waiting for; such a
server is *borrowed* (preemptible). The queue discipline already keeps borrowers behind every
request within quota (:mod:`hub_plugins.queue.discipline`); this module decides what to take back
when a request within quota waits and cannot fit:

- only borrowed servers, never a server within its user's quota;
- the user most over quota first (the most GPU-equivalents borrowed, counted again after each
  choice, so two heavy borrowers give back in turn), then that user's youngest server (the least
  work lost), then the server id;
- just enough for the request to fit on one host of one of its types (a server chosen and then
  found unneeded is spared), on the host and type that take back the fewest GPU-equivalents;
- nothing when the request fits already or when taking back every borrowed server would still not
  make it fit (that would stop work and start nobody).

The caller warns the chosen servers and stops them after a grace period; the devices of servers
already being reclaimed are passed as ``freeing`` so they are not reclaimed twice.
"""

from __future__ import annotations

import datetime as dt

from collections import defaultdict
from collections.abc import Iterable

from ..gpu.devices import Device
from ..gpu.placement import place
from .discipline import Plan, Request, Server

# A request within quota waits this long before borrowed servers are reclaimed for it: most waits
# end sooner as servers stop by themselves, and a reclaim stops someone's work.
RECLAIM_AFTER = dt.timedelta(minutes=10)


def borrowed_by_user(servers: Iterable[Server]) -> dict[str, float]:
    """GPU-equivalents each user holds beyond quota (the sum of their borrowed servers)."""
    out: dict[str, float] = defaultdict(float)
    for s in servers:
        if s.borrowed:
            out[s.user] += s.weight
    return dict(out)


def _fits(devices: list[Device], count: int, gpu_type: str) -> bool:
    return place(devices, count, gpu_type) is not None


def _take_back(request: Request, gpu_type: str, base: list[Device], candidates: list[Server],
               over: dict[str, float]) -> list[Server] | None:
    """Victims among ``candidates`` (one host's borrowed servers) in the order of preference,
    until the request fits; then spare those not needed. None if all of them are not enough."""
    over = dict(over)
    left = list(candidates)
    chosen: list[Server] = []
    devices = list(base)
    while not _fits(devices, request.count, gpu_type):
        if not left:
            return None
        # most over quota now, then youngest, then id
        pick = min(left, key=lambda s: (-over.get(s.user, 0.0), -s.started_at.timestamp(), str(s.id)))
        left.remove(pick)
        chosen.append(pick)
        over[pick.user] = over.get(pick.user, 0.0) - pick.weight
        devices += [d for d in pick.devices if d.gpu_type == gpu_type]
    for s in reversed(chosen[:-1]):  # the last one was needed, or the loop would have stopped
        without = [d for d in devices if d not in s.devices]
        if _fits(without, request.count, gpu_type):
            chosen.remove(s)
            devices = without
    return chosen


def choose_reclaim(request: Request, free: Iterable[Device], servers: Iterable[Server],
                   freeing: Iterable[Device] = ()) -> list[Server] | None:
    """The borrowed servers to reclaim so that ``request`` fits: ``[]`` if it fits already (on
    free devices and those already being reclaimed), ``None`` if no choice of borrowed servers
    would make it fit. ``servers``: all running servers (within-quota ones are never chosen)."""
    servers = list(servers)
    pool = list(free) + list(freeing)
    if any(_fits(pool, request.count, t) for t in request.types):
        return []
    freeing_keys = {d.key for d in freeing}
    over = borrowed_by_user(servers)
    borrowed = [s for s in servers if s.borrowed and not any(d.key in freeing_keys for d in s.devices)]
    best = None
    for rank, t in enumerate(request.types):
        hosts = {d.host for s in borrowed for d in s.devices if d.gpu_type == t}
        for host in sorted(hosts):
            base = [d for d in pool if d.gpu_type == t and d.host == host]
            candidates = [s for s in borrowed if any(d.host == host and d.gpu_type == t for d in s.devices)]
            victims = _take_back(request, t, base, candidates, over)
            if victims is None:
                continue
            cost = sum(s.weight for s in victims)
            key = (cost, len(victims), rank, host)
            if best is None or key < best[0]:
                best = (key, victims)
    return None if best is None else best[1]


def reclaims(p: Plan, servers: Iterable[Server], freeing: Iterable[Device] = (), now: dt.datetime | None = None,
             after: dt.timedelta = RECLAIM_AFTER) -> list[tuple[Request, list[Server]]]:
    """Reclaim choices for the within-quota requests that wait in plan ``p``, in the queue's
    order. Each takes back borrowed servers that the requests before it did not take; devices the
    requests before it will use, or that a reservation holds for another request, are not room
    for it, and neither are borrowed servers on another request's reserved host (what they free
    would be held for that request). Only requests that have waited ``after`` (at ``now``) take
    back anything: most waits end as servers stop by themselves, without stopping anyone's work."""
    servers = list(servers)
    started = {s.request.id for s in p.starts}
    reserved_for = {(res.host, res.gpu_type): res.request_id for res in p.reservations}
    held_for = {d.key: res.request_id for res in p.reservations for d in res.held}
    freeing = list(freeing)
    pool = list(p.left) + freeing
    going = {d.key for d in freeing}
    out = []
    # ids of servers already chosen, here or before (being reclaimed: their devices are freeing)
    taken: set[str] = {str(s.id) for s in servers if any(d.key in going for d in s.devices)}
    for r in p.order:
        if not any(s.borrowed and str(s.id) not in taken for s in servers):
            break  # nothing left to take back
        if r.id in started or not r.within_quota or p.why.get(r.id) == "never":
            continue
        if now is not None and now - r.created_at < after:
            continue
        mine = [d for d in pool if held_for.get(d.key, r.id) == r.id]
        rest = [s for s in servers if str(s.id) not in taken
                and all(reserved_for.get((d.host, d.gpu_type), r.id) == r.id for d in s.devices)]
        victims = choose_reclaim(r, mine, rest)
        if victims is None:
            continue
        room = mine + [d for s in victims for d in s.devices]
        placed = next((x for x in (place(room, r.count, t) for t in r.types) if x is not None), ())
        used = {d.key for d in placed}
        pool = [d for d in pool if d.key not in used] + [d for s in victims for d in s.devices if d.key not in used]
        taken.update(str(s.id) for s in victims)
        if victims:
            out.append((r, victims))
    return out
