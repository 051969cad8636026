"""The queue discipline, table-driven: one order for new and waiting requests, reservation for the
head, backfill only where it cannot delay the head, borrowers last, multi-GPU requests served."""

import datetime as dt
import random

import pytest

from hub_plugins.gpu.simulated import parse_spec
from hub_plugins.queue.discipline import Request, Rules, Server, decide, expected_end, order, plan

T0 = dt.datetime(2026, 11, 29, 12, tzinfo=dt.timezone.utc)
M = dt.timedelta(minutes=1)
A = "A100-80GB"


def req(i, user="u", minutes_ago=0, count=1, usage=0.0, types=(A,), within=True, runtime=None):
    return Request(i, user, T0 - minutes_ago * M, count, types, usage, within,
                   None if runtime is None else runtime * M)


def world(spec, busy):
    """``busy``: {server id: (host, [indices], minutes ago started, runtime min or None, borrowed)}."""
    inv = parse_spec(spec)
    by = {(d.host, d.index): d for d in inv.devices}
    running, taken = [], set()
    for sid, (host, idx, ago, runtime, borrowed) in busy.items():
        devs = tuple(by[(host, i)] for i in idx)
        taken |= {d.key for d in devs}
        running.append(Server(sid, f"owner-{sid}", devs, T0 - ago * M, None if runtime is None else runtime * M,
                              borrowed))
    return inv.free(taken), running


def test_order_within_quota_then_fair_share_then_age():
    items = [req(1, "heavy", 30, usage=50), req(2, "light", 5, usage=1), req(3, "new", 10), req(4, "new2", 20),
             req(5, "borrower", 99, within=False)]
    assert [r.id for r in order(items)] == [4, 3, 2, 1, 5]
    assert [r.id for r in order(items, Rules(fair_share=False))] == [1, 4, 3, 2, 5]  # age only


# The hub test, as a table: 4 GPUs held by four 1-GPU servers, a 4-GPU request waits, one
# server stops, and a new 1-GPU request must wait behind it.
FOUR = "4xA100-80GB"
FULL = {i: ("localhost", [i], 30, None, False) for i in range(4)}
ONE_STOPPED = {i: ("localhost", [i], 30, None, False) for i in range(1, 4)}
NONE = {}


@pytest.mark.parametrize(
    "busy, requests, rules, starts, reserved",
    [
        # the head waits for 4; the freed GPU is held for it, so the newcomer (id 2) waits too
        (ONE_STOPPED, [req(1, "big", 20, count=4), req(2, "small", 0)], Rules(), {}, 1),
        # the same newcomer with a light user is ahead of the head in fair share: it starts
        (ONE_STOPPED, [req(1, "big", 20, count=4, usage=9), req(2, "small", 0)], Rules(), {2: [0]}, 1),
        # a newcomer whose runtime ends before the head's estimated start (+30 min) may backfill
        (ONE_STOPPED, [req(1, "big", 20, count=4), req(2, "small", 0, runtime=20)], Rules(), {2: [0]}, 1),
        (ONE_STOPPED, [req(1, "big", 20, count=4), req(2, "small", 0, runtime=45)], Rules(), {}, 1),
        # everyone stopped: the head starts, the newcomer behind it waits
        (NONE, [req(1, "big", 20, count=4), req(2, "small", 0)], Rules(), {1: [0, 1, 2, 3]}, 2),
        # a borrower never takes what the head waits for, and never gets a reservation
        (ONE_STOPPED, [req(1, "big", 20, count=4), req(2, "b", 60, within=False)], Rules(), {}, 1),
        (ONE_STOPPED, [req(2, "b", 60, within=False)], Rules(), {2: [0]}, None),
        (FULL, [req(1, "a", 5), req(2, "b", 1)], Rules(), {}, 1),
    ],
)
def test_four_gpus(busy, requests, rules, starts, reserved):
    free, running = world(FOUR, busy)
    p = plan(requests, free, running, T0, rules, typical=60 * M)
    assert {s.request.id: [d.index for d in s.devices] for s in p.starts} == starts
    assert (p.reservations[0].request_id if p.reservations else None) == reserved


TWO_HOSTS = "8xA100-80GB@a, 8xA100-80GB@b"


@pytest.mark.parametrize(
    "busy, requests, rules, starts, reservation",
    [
        # a: 6 busy (end in 10 and 50 min), b: 7 busy (end in 5 min). The 8-GPU head starts
        # soonest on b (all of b free at +5 min vs a at +50): b's free GPU is held, a's 2 free
        # GPUs go to the two small requests behind it (backfill that cannot delay it)
        ({1: ("a", [0, 1, 2], 50, None, False), 2: ("a", [3, 4, 5], 10, None, False),
          3: ("b", [0, 1, 2, 3, 4, 5, 6], 55, None, False)},
         [req(10, "big", 30, count=8), req(11, "s1", 5), req(12, "s2", 1), req(13, "s3", 0)], Rules(),
         {11: ("a", 6), 12: ("a", 7)}, ("b", 5)),
        # strict order: nobody behind a waiting request starts
        ({1: ("a", [0, 1, 2], 50, None, False), 2: ("a", [3, 4, 5], 10, None, False),
          3: ("b", [0, 1, 2, 3, 4, 5, 6], 55, None, False)},
         [req(10, "big", 30, count=8), req(11, "s1", 5)], Rules(backfill=False), {}, ("b", 5)),
        # equal estimates: the host with more free GPUs now is held (the choice stays put)
        ({1: ("a", [0, 1, 2, 3, 4, 5], 30, None, False), 2: ("b", [0, 1, 2, 3, 4, 5, 6], 30, None, False)},
         [req(10, "big", 30, count=8), req(11, "s1", 5, count=2)], Rules(), {}, ("a", 30)),
        # a request no host could ever hold is skipped and blocks nobody
        ({}, [req(10, "huge", 30, count=9), req(11, "s1", 5)], Rules(), {11: ("a", 0)}, None),
        # a second type: the first candidate that fits now
        ({1: ("a", list(range(8)), 5, None, False), 2: ("b", list(range(8)), 5, None, False)},
         [req(10, "x", 1, types=(A, "H100-80GB"))], Rules(), {}, ("a", 55)),
    ],
)
def test_two_hosts(busy, requests, rules, starts, reservation):
    free, running = world(TWO_HOSTS, busy)
    p = plan(requests, free, running, T0, rules, typical=60 * M)
    got = {s.request.id: (s.devices[0].host, s.devices[0].index) for s in p.starts}
    assert got == starts
    res = p.reservations[0] if p.reservations else None
    assert (None if res is None else (res.host, round((res.at - T0) / M))) == reservation


def test_second_type_fits():
    inv = parse_spec("2xA100-80GB, 2xH100-80GB")
    taken = {d.key for d in inv.devices if d.gpu_type == A}
    p = plan([req(1, types=(A, "H100-80GB"), count=2)], inv.free(taken), [], T0)
    assert p.starts[0].gpu_type == "H100-80GB"


def test_two_reservations_do_not_share_devices():
    free, running = world(TWO_HOSTS, {1: ("a", [0, 1, 2, 3, 4, 5], 30, None, False),
                                      2: ("b", [0, 1, 2, 3, 4, 5, 6], 40, None, False)})
    p = plan([req(10, "big", 30, count=8), req(11, "big2", 20, count=8), req(12, "s", 1, count=2)],
             free, running, T0, Rules(reservations=2), typical=60 * M)
    assert [(r.host, round((r.at - T0) / M)) for r in p.reservations] == [("b", 20), ("a", 30)]
    assert not p.starts  # every free GPU is held: the 2-GPU request waits
    held = [d.key for r in p.reservations for d in r.held]
    assert len(held) == len(set(held)) == 3


@pytest.mark.parametrize(
    "busy, waiting, me, expect",
    [
        (ONE_STOPPED, [req(1, "big", 20, count=4)], req(2, "small", 0), (False, 2, 2, "held", None)),
        (ONE_STOPPED, [req(1, "big", 20, count=4)], req(1, "big", 20, count=4), (False, 1, 1, "reserved", 30)),
        (FULL, [req(1, "a", 5)], req(2, "b", 0, count=2), (False, 2, 2, "no_room", None)),
                # the head starts on all four; the newcomer is next, when one of them ends (typical: 60 min)
        (NONE, [req(1, "big", 20, count=4)], req(2, "small", 0), (False, 1, 1, "reserved", 60)),
        (NONE, [], req(2, "small", 0), (True, 0, 0, "", None)),
        (NONE, [req(1, "big", 20, count=5)], req(2, "small", 0, count=2), (True, 0, 0, "", None)),
    ],
)
def test_decide(busy, waiting, me, expect):
    """``waiting`` may include ``me`` (a woken request) or not (a fresh spawn)."""
    free, running = world(FOUR, busy)
    d = decide(me, waiting, free, running, T0, typical=60 * M)
    est = None if d.estimate is None else round((d.estimate - T0) / M)
    assert (d.start, d.position, d.waiting, d.reason, est) == expect
    if d.start:
        assert len(d.devices) == me.count
    else:
        assert d.message and all(a.id != me.id for a in d.ahead) and len(d.ahead) == d.position - 1


def test_expected_end():
    s = Server(1, "u", (), T0 - 90 * M)
    assert expected_end(s, T0, 60 * M) == T0 + 15 * M  # past its typical length: a quarter of it
    assert expected_end(Server(1, "u", (), T0 - 10 * M, 30 * M), T0, 60 * M) == T0 + 20 * M


def _random_world(rng):
    spec = ", ".join(f"{rng.choice([4, 8])}xA100-80GB@h{h}" for h in range(rng.randint(1, 3)))
    inv = parse_spec(spec)
    devs = list(inv.devices)
    rng.shuffle(devs)
    running = []
    while devs and rng.random() < 0.85:
        n = rng.choice([1, 1, 2, 4])
        same = [d for d in devs if d.host == devs[0].host][:n]
        for d in same:
            devs.remove(d)
        k = len(running)
        running.append(Server(f"s{k}", f"o{k}", tuple(same), T0 - rng.randint(1, 120) * M,
                              rng.choice([None, 30 * M, 240 * M]), rng.random() < 0.3))
    free = sorted(devs)
    requests = [req(k, f"u{rng.randint(0, 5)}", rng.randint(0, 100), rng.choice([1, 1, 2, 4, 8]),
                    usage=rng.choice([0, 0, 3, 10]), within=rng.random() < 0.8,
                    runtime=rng.choice([None, None, 20, 300])) for k in range(rng.randint(1, 12))]
    return free, running, requests


@pytest.mark.parametrize("seed", range(300))
def test_backfill_never_delays_the_head(seed):
    """Whatever the state: starts use distinct free devices; and when the starts are applied and
    the rest planned again, every reservation's host and estimate are no later than before."""
    rng = random.Random(seed)
    free, running, requests = _random_world(rng)
    typical = 60 * M
    p = plan(requests, free, running, T0, Rules(), typical)
    used = [d.key for s in p.starts for d in s.devices]
    assert len(used) == len(set(used)) and set(used) <= {d.key for d in free}
    for s in p.starts:
        assert len(s.devices) == s.request.count and len({d.host for d in s.devices}) == 1
    if not p.reservations:
        return
    head = p.reservations[0]
    now_running = running + [Server(f"n{s.request.id}", s.request.user, s.devices, T0, s.request.runtime)
                             for s in p.starts]
    rest = [r for r in requests if r.id not in {s.request.id for s in p.starts}]
    again = plan(rest, [d for d in free if d.key not in set(used)], now_running, T0, Rules(), typical)
    assert again.reservations[0].request_id == head.request_id
    assert again.reservations[0].at <= head.at
    assert not again.starts  # the plan was complete: nothing more could start


def test_multi_gpu_request_is_served_under_a_stream_of_small_ones():
    """A 1-GPU request arrives every 5 minutes and each runs an hour; an 8-GPU request waits
    among them. With the discipline it starts within the time it takes one host to drain."""
    inv = parse_spec("8xA100-80GB")
    running: list[Server] = [Server(f"s{i}", f"u{i}", (inv.devices[i],), T0 - (5 * i) * M) for i in range(8)]
    big = req("big", "big", 0, count=8)
    waiting = [big]
    now = T0
    for step in range(1, 60):
        now = T0 + 5 * step * M
        running = [s for s in running if s.started_at + 60 * M > now]
        waiting.append(Request(f"n{step}", f"n{step}", now, 1, (A,)))
        taken = {d.key for s in running for d in s.devices}
        p = plan(waiting, inv.free(taken), running, now, Rules(), 60 * M)
        for s in p.starts:
            running.append(Server(s.request.id, s.request.user, s.devices, now))
            waiting.remove(s.request)
        if big not in waiting:
            break
    assert big not in waiting and now - T0 <= 65 * M


def test_age_after_overrides_fair_share():
    rules = Rules(age_after=6 * 60 * M)
    items = [req(1, "heavy", 7 * 60, usage=50), req(2, "light", 5, usage=0), req(3, "heavy2", 6.5 * 60, usage=90),
             req(4, "b", 8 * 60, within=False)]
    # the two overdue requests first (oldest first, usage ignored), then fair share; borrowers last
    assert [r.id for r in order(items, rules, T0)] == [1, 3, 2, 4]
    assert [r.id for r in order(items, Rules(age_after=None), T0)] == [2, 1, 3, 4]
    assert [r.id for r in order(items, rules)] == [2, 1, 3, 4]  # no time given: no ageing


def test_overdue_big_request_goes_first():
    """A heavy user's 4-GPU request that waited past age_after is the head again: the freed GPU
    is held for it, not given to a light user's newcomer."""
    free, running = world(FOUR, ONE_STOPPED)
    heavy = req(1, "big", 7 * 60, count=4, usage=500)
    light = req(2, "small", 0)
    p = plan([heavy, light], free, running, T0, Rules(), typical=60 * M)
    assert not p.starts and p.reservations[0].request_id == 1
    p = plan([heavy, light], free, running, T0, Rules(age_after=None), typical=60 * M)
    assert [s.request.id for s in p.starts] == [2]
