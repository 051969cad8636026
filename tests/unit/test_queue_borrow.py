"""Reclaiming borrowed servers, table-driven: only borrowed ones, most over quota then youngest,
just enough for the waiting request to fit, nothing when it would not help."""

import datetime as dt

import pytest

from hub_plugins.gpu.simulated import parse_spec
from hub_plugins.queue.borrow import borrowed_by_user, choose_reclaim, reclaims
from hub_plugins.queue.discipline import Request, Server, plan

T0 = dt.datetime(2026, 11, 29, 12, tzinfo=dt.timezone.utc)
M = dt.timedelta(minutes=1)
A = "A100-80GB"


def world(spec, busy):
    """``busy``: {id: (user, host, [indices], minutes ago, borrowed)}."""
    inv = parse_spec(spec)
    by = {(d.host, d.index): d for d in inv.devices}
    servers, taken = [], set()
    for sid, (user, host, idx, ago, borrowed) in busy.items():
        devs = tuple(by[(host, i)] for i in idx)
        taken |= {d.key for d in devs}
        servers.append(Server(sid, user, devs, T0 - ago * M, None, borrowed))
    return inv.free(taken), servers


def want(count, user="w"):
    return Request("w", user, T0, count, (A,))


EIGHT = "8xA100-80GB"


@pytest.mark.parametrize(
    "busy, count, expect",
    [
        # fits already on a free GPU: nothing to reclaim
        ({1: ("x", "localhost", [0], 10, True)}, 1, []),
        # full: ann borrows 3 GPUs, bob 1; ann is most over quota, her youngest goes first
        ({1: ("ann", "localhost", [0], 50, True), 2: ("ann", "localhost", [1], 10, True),
          3: ("ann", "localhost", [2], 30, True), 4: ("bob", "localhost", [3], 5, True),
          5: ("cy", "localhost", [4, 5, 6, 7], 5, False)}, 1, [2]),
        # two GPUs: ann's two youngest (she stays the most over quota after the first)
        ({1: ("ann", "localhost", [0], 50, True), 2: ("ann", "localhost", [1], 10, True),
          3: ("ann", "localhost", [2], 30, True), 4: ("bob", "localhost", [3], 5, True),
          5: ("cy", "localhost", [4, 5, 6, 7], 5, False)}, 2, [2, 3]),
        # three: after two of ann's she borrows 1, like bob; bob's is younger
        ({1: ("ann", "localhost", [0], 50, True), 2: ("ann", "localhost", [1], 10, True),
          3: ("ann", "localhost", [2], 30, True), 4: ("bob", "localhost", [3], 5, True),
          5: ("cy", "localhost", [4, 5, 6, 7], 5, False)}, 3, [2, 3, 4]),
        # within-quota servers are never reclaimed, even if that is the only way
        ({1: ("ann", "localhost", [0, 1, 2, 3, 4, 5, 6], 50, False), 2: ("bob", "localhost", [7], 5, True)},
         2, None),
        # reclaiming everything borrowed would still not fit a 4-GPU request: reclaim nothing
        ({1: ("ann", "localhost", [0, 1, 2, 3, 4], 50, False), 2: ("bob", "localhost", [5], 5, True),
          3: ("bob", "localhost", [6], 6, True)}, 4, None),
        # one free + the youngest borrowed GPU fits 2: the older ones are spared
        ({1: ("ann", "localhost", [0, 1, 2, 3, 4, 5], 50, True), 2: ("ann", "localhost", [6], 5, True)}, 2, [2]),
        # most over quota first, even if a smaller server would do: ann's 6 are spared only if not needed
        ({1: ("ann", "localhost", [0, 1, 2, 3, 4, 5], 50, True), 2: ("bob", "localhost", [6, 7], 5, True)},
         2, [1]),
    ],
)
def test_choose_reclaim(busy, count, expect):
    free, servers = world(EIGHT, busy)
    got = choose_reclaim(want(count), free, servers)
    assert (None if got is None else sorted(s.id for s in got)) == (None if expect is None else sorted(expect))


def test_one_host_and_least_taken_back():
    # both hosts full. a: ann borrows two 1-GPU servers beside 6 within-quota GPUs; b: bob borrows
    # one 4-GPU server beside 4 within-quota GPUs
    free, servers = world("8xA100-80GB@a, 8xA100-80GB@b", {
        1: ("ann", "a", [0], 5, True), 2: ("ann", "a", [1], 6, True), 3: ("cy", "a", [2, 3, 4, 5, 6, 7], 5, False),
        4: ("bob", "b", [0, 1, 2, 3], 5, True), 5: ("cy", "b", [4, 5, 6, 7], 5, False)})
    assert free == []
    # 2 GPUs: ann's two on a (2 GPUs taken back) rather than bob's four on b
    assert sorted(s.id for s in choose_reclaim(want(2), free, servers)) == [1, 2]
    # 3 GPUs: a cannot give 3 (one host per server): bob's on b
    assert [s.id for s in choose_reclaim(want(3), free, servers)] == [4]
    # 8 GPUs: no host frees 8 without within-quota servers
    assert choose_reclaim(want(8), free, servers) is None


def test_freeing_devices_count_as_room():
    free, servers = world(EIGHT, {1: ("ann", "localhost", [0, 1, 2, 3, 4, 5, 6, 7], 50, True)})
    being_reclaimed = servers[0].devices
    assert choose_reclaim(want(8), free, servers, freeing=being_reclaimed) == []


def test_borrowed_by_user():
    _, servers = world(EIGHT, {1: ("ann", "localhost", [0, 1], 5, True), 2: ("ann", "localhost", [2], 5, False),
                               3: ("bob", "localhost", [3], 5, True)})
    assert borrowed_by_user(servers) == {"ann": 2.0, "bob": 1.0}


def test_reclaims_for_the_queue():
    """Two hosts full; the 8-GPU head holds host b (where one borrowed server runs beside
    within-quota ones, so reclaim cannot make it fit), a 1-GPU request behind it takes back a
    borrowed server on host a, never the one on b (what b frees is held for the head)."""
    free, servers = world("8xA100-80GB@a, 8xA100-80GB@b", {
        1: ("ann", "a", [0], 1, True), 2: ("cy", "a", [1, 2, 3, 4, 5, 6, 7], 5, False),
        3: ("bob", "b", [0], 50, True), 4: ("cy", "b", [1, 2, 3, 4, 5, 6, 7], 5, False)})
    head = Request("h", "h", T0 - 30 * M, 8, (A,))
    small = Request("s", "s", T0 - 5 * M, 1, (A,))
    borrower = Request("x", "x", T0 - 90 * M, 1, (A,), within_quota=False)
    p = plan([head, small, borrower], free, servers, T0, typical=60 * M)
    assert [(r.request_id, r.host) for r in p.reservations] == [("h", "b")]  # b drains first
    got = reclaims(p, servers)
    assert [(r.id, [s.id for s in v]) for r, v in got] == [("s", [1])]
    # once server 1 is being reclaimed, nothing more is taken back for the same request
    assert reclaims(p, servers, freeing=servers[0].devices) == []


def test_reclaim_waits_for_after():
    """A request within quota takes back borrowed GPUs only once it has waited ``after``."""
    free, servers = world(EIGHT, {1: ("ann", "localhost", list(range(8)), 30, True)})
    fresh = Request("w", "w", T0 - 2 * M, 1, (A,))
    waited = Request("w", "w", T0 - 12 * M, 1, (A,))
    for r, expect in ((fresh, []), (waited, [1])):
        p = plan([r], free, servers, T0, typical=60 * M)
        got = reclaims(p, servers, now=T0, after=10 * M)
        assert [s.id for _, v in got for s in v] == expect
