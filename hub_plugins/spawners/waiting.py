"""Waiting in the queue, on the hub's side: part of GPUSpawnerMixin's spawn path.

The wait runs in ``run_pre_spawn_hook``, before ``Spawner.start``, so JupyterHub's
``start_timeout`` does not cut it short, and it holds no GPU: GPUs are reserved only in the
transaction that takes the request out of the queue. It wakes up whenever a server on this hub
releases GPUs (stop, cull, crash) and otherwise looks again every few seconds.

A person cancels by stopping the pending server (the hub's Stop button, or ``DELETE`` on the
server in the REST API: JupyterHub interrupts the spawn) or from the billing service's queue page.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time


from ..gpu.devices import format_devices
from ..spawn.request import RequestError
from ..store.allocator import Allocation, NoCapacity
from .errors import SpawnException

LOOK_EVERY = 5.0  # seconds between looks when nothing was released
REPORT_EVERY = 60.0  # repeat the position line at least this often
# why a request waits (the discipline's reasons, queue/discipline.py), told to its user
WHY = {
    "no_room": "not enough GPUs of your type are free on one machine",
    "reserved": "you are next: GPUs that free up are held for you",
    "held": "the free GPUs are held for a request ahead of yours",
    "behind": "requests ahead of yours wait (strict order)",
}


def _eta_text(eta: dt.datetime | None, now: dt.datetime) -> str:
    if eta is None:
        return "no estimate yet"
    minutes = max(0, round((eta - now).total_seconds() / 60))
    if minutes < 1:
        return "starting soon"
    if minutes < 90:
        return f"about {minutes} min"
    return f"about {minutes / 60:.1f} h"


async def wait_in_queue(spawner, req, first: NoCapacity) -> Allocation:
    core = spawner.gpulab
    owner, groups = spawner.gpulab_owner, spawner.gpulab_groups
    max_wait = core.settings.queue.max_wait_seconds

    def queueable_types():
        types = core.candidate_types(req, core.effective(owner.user_name, groups), core.inventory())
        most = max((a.host_max for a in core.availability() if a.gpu_type in types), default=0)
        if req.gpus > most:
            # it could never start: it would wait for nothing, and block others once at the head
            raise RequestError(
                f"No host has {format_devices(first.gpu_type, req.gpus)}, so this request could never "
                f"start and cannot wait in the queue: ask for at most {most}.")
        return types

    types = await core.run(queueable_types)
    entry_id, created = await core.run(core.queue.enqueue, owner, dict(spawner.user_options or {}),
                                       types, req.gpus)
    t0 = time.monotonic()
    # a request resumed after a hub restart keeps its place and its time in the queue
    waited_before = max(0.0, (dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - created).total_seconds())
    ahead = getattr(first, "waiting", None)  # QueueAhead: its GPUs may be free, but not its turn
    why = (f"{ahead} request(s) wait before yours" if ahead is not None
           else f"No room for {format_devices(first.gpu_type, first.count)} right now")
    spawner.gpulab_event(
        f"{why}: waiting in the queue (you hold no GPU while you wait; stop the server to cancel)",
        progress=10)
    await core.run(core.usage.event, "queued", "capacity", owner.user_name, owner.server_name,
                   f"{req.gpus} x {first.gpu_type}")
    wakeup = core.waiter()
    last = (None, 0.0)
    started = False
    try:
        while True:
            waited = waited_before + time.monotonic() - t0
            outcome = await core.run(core.queue_try_start, entry_id, owner, req, groups, waited)
            if outcome.state == "started":
                started = True
                await core.run(core.usage.event, "dequeued", "", owner.user_name,
                               owner.server_name, "", waited)
                spawner.gpulab_event(f"Your turn after {waited / 60:.1f} min in the queue", progress=15)
                return outcome.allocation
            if outcome.state in ("cancelled", "gone"):
                raise SpawnException("Your queued request was cancelled.", reason="cancelled", status_code=409)
            if waited > max_wait:
                await core.run(core.queue.remove, entry_id)
                raise SpawnException(
                    f"No GPUs freed up for your request within {max_wait / 3600:g} h, so it left the "
                    "queue. Try again later, ask for fewer GPUs or another type.",
                    reason="queue_timeout", status_code=409)
            now_mono = time.monotonic()
            # a new line when the position or the queue's length changes (not only once a minute)
            if (outcome.position, outcome.waiting) != last[0] or now_mono - last[1] > REPORT_EVERY:
                eta = await core.run(core.queue_estimate, outcome, types, req.gpus)
                now = dt.datetime.now(dt.timezone.utc)
                why = WHY.get(outcome.reason, "")
                spawner.gpulab_event(
                    f"Queue position {outcome.position} of {outcome.waiting}: {_eta_text(eta, now)} "
                    f"(waiting {waited / 60:.0f} min{'; ' + why if why else ''})")
                last = ((outcome.position, outcome.waiting), now_mono)
            wakeup.clear()
            try:
                await asyncio.wait_for(wakeup.wait(), timeout=LOOK_EVERY)
            except asyncio.TimeoutError:
                pass
    finally:
        core.forget_waiter(wakeup)
        if not started:
            # the spawn was interrupted (the user stopped it) or refused: leave the queue. A hub
            # that dies here runs no finally, so its requests stay queued for the next hub.
            await asyncio.shield(core.run(core.queue.remove, entry_id))
