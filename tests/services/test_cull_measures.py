"""What one cull round measured, decided in the culler's pure module (tables): when a server's
GPUs went idle, its energy, since when a budget is spent, how scarce GPUs are, and which queued
requests lost their spawn."""

import datetime as dt
from types import SimpleNamespace

import pytest

from services.culler.decide import allocated_fraction, energy_wh, gpu_idle, spent_since
from services.culler.keeper import lost

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.timezone.utc)
EARLIER = NOW - dt.timedelta(minutes=20)


@pytest.mark.parametrize("utils, previous, expected", [
    ([], None, (False, None)),  # no GPUs
    ([1.0, None], EARLIER, (False, EARLIER)),  # one GPU unmeasured: the stretch so far is kept
    ([1.0, 2.0], None, (True, NOW)),  # all idle: idle from now
    ([1.0, 2.0], EARLIER, (True, EARLIER)),  # still idle: since the stretch began
    ([1.0, 50.0], EARLIER, (True, None)),  # one busy GPU ends the stretch
    ([5.0], None, (True, None)),  # the threshold itself counts as busy
])
def test_gpu_idle(utils, previous, expected):
    assert gpu_idle(utils, 5.0, previous, NOW) == expected


@pytest.mark.parametrize("powers, seconds, wh", [
    ([100.0, 200.0], 3600, 300.0), ([100.0], 36, 1.0), ([100.0, None], 3600, 0.0), ([], 60, 0.0)])
def test_energy(powers, seconds, wh):
    assert energy_wh(powers, seconds) == pytest.approx(wh)


@pytest.mark.parametrize("previous, spent, expected", [
    (None, False, None), (None, True, NOW), (EARLIER, True, EARLIER), (EARLIER, False, None)])
def test_budget_spent_since(previous, spent, expected):
    assert spent_since(previous, spent, NOW) == expected


def test_allocated_fraction():
    a = SimpleNamespace
    assert allocated_fraction([a(total=4, free=1), a(total=4, free=3)]) == 0.5
    assert allocated_fraction([]) == 0.0


def test_lost_queue_requests():
    e = lambda user, server, state, age: SimpleNamespace(  # noqa: E731
        user_name=user, server_name=server, state=state, heartbeat_at=(NOW - dt.timedelta(seconds=age)).replace(tzinfo=None))
    entries = [e("ann", "", "waiting", 300), e("bob", "", "waiting", 30), e("cy", "", "cancelled", 300),
               e("dee", "x", "waiting", 300)]
    found = lost(entries, {("dee", "x")}, NOW, dt.timedelta(seconds=120))
    assert [x.user_name for x in found] == ["ann"]  # fresh, cancelled and active ones stay
