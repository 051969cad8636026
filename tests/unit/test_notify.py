"""Notifications: what each event says (tables), which addresses and choices are accepted, and
the notifier against a real SMTP server (aiosmtpd, started here) and a real database: each
event is told once, to whom chose it, a mail server that is down loses nothing."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import time
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from hub_plugins.notify.compose import EVENTS, budget_due, compose, valid_email, valid_events, wants
from hub_plugins.notify.prefs import PrefsStore
from hub_plugins.settings.schema import DEFAULTS
from hub_plugins.store.db import Database
from hub_plugins.store.models import Event
from hub_plugins.store.usage import UsageStore
from services.culler.notify import Notifier
from tests.support.smtp import SMTPServer, free_port

HUB = "https://hub.example.org"


@pytest.mark.parametrize("kind, reason, server, detail, value, keep, subject, has, lacks", [
    ("dequeued", "", "", "", 1260.0, None, "gpulab: your server is starting",
     ["after 21 min in the queue", "https://hub.example.org/hub/home"], []),
    ("dequeued", "", "big", "", 5.0, None, "gpulab: your server 'big' is starting", ["server 'big' is starting"],
     ["in the queue"]),
    ("warned", "gpu_idle", "", "ann will be stopped in 12 min: GPUs idle.", 11.6, 24.0,
     "gpulab: your server will be stopped in 12 min", ["touch ~/.keep-alive", "up to 24 h", "GPUs idle"], []),
    ("warned", "inactive", "", "x", 3.0, 24.0, "gpulab: your server will be stopped in 3 min", ["keep-alive"], []),
    # a keep-alive file does not hold off a run-time limit, nor help where the culler reads no homes
    ("warned", "runtime", "", "x", 3.0, 24.0, "gpulab: your server will be stopped in 3 min",
     ["Save your work"], ["keep-alive"]),
    ("warned", "gpu_idle", "", "x", 3.0, None, "gpulab: your server will be stopped in 3 min",
     ["Save your work"], ["keep-alive"]),
    ("warned", "budget", "", "x", 0.4, None, "gpulab: your server will be stopped in less than a minute", [], []),
    ("warned", "budget", "", "x", -2.0, None, "gpulab: your server will be stopped in less than a minute", [], []),
    ("culled", "gpu_idle", "", "Stopped ann: GPUs idle for 30 min.", 0.0, 24.0, "gpulab: your server was stopped",
     ["Stopped ann: GPUs idle", "Start it again"], []),
    ("budget_low", "budget", "", "You have used 8 GPU-hours of your budget of 10 GPU-hours.", 80.4, None,
     "gpulab: 80% of your budget is spent", ["used 8 GPU-hours", "https://hub.example.org/services/billing/"], []),
    ("refused", "quota", "", "x", 0.0, None, None, [], []),
    ("queued", "capacity", "", "x", 0.0, None, None, [], []),
])
def test_compose(kind, reason, server, detail, value, keep, subject, has, lacks):
    note = compose(kind, reason, "ann", server, detail, value, HUB, keep)
    if subject is None:
        assert note is None
        return
    assert note.subject == subject and note.body.startswith("Hello ann,")
    assert all(h in note.body for h in has), note.body
    assert not any(x in note.body for x in lacks), note.body


@pytest.mark.parametrize("text, ok", [
    ("ann@example.org", "ann@example.org"), (" ann.b+gpu@lab.uni-x.de ", "ann.b+gpu@lab.uni-x.de"), ("", ""),
    ("ann@example.org\r\nBcc: all@example.org", None), ("ann@localhost", None), ("ann", None),
    ("änn@example.org", None), ("ann@exämple.org", None), ("a" * 65 + "@example.org", None),
    ("ann@" + "b" * 250 + ".org", None), ("ann @example.org", None), ("ann@example.org,bob@example.org", None),
    ("<ann@example.org>", None), ("ann@-x.org", None),
])
def test_valid_email(text, ok):
    if ok is None:
        with pytest.raises(ValueError, match="one address like"):
            valid_email(text)
    else:
        assert valid_email(text) == ok


def test_valid_events():
    assert valid_events(["stopped", "queue_started"]) == ["queue_started", "stopped"]  # a fixed order
    assert valid_events([]) == []
    for bad in (["nope"], "stopped", [1], None, {"stopped": True}):
        with pytest.raises(ValueError):
            valid_events(bad)
    assert wants("queue_started,stopped", "stopped") and not wants("", "stopped") and not wants("stopped", "stop")


NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.timezone.utc)
MONTH = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("used, limit, warn_at, window, last, due", [
    (8.0, 10.0, 0.8, MONTH, None, True),  # reached: told
    (7.9, 10.0, 0.8, MONTH, None, False),  # not yet
    (12.0, 10.0, 0.8, MONTH, None, True),  # spent past it in one go: still told
    (9.0, 10.0, 0.8, MONTH, MONTH + dt.timedelta(days=3), False),  # told in this window already
    (9.0, 10.0, 0.8, MONTH, MONTH - dt.timedelta(days=3), True),  # told last month: a new window
    (9.0, 10.0, None, MONTH, None, False),  # switched off
    (9.0, None, 0.8, MONTH, None, False),  # no budget
    (0.0, 0.0, 0.8, MONTH, None, False),  # a zero budget refuses at once; nothing to warn of
    (9.0, 10.0, 0.8, None, NOW - dt.timedelta(hours=5), False),  # credits: at most once a day
    (9.0, 10.0, 0.8, None, NOW - dt.timedelta(hours=25), True),
])
def test_budget_due(used, limit, warn_at, window, last, due):
    assert budget_due(used, limit, warn_at, window, last, NOW) is due


# -- the notifier, with a real SMTP server and database --------------------------------------------
@pytest.fixture
def smtpd():
    with SMTPServer() as server:
        yield server.controller, server.inbox


@pytest.fixture
def db(tmp_path):
    d = Database(f"sqlite:///{tmp_path}/gpulab.sqlite")
    d.upgrade()
    yield d
    d.dispose()


def live_with(port: int | None, backend: str = "local", **notifications):
    raw = copy.deepcopy(DEFAULTS)
    raw["notifications"]["smtp"].update(host="127.0.0.1" if port else None, port=port or 25, timeout_seconds=3)
    raw["notifications"].update(hub_url=HUB, **notifications)
    return SimpleNamespace(current=SimpleNamespace(raw=raw, backend=backend, culler=raw["culler"]))


def run(coro):
    return asyncio.run(coro)


def test_each_event_is_told_once_to_whom_chose_it(db, smtpd):
    ctl, inbox = smtpd
    usage, prefs = UsageStore(db), PrefsStore(db)
    notifier = Notifier(live_with(ctl.port), db)
    usage.event("warned", "gpu_idle", "ann", "", "before the notifier ever ran", 5)
    assert run(notifier.run_once()) == 0  # the first look places the cursor: history is not mailed
    prefs.set("ann", "ann@example.org", ["queue_started", "stop_warning", "stopped"])
    prefs.set("bob", "bob@example.org", ["stopped"])  # bob chose stops only
    prefs.set("cal", "", list(EVENTS))  # cal gave no address
    usage.event("dequeued", "", "ann", "", "", 600)
    usage.event("warned", "gpu_idle", "bob", "", "bob will be stopped in 5 min", 5)
    usage.event("warned", "gpu_idle", "cal", "", "cal will be stopped in 5 min", 5)
    usage.event("refused", "quota", "ann", "", "not told", 0)
    usage.event("culled", "gpu_idle", "bob", "", "Stopped bob: GPUs idle for 30 min.", 0)
    assert run(notifier.run_once()) == 2
    got = [(m["X-Rcpt"], m["Subject"]) for m in inbox.messages]
    assert got == [("ann@example.org", "gpulab: your server is starting"),
                   ("bob@example.org", "gpulab: your server was stopped")]
    assert inbox.messages[0]["From"] == "gpulab <gpulab@localhost>" and inbox.messages[0]["Message-ID"]
    assert run(notifier.run_once()) == 0 and len(inbox.messages) == 2  # told once
    # a notifier started again (the culler restarted) goes on from where it was
    usage.event("culled", "runtime", "ann", "", "Stopped ann: run time 8 h.", 0)
    assert run(Notifier(live_with(ctl.port), db).run_once()) == 1
    assert inbox.messages[-1]["Subject"] == "gpulab: your server was stopped"
    assert "run time 8 h" in inbox.messages[-1].get_payload()


def test_a_mail_server_that_is_down_loses_nothing_and_old_mail_is_dropped(db, smtpd):
    ctl, inbox = smtpd
    usage, prefs = UsageStore(db), PrefsStore(db)
    down = Notifier(live_with(free_port()), db)  # nothing listens there
    run(down.run_once())
    prefs.set("ann", "ann@example.org", list(EVENTS))
    usage.event("dequeued", "", "ann", "", "", 0)
    usage.event("culled", "inactive", "ann", "", "Stopped ann: inactive for 8 h.", 0)
    assert run(down.run_once()) == 0
    up = Notifier(live_with(ctl.port), db)
    assert run(up.run_once()) == 2 and [m["Subject"] for m in inbox.messages] == [
        "gpulab: your server is starting", "gpulab: your server was stopped"]
    # an event that could not be sent for give_up_after_minutes is dropped, the next one goes out
    usage.event("culled", "inactive", "ann", "", "old", 0)
    with db.engine.begin() as c:
        c.execute(sa.update(Event.__table__).where(Event.__table__.c.detail == "old").values(
            at=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(hours=2)))
    assert run(down.run_once()) == 0
    usage.event("culled", "inactive", "ann", "", "new", 0)
    assert run(up.run_once()) == 1 and inbox.messages[-1].get_payload().count("new") == 1


def test_nothing_is_sent_without_a_mail_server_or_when_switched_off(db, smtpd):
    ctl, inbox = smtpd
    PrefsStore(db).set("ann", "ann@example.org", list(EVENTS))
    for live in (live_with(None), live_with(ctl.port, enabled=False)):
        n = Notifier(live, db)
        UsageStore(db).event("culled", "inactive", "ann", "", "x", 0)
        assert run(n.run_once()) == 0
    time.sleep(0.2)
    assert inbox.messages == []
