"""Liveness for accounting: part of ``GPUSpawnerMixin``.

Who asked for a stop, the heartbeat that says a server is alive while it is polled, the start-up
check of a restarted hub, the moment a server is ready (charging starts) and the release that
closes its usage record with why it ended.
"""

from __future__ import annotations

import asyncio

from traitlets import HasTraits

from ..accounting import stops
from ..store.models import utcnow
from ..store.release import ReleaseRequest
from .lifecycle import Event, Phase, Refused, step
from .recovery import check_after_restart, release_stopped, release_stopped_now


class GPULivenessMixin(HasTraits):
    """Release, stop, poll and readiness (a base of ``GPUSpawnerMixin``; its state is created by
    ``GPUSpawnerMixin.__init__``)."""

    def gpulab_lifecycle(self, event: Event) -> Phase:
        """Move the lifecycle state (``lifecycle.py``) on ``event``. An event with no transition
        leaves the state as it is, logged: acting on a made-up state could free GPUs that are in
        use or keep ones that are not."""
        try:
            self.gpulab_phase = step(self.gpulab_phase, event)
        except Refused as e:
            self.log.warning("[gpulab] %s: lifecycle: %s; the state stays", self._log_name, e)
        return self.gpulab_phase

    async def gpulab_release(self, cleanup=None) -> list[str]:
        """Free the GPUs and close the usage record, with why the server ended: a stop someone
        asked for ('user', unless a service noted culled/budget/runtime/admin first), a server
        found dead ('crashed', closed at the last moment it was seen alive) or one that never
        came up ('failed', not charged). ``cleanup``: the backend's clean-up after its server
        stopped (``gpulab_stop_cleanup``), run first, in the same trip to the worker threads."""
        await self.gpulab_ready_noted()
        phase = self.gpulab_phase
        if not phase.holds:
            # nothing was reserved (a refused request) and nothing restored from state (held
            # GPUs are not a test: clear_state may already have dropped them). A hub that died
            # mid-spawn leaves its rows to the reconcile.
            if cleanup is not None:
                await self.gpulab.run(cleanup)
            return []
        reason, stopped_by = self._gpulab_release_reason()
        core, owner = self.gpulab, self.gpulab_owner
        # never free a device something still uses: see recovery.py
        spawns, keys = await release_stopped(
            self, cleanup, lambda alive_for: core.allocator.release_checked(owner, alive_for, reason, stopped_by),
            lambda alive_for: core.releases.submit(ReleaseRequest(owner, alive_for, reason, stopped_by)))
        if reason == "culled":  # by an external culler (gpulab's own counts its culls itself)
            await core.run(core.usage.event, "culled", "external", self.user.name,
                           self.name or "", f"stopped by {stopped_by}")
        return self._gpulab_released(spawns, keys, reason)

    def gpulab_release_now(self) -> bool:
        """:meth:`gpulab_release` of a stop whose clean-up is done, written at once on the loop
        where it can be (``recovery.release_stopped_now``): whether it was. False: nothing
        changed (await :meth:`gpulab_release`)."""
        if not self._gpulab_ready_written():  # the note that it is up must be written first
            return False
        if not self.gpulab_phase.holds:
            return False
        reason, stopped_by = self._gpulab_release_reason()
        if reason == "culled":  # its event is written in a worker thread
            return False
        owner = self.gpulab_owner
        done = release_stopped_now(self, lambda alive_for: ReleaseRequest(owner, alive_for, reason, stopped_by))
        if done is None:
            return False
        self._gpulab_released(*done, reason)
        return True

    def _gpulab_release_reason(self) -> tuple[str, str]:
        reason, stopped_by = self.gpulab_phase.release_reason, ""
        if reason == "stop":
            cullers = self.gpulab.live.current.culler["external_cullers"] if self.gpulab.live else ()
            reason, stopped_by = stops.cause(self._gpulab_requester, self.user.name, cullers)
        return reason, stopped_by

    def _gpulab_released(self, spawns: list[str], keys: list[str], reason: str) -> list[str]:
        """What follows a release, however it was written."""
        for spawn_id in spawns:
            self.gpulab_runtime.forget(spawn_id)  # (spawns is empty without a runtime)
        if keys:
            self.gpulab.notify_released()  # wake requests waiting in the queue
            self.log.info("[gpulab] %s: released %s (%s)", self._log_name, ", ".join(keys), reason)
        self.gpulab_allocation = None
        self.gpulab_holding = None
        self.gpulab_lifecycle(Event.RELEASED)
        self._gpulab_requester = None
        return keys

    # -- liveness for accounting -----------------------------------------------------------
    async def stop(self, now=False):
        self.gpulab_lifecycle(Event.STOP)
        self._gpulab_requester = stops.requester(self.user.name)
        return await super().stop(now=now)

    async def poll(self):
        self.gpulab_heal_hub_session()  # JupyterHub commits right after polling (stop, checks)
        status = await super().poll()
        if self.pending == "check" and not self._gpulab_checked:
            self._gpulab_checked = True
            status = await self.gpulab_check_after_restart(status)
        if status is None and self.gpulab_phase.up:
            now = utcnow()
            self._gpulab_last_alive = now
            beat = self.gpulab.settings.billing.heartbeat_seconds
            held = self.gpulab_held
            if held and (self._gpulab_last_beat is None or (now - self._gpulab_last_beat).total_seconds() >= beat):
                self._gpulab_last_beat = now
                try:
                    await self.gpulab.run(self.gpulab.usage.heartbeat, [held.spawn_id], now)
                except Exception:
                    self.log.exception("[gpulab] heartbeat failed for %s", self._log_name)
        return status

    async def gpulab_check_after_restart(self, status):
        """Adopt a server the hub that died started but never recorded (see ``recovery.py``)."""
        return await check_after_restart(self, status)

    async def gpulab_mark_ready(self) -> None:
        """The server is up: it is charged from now. Its usage record says so in the background,
        so that the spawn's answer does not wait for a trip to the worker threads (0.2 s at 50
        spawns at once, measured); the release waits for that note first
        (``gpulab_ready_noted``), so a record is never closed before it is marked ready."""
        self.gpulab_lifecycle(Event.UP)
        self._gpulab_last_alive = self._gpulab_last_beat = utcnow()
        if self.gpulab_held:
            spawn_id, at = self.gpulab_held.spawn_id, self._gpulab_last_alive
            self._gpulab_ready_note = (asyncio.ensure_future(self._gpulab_note_ready(spawn_id, at)), spawn_id, at)

    async def _gpulab_note_ready(self, spawn_id: str, at) -> bool:
        try:
            await self.gpulab.run(self.gpulab.usage.mark_ready, spawn_id, at)
            return True
        except Exception:
            self.log.exception("[gpulab] %s: could not note that it is up; its release tries again", self._log_name)
            return False

    def _gpulab_ready_written(self) -> bool:
        """Whether no note that the server is up is pending: none was, or it is written (and so
        done with). False: it is still being written, or it failed."""
        note = self._gpulab_ready_note
        if note is not None:
            task = note[0]
            if not task.done() or task.cancelled() or task.exception() is not None or not task.result():
                return False
            self._gpulab_ready_note = None
        return True

    async def gpulab_ready_noted(self) -> None:
        """Until the note that the server is up is written; if it failed, written now (on an
        open record only), so that a server that ran is charged."""
        if self._gpulab_ready_written():
            return
        (task, spawn_id, at), self._gpulab_ready_note = self._gpulab_ready_note, None
        if not await task:
            try:
                await self.gpulab.run(self.gpulab.usage.mark_ready_if_not, spawn_id, at)
            except Exception:
                self.log.exception("[gpulab] %s: its usage record is closed without its start: not charged",
                                   self._log_name)
