"""One hub per state directory (``settings/statelock.py``): a second one is refused, named by the
pid of the hub that holds the state; a hub killed with SIGKILL never blocks its own restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from hub_plugins.settings import statelock
from hub_plugins.settings.statelock import StateInUse, claim

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _holder(state) -> subprocess.Popen:
    """Another process holding the state, as a running hub does."""
    p = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom hub_plugins.settings.statelock import claim\n"
                          f"claim({str(state)!r})\nprint('held', flush=True)\ntime.sleep(60)"],
                         cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_hub_is_refused_until_the_first_is_gone_however_it_ended(tmp_path):
    first = _holder(tmp_path)
    try:
        with pytest.raises(StateInUse) as e:
            claim(str(tmp_path))
        assert f"pid {first.pid}" in str(e.value) and str(tmp_path) in str(e.value)
        assert "stop it first" in str(e.value)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    claim(str(tmp_path))  # the kernel dropped the lock with the process
    claim(str(tmp_path))  # again in the same process: still this hub's
    assert (tmp_path / "hub.lock").read_text() == str(os.getpid())
    statelock._held.pop(str(tmp_path / "hub.lock")).close()


def test_what_a_hub_starts_does_not_hold_its_state(tmp_path):
    """A child the hub started (a server, which outlives it) keeps no copy of the lock."""
    claim(str(tmp_path))
    child = subprocess.Popen(["sleep", "60"])
    try:
        statelock._held.pop(str(tmp_path / "hub.lock")).close()  # the hub ends; its child lives on
        other = _holder(tmp_path)
        other.kill()
        other.wait(10)
    finally:
        child.kill()
        child.wait(10)
