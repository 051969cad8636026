"""Reclaiming borrowed servers, once a culler round (I/O): ask the pure choice
(:func:`hub_plugins.queue.borrow.reclaims`, through ``queue/reclaim_store.py``) which borrowed
servers to take back for the requests within quota that have waited
``queue.borrowing.reclaim_after_minutes``; warn each (event ``warned``, reason ``reclaim``: the
notifier emails it, the culler's webhook is called) and mark it; stop it through the hub's API
once ``grace_minutes`` have passed, its usage record closing with reason ``reclaimed``. The
waiting request then starts through the queue as usual (the stop wakes it).

The marks live on the usage records, so a culler restarted mid-grace stops on time and chooses
nobody twice; if nobody within quota waits any more, the reclaims not yet due are called off.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from hub_plugins.notify.compose import in_minutes
from hub_plugins.queue.reclaim_store import REASON, Reclaim, ReclaimStore
from hub_plugins.store.usage import naive

from .decide import Action

log = logging.getLogger("gpulab.culler")


def warning(r: Reclaim, grace: dt.timedelta) -> Action:
    """The warning for one chosen server (what the person reads, by email and webhook)."""
    left = grace.total_seconds() / 60
    return Action(r.user_name, r.server_name, "warn", "reclaim",
                  f"{r.label} will be stopped {in_minutes(left)}: it runs on GPUs borrowed beyond your quota, "
                  "and someone within their quota is waiting for them. Save your work; start it again "
                  "within your quota, or borrow again later.", 1.0, left)


def stop(r: Reclaim) -> Action:
    return Action(r.user_name, r.server_name, "cull", "reclaim",
                  f"Stopped {r.label}: its borrowed GPUs were reclaimed for a request within quota.")


async def reclaim_round(culler, users, now: dt.datetime) -> list[Action]:
    """Warn what the choice takes back, then stop what is due. ``culler``: the running Culler
    (its core, settings, webhooks and ``_act``)."""
    borrowing = culler.live.current.core.queue.borrowing
    if not borrowing.enabled:
        return []
    store = ReclaimStore(culler.core.queue)
    at = naive(now)
    chosen, wanted = await asyncio.to_thread(store.choose, culler.core.inventory(), at, borrowing.reclaim_after)
    actions = []
    if not wanted:
        called_off = await asyncio.to_thread(store.call_off, at)
        if called_off:
            log.info("nobody within quota waits any more: %d reclaim(s) called off", called_off)
    for r in chosen:
        a = warning(r, borrowing.grace)
        if not await asyncio.to_thread(store.warn, r, at + borrowing.grace, f"{REASON}: {a.message}"):
            continue  # marked already, or stopped meanwhile
        log.info("reclaiming %s for %s's request within quota: %s", r.label, r.for_user, a.message)
        await asyncio.to_thread(culler.core.usage.event, "warned", a.reason, a.user, a.server, a.message,
                                a.minutes_left)
        await culler._webhook(a, users)
        actions.append(a)
    for r in await asyncio.to_thread(store.due, at):
        a = stop(r)
        await culler._act(a, users)  # pending reason 'reclaimed: ...', event 'culled', webhook, stop
        actions.append(a)
    return actions
