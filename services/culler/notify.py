"""The notifier: tells people about gpulab's events by email, as each chose on their usage page.

It reads ``gpulab_events`` from where it stopped last (the cursor survives restarts: each event
is told once), composes with ``hub_plugins.notify.compose`` and sends with ``smtp.send`` in a
thread. A mail server that is down holds the cursor, so nothing is lost while it restarts;
a message that could not be sent for ``give_up_after_minutes`` is dropped with a log line.
Runs in the culler's process, beside its rounds, every ``notifications.poll_seconds``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import smtplib

from hub_plugins.notify import smtp
from hub_plugins.notify.compose import KIND_TO_EVENT, compose, wants
from hub_plugins.notify.prefs import PrefsStore
from hub_plugins.store.usage import aware

log = logging.getLogger("gpulab.notify")
UTC = dt.timezone.utc


class Notifier:
    def __init__(self, live, db, send=smtp.send):
        self.live, self.prefs, self.send = live, PrefsStore(db), send

    @property
    def conf(self):
        return self.live.current.raw["notifications"]

    def hub_url(self) -> str:
        return self.conf["hub_url"] or self.live.current.raw["hub"]["bind_url"]

    def keep_alive_hours(self) -> float | None:
        """A keep-alive file holds off idle stops only where the culler can read homes (local)."""
        running = self.live.current
        return float(running.culler["keep_alive_max_hours"]) if running.backend == "local" else None

    async def run_once(self) -> int:
        """One look: send what is new; returns how many emails went out."""
        conf = self.conf
        if not conf["enabled"] or not conf["smtp"]["host"]:
            return 0
        events = await asyncio.to_thread(self.prefs.pending)
        if not events:
            return 0
        who = await asyncio.to_thread(self.prefs.all)
        give_up = dt.timedelta(minutes=float(conf["give_up_after_minutes"]))
        done = sent = 0
        for e in events:
            email, chosen = who.get(e.user_name, ("", ""))
            note = compose(e.kind, e.reason, e.user_name, e.server_name, e.detail, e.value,
                           self.hub_url(), self.keep_alive_hours())
            if note is not None and email and wants(chosen, KIND_TO_EVENT[e.kind]):
                try:
                    await asyncio.to_thread(self.send, dict(conf["smtp"]), email, note.subject, note.body)
                    sent += 1
                    log.info("told %s (%s) by email", e.user_name, note.event)
                except (OSError, smtplib.SMTPException) as err:
                    if dt.datetime.now(UTC) - aware(e.at) < give_up:
                        log.warning("email to %s failed (%s); trying again in %ss", e.user_name, err,
                                    conf["poll_seconds"])
                        break  # the cursor stays before this event
                    log.error("dropped %s's %s email after %s: %s", e.user_name, note.event, give_up, err)
            done = e.id
        if done:
            await asyncio.to_thread(self.prefs.advance, done)
        return sent

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("notifying failed; trying again")
            await asyncio.sleep(float(self.conf["poll_seconds"]))
