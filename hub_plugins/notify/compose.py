"""Which of gpulab's events people are told about, and what the message says (pure: tested with
tables in ``tests/unit/test_notify.py``).

The events are rows of ``gpulab_events`` that other parts write: ``dequeued`` (a queued request
got its GPUs: its server is starting), ``warned`` and ``culled`` (the culler's warning before a
stop, and the stop), ``budget_low`` (the culler saw most of a personal budget spent, once per
budget window: :func:`budget_due`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

# what a person can choose, and what each means (the usage page shows these words)
EVENTS = {
    "queue_started": "your queued request got its GPUs and the server is starting",
    "stop_warning": "your server will be stopped soon (idle, run time, budget, borrowed GPUs reclaimed)",
    "stopped": "your server was stopped by gpulab",
    "budget_warning": "most of your budget is spent (notifications.budget_warn_at, 80 % by default)",
}
KIND_TO_EVENT = {"dequeued": "queue_started", "warned": "stop_warning", "culled": "stopped",
                 "budget_low": "budget_warning"}
# a keep-alive file holds off only the idle clocks (services/culler/decide.py)
IDLE_REASONS = ("gpu_idle", "inactive")

# an address people type: one local part and one domain, printable ASCII, no spaces, no line
# breaks (a header line with a CR/LF in it would let them add headers of their own)
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")


@dataclass(frozen=True)
class Note:
    user: str
    event: str
    subject: str
    body: str


def in_minutes(minutes: float) -> str:
    """'in 5 min'; under a minute, not 'in 0 min' (which reads as: now). The culler's warning
    and the email say the same."""
    return f"in {minutes:.0f} min" if minutes >= 1 else "in less than a minute"


def budget_due(used: float, limit: float | None, warn_at: float | None, window_start: dt.datetime | None,
               last_warned: dt.datetime | None, now: dt.datetime) -> bool:
    """Whether to tell someone that ``warn_at`` of their budget is spent: once per budget window
    (a fixed period's, or a rolling window's start), once a day for regenerating credits."""
    if warn_at is None or limit is None or limit <= 0 or used < warn_at * limit:
        return False
    since = window_start if window_start is not None else now - dt.timedelta(days=1)
    return last_warned is None or last_warned < since


def valid_email(text: str) -> str:
    """The address, or ValueError saying what to change ("" means: no email)."""
    text = (text or "").strip()
    if not text:
        return ""
    if len(text) > 254 or not _EMAIL.fullmatch(text):
        raise ValueError("'email' must be one address like ann@example.org (ASCII letters, digits and "
                         "the usual signs, at most 254 characters), or empty for no email.")
    return text


def valid_events(items) -> list[str]:
    """The chosen events in a fixed order, or ValueError naming the unknown one."""
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ValueError(f"'events' must be a list of names, some of: {', '.join(EVENTS)}.")
    unknown = [i for i in items if i not in EVENTS]
    if unknown:
        raise ValueError(f"Unknown event '{unknown[0][:40]}': choose from {', '.join(EVENTS)}.")
    return [e for e in EVENTS if e in items]


def wants(events_csv: str, event: str) -> bool:
    return event in (events_csv or "").split(",")


def compose(kind: str, reason: str, user: str, server: str, detail: str, value: float,
            hub_url: str, keep_alive_hours: float | None) -> Note | None:
    """The message for one event row, or None when people are not told about this kind.

    ``keep_alive_hours`` is how long a ``~/.keep-alive`` file holds off an idle stop where the
    backend honours it (the local backend), None elsewhere: the warning only tells people what
    works for their server.
    """
    event = KIND_TO_EVENT.get(kind)
    if event is None:
        return None
    label = f"server '{server}'" if server else "server"
    link = hub_url.rstrip("/") + "/hub/home"
    if event == "queue_started":
        waited = f" after {value / 60:.0f} min in the queue" if value >= 60 else ""
        return Note(user, event, f"gpulab: your {label} is starting",
                    f"Hello {user},\n\nyour queued request got its GPUs{waited}: your {label} is starting "
                    f"now and will be ready in a moment.\n\nOpen it: {link}\n")
    if event == "stop_warning":
        if reason in IDLE_REASONS and keep_alive_hours:
            keep = (f"To keep it running, use it, or run 'touch ~/.keep-alive' in a terminal on the server "
                    f"(that holds off an idle stop for up to {keep_alive_hours:g} h).")
        else:
            keep = "Save your work before then."
        return Note(user, event, f"gpulab: your {label} will be stopped {in_minutes(value)}",
                    f"Hello {user},\n\n{detail}\n\n{keep}\n\nYour servers: {link}\n")
    if event == "budget_warning":
        return Note(user, event, f"gpulab: {value:.0f}% of your budget is spent",
                    f"Hello {user},\n\n{detail}\n\nYour usage: {hub_url.rstrip('/')}/services/billing/\n")
    return Note(user, event, f"gpulab: your {label} was stopped",
                f"Hello {user},\n\n{detail}\n\nStart it again when you need it: {link}\n")
