"""The notifier: tells people about gpulab's events by email and on their chat webhook, as each
chose on their usage page.

Each channel has its own place in ``gpulab_events`` (the places survive restarts: each event is
told at most once per channel), so a chat server that fails never makes an email go out twice,
nor the other way round.

- Email reads from one cursor, composes with ``hub_plugins.notify.compose`` and sends with
  ``smtp.send`` in a thread. There is one mail server for everyone, so when it is down it holds
  the cursor: nothing is lost while it restarts.
- Webhooks go to as many chat servers as people gave, so one that is down must not hold back
  everyone else's: each person's webhook has its own place (``webhook_last_id``). A failing one
  holds back only its owner's later messages (which stay in order), and is tried again each
  round; a refusal that asking again will not change (a 4xx, a redirect, which is never
  followed, a URL whose host is no longer allowed) drops that message at once.

On both, a message that could not be sent for ``give_up_after_minutes`` is dropped with a log
line. Runs in the culler's process, beside its rounds, every ``notifications.poll_seconds``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import smtplib
from urllib.parse import urlsplit

from hub_plugins.notify import chat, smtp
from hub_plugins.notify.compose import KIND_TO_EVENT, compose, wants
from hub_plugins.notify.prefs import PrefsStore
from hub_plugins.notify.webhook import valid_webhook, verdict
from hub_plugins.store.usage import aware

log = logging.getLogger("gpulab.notify")
UTC = dt.timezone.utc


class Notifier:
    def __init__(self, live, db, send=smtp.send, post=chat.post):
        self.live, self.prefs, self.send, self.post = live, PrefsStore(db), send, post

    @property
    def conf(self):
        return self.live.current.raw["notifications"]

    def hub_url(self) -> str:
        return self.conf["hub_url"] or self.live.current.raw["hub"]["bind_url"]

    def keep_alive_hours(self) -> float | None:
        """A keep-alive file holds off idle stops only where the culler can read homes (local)."""
        running = self.live.current
        return float(running.culler["keep_alive_max_hours"]) if running.backend == "local" else None

    def note(self, e):
        return compose(e.kind, e.reason, e.user_name, e.server_name, e.detail, e.value,
                       self.hub_url(), self.keep_alive_hours())

    async def run_once(self) -> int:
        """One look on both channels; returns how many messages went out."""
        return sum(await asyncio.gather(self.email_once(), self.webhooks_once()))

    async def email_once(self) -> int:
        """Send what is new by email; returns how many emails went out."""
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
            note = self.note(e)
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

    async def webhooks_once(self) -> int:
        """Post what is new to people's webhooks, everyone's at once; returns how many went out."""
        if not self.conf["enabled"]:
            return 0
        rows = await asyncio.to_thread(self.prefs.webhook_pending)
        by_user: dict[str, list] = {}
        for e, url, chosen in rows:
            by_user.setdefault(e.user_name, []).append((e, url, chosen))
        return sum(await asyncio.gather(*(self._post_in_order(user, items) for user, items in by_user.items())))

    async def _post_in_order(self, user: str, items) -> int:
        """One person's events, oldest first; stops at one to try again next round."""
        done = sent = 0
        for e, url, chosen in items:
            note = self.note(e)
            if note is not None and wants(chosen, KIND_TO_EVENT[e.kind]):
                outcome = await self._post(user, url, note, e.at)
                if outcome == "held":
                    break  # this person's place stays before this event
                sent += outcome == "sent"
            done = e.id
        if done:
            await asyncio.to_thread(self.prefs.advance_webhook, user, done)
        return sent

    async def _post(self, user: str, url: str, note, at) -> str:
        """'sent', 'held' (try again next round) or 'dropped', with a log line."""
        hooks = self.conf["webhooks"]
        try:  # again here: allowed_hosts may have changed since the person saved it
            url = valid_webhook(url, hooks["allowed_hosts"], hooks["require_https"])
        except ValueError as err:
            log.error("dropped %s's %s webhook message: %s", user, note.event, err)
            return "dropped"
        code = await self.post(url, note, float(hooks["timeout_seconds"]))
        outcome = verdict(code)
        host = urlsplit(url).netloc  # the path is the webhook's secret: never logged
        if outcome == "sent":
            log.info("told %s (%s) on their webhook at %s", user, note.event, host)
            return "sent"
        give_up = dt.timedelta(minutes=float(self.conf["give_up_after_minutes"]))
        if outcome == "retry" and dt.datetime.now(UTC) - aware(at) < give_up:
            log.warning("webhook of %s at %s answered %s; trying again in %ss", user, host, code,
                        self.conf["poll_seconds"])
            return "held"
        why = f"gave up after {give_up}" if outcome == "retry" else "asking again will not help"
        log.error("dropped %s's %s webhook message: %s answered %s (%s)", user, note.event, host, code, why)
        return "dropped"

    async def run_forever(self) -> None:
        """The channels in loops of their own: a slow chat server never delays the email."""
        await asyncio.gather(self._every_poll(self.email_once), self._every_poll(self.webhooks_once))

    async def _every_poll(self, once) -> None:
        while True:
            try:
                await once()
            except Exception:
                log.exception("notifying failed; trying again")
            await asyncio.sleep(float(self.conf["poll_seconds"]))
