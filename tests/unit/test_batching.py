"""Group commit (``hub_plugins/batching.py``): what arrives while a group is written goes in the
next group; results and failures reach their own callers; nobody waits forever."""

from __future__ import annotations

import asyncio

import pytest

from hub_plugins.batching import GroupCommit


class Writer:
    """A write that records its groups and holds each until the test lets it go."""

    def __init__(self, fail_group: int | None = None):
        self.groups: list[list] = []
        self.gate = asyncio.Event()
        self.fail_group = fail_group

    async def __call__(self, requests):
        self.groups.append(list(requests))
        await self.gate.wait()
        if len(self.groups) - 1 == self.fail_group:
            raise OSError("database gone")
        return [ValueError(f"bad {r}") if str(r).startswith("bad") else f"done {r}" for r in requests]


def run(coro):
    return asyncio.run(coro)


def test_a_lone_request_is_written_at_once_and_alone():
    async def main():
        w = Writer()
        w.gate.set()
        g = GroupCommit(w)
        assert await g.submit("a") == "done a"
        assert await g.submit("b") == "done b"
        return w.groups, g.groups

    assert run(main()) == ([["a"], ["b"]], 2)


def test_requests_that_arrive_during_a_write_go_together_in_the_next_group_in_order():
    async def main():
        w = Writer()
        g = GroupCommit(w)
        first = asyncio.ensure_future(g.submit(1))
        await asyncio.sleep(0)  # the first group is being written
        rest = [asyncio.ensure_future(g.submit(n)) for n in (2, 3, 4)]
        await asyncio.sleep(0)
        w.gate.set()
        return w.groups, await first, await asyncio.gather(*rest)

    groups, first, rest = run(main())
    assert groups == [[1], [2, 3, 4]]
    assert first == "done 1" and rest == ["done 2", "done 3", "done 4"]


@pytest.mark.parametrize("most, queued, sizes", [
    (1, 3, [1, 1, 1, 1]),
    (2, 5, [1, 2, 2, 1]),
    (100, 5, [1, 5]),
])
def test_a_group_holds_at_most_its_limit(most, queued, sizes):
    async def main():
        w = Writer()
        g = GroupCommit(w, most=most)
        tasks = [asyncio.ensure_future(g.submit(0))]
        await asyncio.sleep(0)
        tasks += [asyncio.ensure_future(g.submit(n)) for n in range(1, queued + 1)]
        w.gate.set()
        await asyncio.gather(*tasks)
        return [len(x) for x in w.groups]

    assert run(main()) == sizes


def test_a_request_that_failed_fails_alone_and_a_failed_group_fails_only_its_own():
    async def main():
        w = Writer(fail_group=1)
        g = GroupCommit(w)
        first = asyncio.ensure_future(g.submit("bad x"))
        await asyncio.sleep(0)
        second = [asyncio.ensure_future(g.submit(n)) for n in ("y", "z")]
        w.gate.set()
        out = await asyncio.gather(first, *second, return_exceptions=True)
        after = await g.submit("w")  # the writer goes on after a failed group
        return out, after

    (first, y, z), after = run(main())
    assert isinstance(first, ValueError) and str(first) == "bad bad x"
    assert isinstance(y, OSError) and isinstance(z, OSError)
    assert after == "done w"


def test_a_write_that_answers_for_the_wrong_number_of_requests_fails_them():
    async def wrong(requests):
        return ["one"]

    async def main():
        g = GroupCommit(wrong)
        a = asyncio.ensure_future(g.submit(1))
        b = asyncio.ensure_future(g.submit(2))  # same group: queued before the writer runs
        return await asyncio.gather(a, b, return_exceptions=True)

    out = run(main())
    assert all(isinstance(e, RuntimeError) and "1 results for 2 requests" in str(e) for e in out)


def test_a_cancelled_caller_leaves_the_group_written_and_the_writer_going():
    async def main():
        w = Writer()
        g = GroupCommit(w)
        a = asyncio.ensure_future(g.submit(1))
        b = asyncio.ensure_future(g.submit(2))
        await asyncio.sleep(0)
        a.cancel()
        w.gate.set()
        return await b, w.groups, await g.submit(3)

    b, groups, c = run(main())
    assert b == "done 2" and groups[0] == [1, 2] and c == "done 3"


def test_when_the_writer_is_cancelled_no_caller_waits_forever():
    async def main():
        w = Writer()
        g = GroupCommit(w)
        a = asyncio.ensure_future(g.submit(1))
        await asyncio.sleep(0)
        b = asyncio.ensure_future(g.submit(2))
        await asyncio.sleep(0)
        g._writer.cancel()
        out = await asyncio.gather(a, b, return_exceptions=True)
        w.gate.set()
        return out, await g.submit(3)

    out, c = run(main())
    assert all(isinstance(e, asyncio.CancelledError) for e in out)
    assert c == "done 3"


def test_a_group_holds_at_least_one():
    with pytest.raises(ValueError):
        GroupCommit(lambda r: r, most=0)


@pytest.mark.parametrize("free, busy, written_now", [
    (True, False, True),  # idle and the lock free: at once, alone, on the caller's thread
    (False, False, False),  # the lock taken this moment: queued, written by ``write``
    (True, True, False),  # a group is being written: never overtakes it
])
def test_a_request_is_written_at_once_only_when_it_overtakes_nobody(free, busy, written_now):
    async def main():
        w, at_once, lock = Writer(), [], {"free": False}

        def now(requests):
            if not lock["free"]:
                return None
            at_once.append(list(requests))
            return [f"now {r}" for r in requests]

        g = GroupCommit(w, now)
        first = None
        if busy:  # an earlier request found the lock taken and is being written by ``write``
            first = asyncio.ensure_future(g.submit("earlier"))
            await asyncio.sleep(0)
        lock["free"] = free
        done, result = g.try_now("x")
        w.gate.set()
        if first is not None:
            await first
        return done, result, at_once, w.groups

    done, result, at_once, groups = run(main())
    assert done is written_now
    if written_now:
        assert (result, at_once, groups) == ("now x", [["x"]], [])
    else:
        assert result is None and at_once == []


def test_submit_writes_at_once_where_it_can_and_raises_its_failure():
    async def main():
        g = GroupCommit(Writer(), lambda requests: [ValueError("no") if r == "bad" else f"now {r}" for r in requests])
        ok = await g.submit("a")
        with pytest.raises(ValueError):
            await g.submit("bad")
        return ok, g.groups

    assert run(main()) == ("now a", 2)
