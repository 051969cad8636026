"""Group commit on the hub's loop: requests of one kind that arrive while a group of them is
being written go together in the next group.

A request is written at once, alone, on the caller's thread where ``now`` can (SQLite's lock is
free this moment: no trip to a worker thread, no wait for the loop's next turn); otherwise
requests share one trip to the worker threads and one transaction (``store/release.py`` says why
that matters for stops). Nothing waits on a timer to gather a group: a group is whatever queued
up while the one before it was written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any


class GroupCommit:
    """``write(requests)`` writes a group (a coroutine; one result per request, in order, where a
    result that is an exception fails only its own request); ``now(requests)``, if given, the
    same on the caller's thread without waiting, or None when it cannot this moment.
    :meth:`submit` writes one request and returns its result. At most ``most`` requests a group."""

    def __init__(self, write: Callable[[Sequence[Any]], Awaitable[Sequence[Any]]],
                 now: Callable[[Sequence[Any]], Sequence[Any] | None] | None = None, most: int = 100):
        if most < 1:
            raise ValueError("a group holds at least one request")
        self._write = write
        self._now = now
        self._most = most
        self._queued: list[tuple[Any, asyncio.Future]] = []
        self._writer: asyncio.Task | None = None
        self.groups = 0  # groups written, and the requests in them (tests, profiles)
        self.requests = 0

    def try_now(self, request: Any) -> tuple[bool, Any]:
        """Write ``request`` at once, alone, where nothing is queued or being written (it would
        overtake them) and ``now`` can: (True, its result, which may be an exception), or (False,
        None) and nothing was written."""
        if self._now is None or self._writer is not None or self._queued:
            return False, None
        results = self._now([request])
        if results is None:
            return False, None
        self.groups, self.requests = self.groups + 1, self.requests + 1
        return True, results[0]

    async def submit(self, request: Any) -> Any:
        written, result = self.try_now(request)
        if written:
            if isinstance(result, BaseException):
                raise result
            return result
        future = asyncio.get_running_loop().create_future()
        self._queued.append((request, future))
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_queued())
        return await future

    async def _write_queued(self) -> None:
        group: list[tuple[Any, asyncio.Future]] = []
        try:
            while self._queued:
                group, self._queued = self._queued[:self._most], self._queued[self._most:]
                self.groups, self.requests = self.groups + 1, self.requests + len(group)
                try:
                    results = list(await self._write([request for request, _ in group]))
                    if len(results) != len(group):
                        raise RuntimeError(f"{len(results)} results for {len(group)} requests")
                except Exception as e:  # the whole group failed: each of its requests says so
                    results = [e] * len(group)
                for (_, future), result in zip(group, results):
                    if future.done():  # its caller was cancelled: the write went ahead anyway
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                group = []
        except BaseException:  # cancelled (the hub is stopping): no caller waits forever
            for _, future in group + self._queued:
                if not future.done():
                    future.cancel()
            self._queued = []
            raise
        finally:
            self._writer = None
