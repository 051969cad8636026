"""reconcile/fresh.py: a caller gets a result begun after it asked; callers that arrive together
share one call."""

import threading
import time

import pytest

from hub_plugins.reconcile.fresh import Fresh


class Slow:
    """fn for Fresh: numbers its calls; each call waits until released."""

    def __init__(self, fail_first=False):
        self.n = 0
        self.began = threading.Event()
        self.release = threading.Event()
        self.fail_first = fail_first

    def __call__(self):
        self.n += 1
        n = self.n
        self.began.set()
        self.release.wait(5)
        if self.fail_first and n == 1:
            raise RuntimeError("the first look failed")
        return n


def test_calls_one_after_another_each_run():
    calls = iter(range(1, 100))
    fresh = Fresh(lambda: next(calls))
    assert [fresh() for _ in range(3)] == [1, 2, 3] and fresh.calls == 3


def run(fresh, out, key):
    try:
        out[key] = fresh()
    except RuntimeError as e:
        out[key] = str(e)


@pytest.mark.parametrize("fail_first, first_gets", [(False, 1), (True, "the first look failed")])
def test_callers_during_a_call_share_the_next_one(fail_first, first_gets):
    """A's call is running when B, C and D ask: they may not use it (it began before them), so
    they wait and share one more call. If A's call fails, A sees the error and the others still
    get a result."""
    fn = Slow(fail_first)
    fresh = Fresh(fn)
    out = {}
    a = threading.Thread(target=run, args=(fresh, out, "a"))
    a.start()
    assert fn.began.wait(5)
    others = [threading.Thread(target=run, args=(fresh, out, k)) for k in "bcd"]
    for t in others:
        t.start()
    time.sleep(0.2)  # B, C and D are waiting on A's call
    fn.release.set()
    for t in [a, *others]:
        t.join(5)
    assert out == {"a": first_gets, "b": 2, "c": 2, "d": 2}
    assert fn.n == 2
