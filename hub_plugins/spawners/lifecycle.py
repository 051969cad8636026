"""One server's lifecycle, as the mixin sees it: one state, and which events move it where.

Pure (no I/O): the mixin (``mixin.py``, ``liveness.py``, ``environment.py``, ``recovery.py``)
holds one :class:`Phase` and moves it only through :func:`step`. What the mixin asks of it:

- ``holds``: rows may exist in gpulab's tables for this server (reserving, reserved, restored
  from state or found by the start-up check). Only then does a release cost a database round trip,
  and only then does the wedged sweeper (``reconcile/wedged.py``) release a server being checked.
- ``up``: the server came up (started, restored from state or adopted), so it is charged: a poll
  that finds it alive is a heartbeat, and an end nobody asked for is a crash.
- ``started``: the backend's ``start`` has begun, so the progress page streams its events too.
- ``release_reason``: why a release closes the usage record ('stop': the cause of the stop that
  was asked for, see ``accounting/stops.py``; 'crashed'; 'failed': it never came up, not charged).

An event the table has no row for is refused: the state stays as it is and the refusal is logged
(the mixin's ``gpulab_lifecycle``), never a state made up on the spot. JupyterHub's own order of
calls sends none; one in the log means an earlier step was cut short (a release that failed in a
database outage leaves the server's state until the next release) or a bug.
"""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    IDLE = "idle"  # holds nothing: never spawned, refused, or released
    RESERVING = "reserving"  # validating, reserving or waiting in the queue (pre-spawn hook)
    CHECKING = "checking"  # a restarted hub's check: a dead hub may have left rows, server not found yet
    STARTING = "starting"  # reserved; the backend's start runs
    READY = "ready"  # up and charged (started, restored from state, or adopted)
    STOPPING = "stopping"  # a stop was asked for before it came up
    STOPPING_UP = "stopping_up"  # a stop was asked for while it was up: charged until released

    @property
    def holds(self) -> bool:
        return self is not Phase.IDLE

    @property
    def up(self) -> bool:
        return self in (Phase.READY, Phase.STOPPING_UP)

    @property
    def started(self) -> bool:
        return self in (Phase.STARTING, Phase.READY, Phase.STOPPING, Phase.STOPPING_UP)

    @property
    def stop_asked(self) -> bool:
        return self in (Phase.STOPPING, Phase.STOPPING_UP)

    @property
    def release_reason(self) -> str:
        """'stop' (the asked-for stop's cause decides), 'crashed' or 'failed'."""
        if self.stop_asked:
            return "stop"
        return "crashed" if self.up else "failed"


class Event(enum.Enum):
    RESERVE = "reserve"  # the pre-spawn hook starts reserving (rows may be written from here on)
    REFUSED = "refused"  # the request was refused before anything was reserved
    START = "start"  # the backend's start begins
    UP = "up"  # the server answers: charging starts
    RESTORED = "restored"  # state saved by a hub (this one, or one before it) names a spawn id
    CHECK = "check"  # a restarted hub checks the server: a dead hub may have left it rows
    ADOPTED = "adopted"  # the check found the server a dead hub started and took it over
    STOP = "stop"  # someone asked for a stop (Spawner.stop)
    RELEASED = "released"  # its GPUs were freed and its usage record closed


P, E = Phase, Event
TABLE: dict[tuple[Phase, Event], Phase] = {
    (P.IDLE, E.RESERVE): P.RESERVING,
    (P.IDLE, E.RESTORED): P.READY,
    (P.IDLE, E.CHECK): P.CHECKING,
    # a server gpulab holds nothing for (started by a hub before gpulab recorded spawn ids): its
    # stop has nothing to account, and must not colour the next server's end
    (P.IDLE, E.STOP): P.IDLE,
    (P.IDLE, E.RELEASED): P.IDLE,
    (P.RESERVING, E.REFUSED): P.IDLE,
    (P.RESERVING, E.START): P.STARTING,
    (P.RESERVING, E.STOP): P.STOPPING,
    (P.RESERVING, E.RELEASED): P.IDLE,
    (P.CHECKING, E.CHECK): P.CHECKING,
    (P.CHECKING, E.ADOPTED): P.READY,
    (P.CHECKING, E.STOP): P.STOPPING,
    (P.CHECKING, E.RELEASED): P.IDLE,
    (P.STARTING, E.UP): P.READY,
    (P.STARTING, E.STOP): P.STOPPING,
    (P.STARTING, E.RELEASED): P.IDLE,
    (P.READY, E.RESTORED): P.READY,
    (P.READY, E.CHECK): P.READY,  # restored from state, then found dead or not at its handle
    (P.READY, E.ADOPTED): P.READY,
    (P.READY, E.STOP): P.STOPPING_UP,
    (P.READY, E.RELEASED): P.IDLE,
    (P.STOPPING, E.UP): P.STOPPING_UP,  # a start that finished while its stop was on its way
    (P.STOPPING, E.STOP): P.STOPPING,  # asked again (the wedged sweeper, a second request)
    (P.STOPPING, E.REFUSED): P.IDLE,  # stopped while reserving, then refused: nothing reserved
    (P.STOPPING, E.RELEASED): P.IDLE,
    (P.STOPPING_UP, E.STOP): P.STOPPING_UP,
    (P.STOPPING_UP, E.RELEASED): P.IDLE,
}
del P, E


class Refused(ValueError):
    """An event the state has no transition for."""

    def __init__(self, phase: Phase, event: Event):
        super().__init__(f"no transition from {phase.value} on {event.value}")
        self.phase, self.event = phase, event


def step(phase: Phase, event: Event) -> Phase:
    """The state after ``event``, or :class:`Refused`."""
    try:
        return TABLE[phase, event]
    except KeyError:
        raise Refused(phase, event) from None
