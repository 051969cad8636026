"""A stop of a local server returns when its process exits (a pidfd wakes the event loop), not
at JupyterHub's next randomly timed poll; it still gives up at its timeout."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from hub_plugins.spawners.local.exits import open_pidfd, wait_exit
from hub_plugins.spawners.local.spawner import LocalGPUSpawner

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no pidfd on this kernel")


def _child(seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def test_the_wait_ends_when_the_process_exits_not_at_the_timeout():
    proc = _child(0.3)
    fd = open_pidfd(proc.pid)
    assert fd is not None
    t0 = time.monotonic()
    assert asyncio.run(wait_exit(fd, timeout=10)) is True
    took = time.monotonic() - t0
    assert proc.poll() is not None  # exited (reaped here, the caller's poll does it in the hub)
    assert 0.2 < took < 3, took
    assert _closed(fd)


def test_the_wait_gives_up_at_its_timeout_and_the_process_runs_on():
    proc = _child(30)
    try:
        fd = open_pidfd(proc.pid)
        t0 = time.monotonic()
        assert asyncio.run(wait_exit(fd, timeout=0.3)) is False
        assert 0.25 < time.monotonic() - t0 < 3
        assert proc.poll() is None
        assert _closed(fd)
    finally:
        proc.kill()
        proc.wait()


def test_a_process_already_exited_but_not_reaped_is_seen_at_once():
    proc = _child(0)
    while not os.path.exists(f"/proc/{proc.pid}") or open(f"/proc/{proc.pid}/stat").read().split()[2] != "Z":
        time.sleep(0.01)
    fd = open_pidfd(proc.pid)
    t0 = time.monotonic()
    assert asyncio.run(wait_exit(fd, timeout=10)) is True
    assert time.monotonic() - t0 < 0.5
    proc.wait()


@pytest.mark.parametrize("pid", [None, 0])
def test_no_pid_no_pidfd(pid):
    assert open_pidfd(pid) is None


def test_a_reaped_process_has_no_pidfd():
    proc = _child(0)
    proc.wait()
    assert open_pidfd(proc.pid) is None


class _Server:
    """What ``wait_for_death`` uses of the spawner: its pid and its poll (JupyterHub's reaps)."""

    def __init__(self, proc):
        self.proc, self.pid = proc, proc.pid

    async def poll(self):
        return self.proc.poll()


def test_the_spawners_wait_for_death_answers_when_the_server_exits():
    proc = _child(0.3)
    t0 = time.monotonic()
    assert asyncio.run(LocalGPUSpawner.wait_for_death(_Server(proc), timeout=10)) is True
    assert time.monotonic() - t0 < 3


def test_the_spawners_wait_for_death_says_false_when_the_server_outlives_it():
    proc = _child(30)
    try:
        assert asyncio.run(LocalGPUSpawner.wait_for_death(_Server(proc), timeout=0.3)) is False
    finally:
        proc.kill()
        proc.wait()
