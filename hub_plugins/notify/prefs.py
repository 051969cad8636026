"""People's notification choices (``gpulab_notify_prefs``) and the notifier's places in
``gpulab_events``: email's in ``gpulab_notify_cursor``, each person's webhook's in their row."""

from __future__ import annotations

import sqlalchemy as sa

from ..store.db import Database
from ..store.models import Event, NotifyCursor, NotifyPrefs, utcnow
from .compose import EVENTS, KIND_TO_EVENT

CURSOR = "email"


class PrefsStore:
    def __init__(self, db: Database):
        self.db = db

    def get(self, user: str) -> dict:
        """A person's choice; someone who never chose gets no email and every event ticked, so
        that typing an address is all it takes."""

        def run():
            with self.db.read() as s:
                row = s.get(NotifyPrefs, user)
                if row is None:
                    return {"user": user, "email": "", "webhook": "", "events": list(EVENTS), "updated_at": None}
                return {"user": user, "email": row.email, "webhook": row.webhook,
                        "events": [e for e in row.events.split(",") if e],
                        "updated_at": row.updated_at.isoformat() + "Z"}

        return self.db.retrying(run)

    def set(self, user: str, email: str, events: list[str], webhook: str | None = None) -> dict:
        """Store a choice; ``webhook`` None keeps the one stored (scripts written before webhooks
        existed send only email and events)."""

        def run():
            with self.db.write() as s:
                row = s.get(NotifyPrefs, user) or NotifyPrefs(user_name=user, webhook="", webhook_last_id=0)
                row.email, row.events, row.updated_at = email, ",".join(events), utcnow()
                if webhook is not None:
                    if webhook and not row.webhook:  # a new webhook starts now: history is not posted
                        row.webhook_last_id = s.scalar(sa.select(sa.func.max(Event.id))) or 0
                    row.webhook = webhook
                s.add(row)

        self.db.retrying(run)
        return self.get(user)

    def all(self) -> dict[str, tuple[str, str]]:
        """user -> (email, events csv) for everyone with an address."""

        def run():
            with self.db.read() as s:
                return {r.user_name: (r.email, r.events)
                        for r in s.scalars(sa.select(NotifyPrefs).where(NotifyPrefs.email != ""))}

        return self.db.retrying(run)

    # -- the notifier's place ----------------------------------------------------------------
    def pending(self, limit: int = 200) -> list[Event]:
        """Events after the cursor that people may be told about, oldest first. The first call
        ever puts the cursor at the newest event: history is not mailed out."""

        def read():
            with self.db.read() as s:
                cur = s.get(NotifyCursor, CURSOR)
                if cur is None:
                    return None
                return list(s.scalars(sa.select(Event).where(
                    Event.id > cur.last_id, Event.kind.in_(list(KIND_TO_EVENT))).order_by(Event.id).limit(limit)))

        def place():
            with self.db.write() as s:
                if s.get(NotifyCursor, CURSOR) is None:
                    s.add(NotifyCursor(name=CURSOR, last_id=s.scalar(sa.select(sa.func.max(Event.id))) or 0))

        rows = self.db.retrying(read)  # every few seconds: a read, no write lock
        if rows is None:
            self.db.retrying(place)
            return []
        return rows

    def advance(self, last_id: int) -> None:
        def run():
            with self.db.write() as s:
                cur = s.get(NotifyCursor, CURSOR)
                if cur is not None and last_id > cur.last_id:
                    cur.last_id = last_id

        self.db.retrying(run)

    # -- each person's webhook's place ---------------------------------------------------------
    def webhook_pending(self, limit: int = 200) -> list[tuple[Event, str, str]]:
        """(event, webhook, events csv) after each person's own place, oldest first, for everyone
        with a webhook."""

        def run():
            with self.db.read() as s:
                # person by person, each from their place (ix_gpulab_events_user_name_id): a join
                # from the events' side walked a year of everyone's events every poll
                people = s.execute(sa.select(NotifyPrefs.user_name, NotifyPrefs.webhook, NotifyPrefs.events,
                                             NotifyPrefs.webhook_last_id).where(NotifyPrefs.webhook != "")).all()
                out = []
                for p in people:
                    q = (sa.select(Event).where(Event.user_name == p.user_name, Event.id > p.webhook_last_id,
                                                Event.kind.in_(list(KIND_TO_EVENT)))
                         .order_by(Event.id).limit(limit))
                    out += [(e, p.webhook, p.events) for e in s.scalars(q)]
                out.sort(key=lambda item: item[0].id)
                return out[:limit]

        return self.db.retrying(run)

    def advance_webhook(self, user: str, last_id: int) -> None:
        def run():
            with self.db.write() as s:
                row = s.get(NotifyPrefs, user)
                if row is not None and last_id > row.webhook_last_id:
                    row.webhook_last_id = last_id

        self.db.retrying(run)
