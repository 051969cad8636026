"""One server's lifecycle state (hub_plugins/spawners/lifecycle.py), as tables: every transition,
every refusal, what each state means to the mixin, and the paths a server really takes."""

from __future__ import annotations

import itertools

import pytest

from hub_plugins.spawners.lifecycle import TABLE, Event, Phase, Refused, step

I, RES, CHK, ST, UP, STP, STPU = (Phase.IDLE, Phase.RESERVING, Phase.CHECKING, Phase.STARTING,
                                  Phase.READY, Phase.STOPPING, Phase.STOPPING_UP)

TRANSITIONS = [
    # (from, event, to)
    (I, Event.RESERVE, RES),
    (I, Event.RESTORED, UP),
    (I, Event.CHECK, CHK),
    (I, Event.STOP, I),
    (I, Event.RELEASED, I),
    (RES, Event.REFUSED, I),
    (RES, Event.START, ST),
    (RES, Event.STOP, STP),
    (RES, Event.RELEASED, I),
    (CHK, Event.CHECK, CHK),
    (CHK, Event.ADOPTED, UP),
    (CHK, Event.STOP, STP),
    (CHK, Event.RELEASED, I),
    (ST, Event.UP, UP),
    (ST, Event.STOP, STP),
    (ST, Event.RELEASED, I),
    (UP, Event.RESTORED, UP),
    (UP, Event.CHECK, UP),
    (UP, Event.ADOPTED, UP),
    (UP, Event.STOP, STPU),
    (UP, Event.RELEASED, I),
    (STP, Event.UP, STPU),
    (STP, Event.STOP, STP),
    (STP, Event.REFUSED, I),
    (STP, Event.RELEASED, I),
    (STPU, Event.STOP, STPU),
    (STPU, Event.RELEASED, I),
]


@pytest.mark.parametrize("phase, event, to", TRANSITIONS, ids=lambda v: getattr(v, "value", v))
def test_transition(phase, event, to):
    assert step(phase, event) is to


def test_the_table_is_exactly_these_transitions():
    assert TABLE == {(p, e): t for p, e, t in TRANSITIONS}


REFUSED = [(p, e) for p, e in itertools.product(Phase, Event) if (p, e) not in TABLE]


@pytest.mark.parametrize("phase, event", REFUSED, ids=lambda v: v.value)
def test_refused(phase, event):
    with pytest.raises(Refused) as e:
        step(phase, event)
    assert (e.value.phase, e.value.event) == (phase, event)


@pytest.mark.parametrize("phase, holds, up, started, reason", [
    (I, False, False, False, "failed"),
    (RES, True, False, False, "failed"),
    (CHK, True, False, False, "failed"),
    (ST, True, False, True, "failed"),
    (UP, True, True, True, "crashed"),
    (STP, True, False, True, "stop"),
    (STPU, True, True, True, "stop"),
], ids=lambda v: getattr(v, "value", str(v)))
def test_what_a_state_means(phase, holds, up, started, reason):
    assert (phase.holds, phase.up, phase.started, phase.release_reason) == (holds, up, started, reason)


def run(*events, phase=I):
    for e in events:
        phase = step(phase, e)
    return phase


@pytest.mark.parametrize("events, end, reason", [
    # the spawn path, stopped by someone: the stop's cause
    ([Event.RESERVE, Event.START, Event.UP, Event.STOP], STPU, "stop"),
    # refused (quota, budget, capacity, bad options): nothing to release
    ([Event.RESERVE, Event.REFUSED], I, None),
    # waited in the queue and was cancelled by a stop before it started
    ([Event.RESERVE, Event.STOP], STP, "stop"),
    # a stop on its way while the request was refused: nothing to release
    ([Event.RESERVE, Event.STOP, Event.REFUSED], I, None),
    # stopped while starting; the start still finished before the stop arrived
    ([Event.RESERVE, Event.START, Event.STOP, Event.UP], STPU, "stop"),
    # the server exited while starting: not charged
    ([Event.RESERVE, Event.START], ST, "failed"),
    # found dead by polling after it came up
    ([Event.RESERVE, Event.START, Event.UP], UP, "crashed"),
    # a restarted hub: restored from state, then found dead at its handle
    ([Event.RESTORED, Event.CHECK], UP, "crashed"),
    # a restarted hub adopts what the dead hub started but never recorded
    ([Event.CHECK, Event.ADOPTED], UP, "crashed"),
    # ... or does not find it: its rows are released as a failed start
    ([Event.CHECK], CHK, "failed"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_paths(events, end, reason):
    phase = run(*events)
    assert phase is end
    assert (phase.release_reason if phase.holds else None) == reason
    assert step(phase, Event.RELEASED) is I


def test_a_stop_of_a_server_that_holds_nothing_does_not_colour_the_next_one():
    # a server started before gpulab recorded spawn ids is stopped; the next one then crashes
    assert run(Event.STOP, Event.RESERVE, Event.START, Event.UP).release_reason == "crashed"
