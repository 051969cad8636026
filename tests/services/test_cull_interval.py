"""The culler's wait between rounds follows a reloaded interval: it slept the old one whole, so a
culler given a very long interval by mistake stayed asleep after the file was fixed."""

import asyncio
import time
from types import SimpleNamespace

from services.culler import loop
from services.culler.loop import Culler


def test_a_shorter_interval_reloaded_mid_wait_ends_the_wait(monkeypatch):
    monkeypatch.setattr(loop, "RELOOK_SECONDS", 0.05)
    culler = SimpleNamespace(conf={"interval_seconds": 1e6})

    async def run():
        t0 = time.monotonic()
        waiting = asyncio.ensure_future(Culler.until_next_round(culler, t0))
        await asyncio.sleep(0.6)
        assert not waiting.done()  # the long interval holds
        culler.conf = {"interval_seconds": 0.8}  # the fix, reloaded
        await asyncio.wait_for(waiting, 2)
        return time.monotonic() - t0

    took = asyncio.run(run())
    assert 0.8 <= took < 1.5, took
