"""Telling people early that their budget is nearly spent: each round, for the people with a
running GPU server (only they spend), a ``budget_low`` event once per budget window when the
spent share reaches ``notifications.budget_warn_at`` (the notifier emails it to those who chose
so). The decision is pure (``compose.budget_due``); this gathers and writes."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from hub_plugins.accounting.budgets import fmt_amount
from hub_plugins.notify.compose import budget_due
from hub_plugins.store.usage import aware

log = logging.getLogger("gpulab.culler")


def _note(user: str, core, groups, now: dt.datetime, warn_at: float, currency: str,
          last: dt.datetime | None) -> tuple | None:
    limit = core.effective(user, groups, now).limits.budget
    if limit is None:
        return None
    st = core.budget_keeper.personal(user, limit, now)
    if not budget_due(st.used, st.limit, warn_at, st.window_start, last, now):
        return None
    resets = f" It is whole again on {st.resets_at:%Y-%m-%d %H:%M} UTC." if st.resets_at else ""
    detail = (f"You have used {fmt_amount(st.used, st.unit, currency)} of your budget of "
              f"{fmt_amount(st.limit, st.unit, currency)}.{resets} When it is spent, gpulab starts no new "
              "GPU servers for you until then.")
    return detail, 100 * st.used / st.limit


async def budget_notes(core, live, users: list[dict], now: dt.datetime) -> int:
    running = live.current
    warn_at = running.raw["notifications"]["budget_warn_at"]
    if warn_at is None:
        return 0
    currency = running.raw["billing"]["currency"]
    holders = {row.user_name for row, devices in (await asyncio.to_thread(core.allocator.holdings)).values()
               if devices}
    if not holders:
        return 0
    last: dict[str, dt.datetime] = {}  # when each was last told (a window is at most a year)
    for e in await asyncio.to_thread(core.usage.events, "budget_low", now - dt.timedelta(days=400)):
        last[e.user_name] = max(aware(e.at), last.get(e.user_name, aware(e.at)))
    told = 0
    for u in users:
        if u["name"] not in holders:
            continue
        note = await asyncio.to_thread(_note, u["name"], core, u.get("groups") or [], now, warn_at, currency,
                                       last.get(u["name"]))
        if note is not None:
            await asyncio.to_thread(core.usage.event, "budget_low", "budget", u["name"], "", note[0], note[1])
            log.info("%s has spent %.0f%% of their budget", u["name"], note[1])
            told += 1
    return told
