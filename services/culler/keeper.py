"""The queue's keeper: a queued request whose waiting spawn was lost (the hub restarted) is
started again through the hub's API; the hub recognises it and it keeps its place in the queue.
The choice is pure (:func:`lost`); :func:`restart_lost` does the I/O. Run by the culler each round.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging

from hub_plugins.store.usage import aware
from services.base import HubAPIError

log = logging.getLogger("gpulab.culler")


def lost(entries, active: set[tuple[str, str]], now: dt.datetime, lost_after: dt.timedelta) -> list:
    """The waiting entries nobody has looked at for ``lost_after`` whose server is not active."""
    return [e for e in entries if e.state == "waiting" and now - aware(e.heartbeat_at) > lost_after
            and (e.user_name, e.server_name) not in active]


async def restart_lost(hub, queue, users: list[dict], now: dt.datetime, lost_after: dt.timedelta) -> list:
    active = {(u["name"], n) for u in users for n in (u.get("servers") or {})}
    found = lost(await asyncio.to_thread(queue.entries), active, now, lost_after)
    for e in found:
        log.info("restarting %s:%s's queued request after a lost spawn", e.user_name, e.server_name)
        try:
            await hub.start(e.user_name, e.server_name, json.loads(e.options))
        except HubAPIError as err:
            log.warning("could not restart %s:%s's queued request: %s", e.user_name, e.server_name, err)
    return found
