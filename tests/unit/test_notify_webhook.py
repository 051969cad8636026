"""People's chat webhooks: which URLs are accepted (tables: the service must never be made to
call a host the admin did not allow), and the notifier against a real chat server (a tornado app
started here), a real SMTP server and a real database: each event is posted once, only to whom
chose it, a chat server that fails holds back only its owner's messages and never makes an
email go out twice, a redirect is not followed."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from hub_plugins.notify.compose import EVENTS, Note
from hub_plugins.notify.prefs import PrefsStore
from hub_plugins.notify.webhook import payload, shown, valid_webhook, verdict
from hub_plugins.settings.schema import DEFAULTS
from hub_plugins.store.db import Database
from hub_plugins.store.models import Event
from hub_plugins.store.usage import UsageStore
from services.culler.notify import Notifier
from tests.support.chat import ChatServer
from tests.support.smtp import SMTPServer, free_port

ALLOWED = ["hooks.slack.com", "chat.example.org:8065", "[::1]:8065", "10.0.0.5"]
SLACK = "https://hooks.slack.com/services/T000/B000/XXXXXXXX"


@pytest.mark.parametrize("url, https, ok", [
    (SLACK, True, SLACK),
    ("  " + SLACK + "\n", True, SLACK),  # pasted with spaces around: what is stored has none
    ("", True, ""), ("   ", True, ""),  # no webhook
    ("https://HOOKS.Slack.COM/services/x", True, "https://HOOKS.Slack.COM/services/x"),  # host names ignore case
    ("https://hooks.slack.com:443/services/x", True, "https://hooks.slack.com:443/services/x"),  # the default port
    ("https://chat.example.org:8065/hooks/abc", True, "https://chat.example.org:8065/hooks/abc"),
    ("http://chat.example.org:8065/hooks/abc", False, "http://chat.example.org:8065/hooks/abc"),
    ("https://[::1]:8065/hooks/abc", True, "https://[::1]:8065/hooks/abc"),  # IPv6, as listed
    ("https://10.0.0.5/hooks/abc", True, "https://10.0.0.5/hooks/abc"),
    # the scheme
    ("http://hooks.slack.com/services/x", True, "must start with https://"),
    ("ftp://hooks.slack.com/services/x", False, "must start with https:// or http://"),
    ("file:///etc/passwd", True, "must start with https://"),
    ("hooks.slack.com/services/x", True, "must start with https://"),
    # a user name or password: the host a reader sees is not the one called
    ("http://evil@hooks.slack.com/x", False, "user name or password"),
    ("https://hooks.slack.com:pw@evil.example/x", True, "user name or password"),
    ("https://u:p@hooks.slack.com/x", True, "user name or password"),
    # the host: exact names only
    ("https://hooks.slack.com.evil.com/x", True, "a host this hub allows"),
    ("https://evil.com/hooks.slack.com", True, "a host this hub allows"),
    ("https://evil.hooks.slack.com/x", True, "a host this hub allows"),
    ("https://hooks.slack.com./x", True, "a host this hub allows"),
    ("https://hooks%2eslack.com/x", True, "a host this hub allows"),
    ("https://127.0.0.1/x", True, "a host this hub allows"),
    ("https://169.254.169.254/latest/meta-data", True, "a host this hub allows"),
    ("https://[::1]/x", True, "a host this hub allows"),  # IPv6 without the allowed port
    ("https://[::2]:8065/x", True, "a host this hub allows"),
    ("https:///x", True, "a host this hub allows"),
    # the port: a bare entry allows only the scheme's own, a host:port entry only that port
    ("https://hooks.slack.com:8443/x", True, "a host this hub allows"),
    ("https://chat.example.org/hooks/abc", True, "a host this hub allows"),
    ("https://chat.example.org:8066/hooks/abc", True, "a host this hub allows"),
    ("https://10.0.0.5:22/x", True, "a host this hub allows"),
    ("https://hooks.slack.com:99999/x", True, "is not a URL"),
    ("https://hooks.slack.com:x/x", True, "is not a URL"),
    ("https://[::1/x", True, "is not a URL"),
    # characters: no header smuggling, no look-alike hosts, no backslash tricks
    ("https://hooks.slack.com/x\r\nX-Evil: 1", True, "plain ASCII"),
    ("https://hooks.slack.com/x y", True, "plain ASCII"),
    ("https://hooks.slack.com/x\ty", True, "plain ASCII"),
    ("https://hooks.slаck.com/x", True, "plain ASCII"),  # a Cyrillic 'а'
    ("https://hooks.slack.com/é", True, "plain ASCII"),
    ("https://evil.com\\@hooks.slack.com/x", True, "plain ASCII"),
    ("https://hooks.slack.com/" + "x" * 10_000, True, "at most 2,000 characters"),
    (5, True, "must be text"), (None, True, "must be text"), (["https://hooks.slack.com/x"], True, "must be text"),
])
def test_valid_webhook(url, https, ok):
    if ok == "" or (ok or "").startswith(("https://", "http://")):
        assert valid_webhook(url, ALLOWED, https) == ok
    else:
        with pytest.raises(ValueError, match=ok):
            valid_webhook(url, ALLOWED, https)


def test_what_a_refused_webhook_says():
    with pytest.raises(ValueError) as e:
        valid_webhook("https://evil.com/x", ALLOWED)
    assert str(e.value) == ("'webhook' must go to a host this hub allows: hooks.slack.com, chat.example.org:8065, "
                            "[::1]:8065, 10.0.0.5 (not 'evil.com'). Ask an admin to add yours to "
                            "notifications.webhooks.allowed_hosts.")
    with pytest.raises(ValueError, match="an admin must list the chat servers in notifications.webhooks.allowed_hosts"):
        valid_webhook(SLACK, [])  # webhooks are off
    assert valid_webhook("", []) == ""  # ... and no webhook is always fine
    assert valid_webhook("https://hooks.slack.com/x", ["HOOKS.SLACK.COM"])  # the admin's entries ignore case too


@pytest.mark.parametrize("code, says", [(200, "sent"), (204, "sent"), (301, "drop"), (302, "drop"), (307, "drop"),
                                        (400, "drop"), (404, "drop"), (410, "drop"), (408, "retry"), (429, "retry"),
                                        (500, "retry"), (503, "retry"), (599, "retry")])
def test_verdict(code, says):
    assert verdict(code) == says


def test_payload_and_what_others_see():
    note = Note("ann", "stopped", "gpulab: your server was stopped", "Hello ann,\n\nStopped.\n")
    assert json.loads(payload(note)) == {"text": "gpulab: your server was stopped\n\nHello ann,\n\nStopped.\n"}
    assert shown(SLACK) == "https://hooks.slack.com/…" and shown("") == ""


# -- the notifier, with a real chat server, SMTP server and database -----------------------------------
@pytest.fixture
def db(tmp_path):
    d = Database(f"sqlite:///{tmp_path}/gpulab.sqlite")
    d.upgrade()
    yield d
    d.dispose()


@pytest.fixture
def chat():
    with ChatServer() as server:
        yield server


@pytest.fixture
def smtpd():
    with SMTPServer() as server:
        yield server.controller, server.inbox


def live_with(smtp_port: int | None, chat: ChatServer, allowed: list[str] | None = None, **notifications):
    raw = copy.deepcopy(DEFAULTS)
    raw["notifications"]["smtp"].update(host="127.0.0.1" if smtp_port else None, port=smtp_port or 25,
                                        timeout_seconds=3)
    raw["notifications"]["webhooks"].update(
        allowed_hosts=[f"127.0.0.1:{chat.port}"] if allowed is None else allowed, require_https=False,
        timeout_seconds=2)
    raw["notifications"].update(hub_url="https://hub.example.org", **notifications)
    return SimpleNamespace(current=SimpleNamespace(raw=raw, backend="local", culler=raw["culler"]))


def run(coro):
    return asyncio.run(coro)


def subjects(texts: list[str]) -> list[str]:
    return [t.split("\n\n")[0] for t in texts]


def test_each_event_is_posted_once_to_whom_chose_it_beside_the_email(db, chat, smtpd):
    ctl, inbox = smtpd
    usage, prefs = UsageStore(db), PrefsStore(db)
    notifier = Notifier(live_with(ctl.port, chat), db)
    usage.event("culled", "gpu_idle", "ann", "", "before ann had a webhook", 0)
    run(notifier.run_once())  # places email's cursor
    prefs.set("ann", "ann@example.org", ["queue_started", "stopped"], chat.url("/hooks/ann"))
    prefs.set("bob", "", ["stopped"], chat.url("/hooks/bob"))  # bob: no email, stops only
    prefs.set("cal", "", list(EVENTS))  # cal gave neither
    assert prefs.get("ann")["webhook"] == chat.url("/hooks/ann")
    usage.event("dequeued", "", "ann", "", "", 600)
    usage.event("warned", "gpu_idle", "ann", "", "ann will be stopped in 5 min", 5)  # not chosen
    usage.event("warned", "gpu_idle", "bob", "", "bob will be stopped in 5 min", 5)  # not chosen
    usage.event("refused", "quota", "bob", "", "never told", 0)
    usage.event("culled", "gpu_idle", "bob", "", "Stopped bob: GPUs idle for 30 min.", 0)
    usage.event("culled", "gpu_idle", "cal", "", "Stopped cal.", 0)
    assert run(notifier.run_once()) == 3  # ann's email, ann's post, bob's post
    assert subjects(chat.to("/hooks/ann")) == ["gpulab: your server is starting"]  # not the history
    assert chat.to("/hooks/bob") == ["gpulab: your server was stopped\n\nHello bob,\n\nStopped bob: GPUs idle for "
                                     "30 min.\n\nStart it again when you need it: https://hub.example.org/hub/home\n"]
    assert [m["Subject"] for m in inbox.messages] == ["gpulab: your server is starting"]
    assert run(notifier.run_once()) == 0 and len(chat.received) == 2 and len(inbox.messages) == 1  # once
    # a restarted notifier goes on from each person's place; a script that sends only email and
    # events (from before webhooks) keeps the webhook
    prefs.set("bob", "", ["stopped"])
    usage.event("culled", "runtime", "bob", "", "Stopped bob: run time 8 h.", 0)
    assert run(Notifier(live_with(ctl.port, chat), db).run_once()) == 1
    assert "run time 8 h" in chat.to("/hooks/bob")[-1]
    # emptied: no more posts
    prefs.set("bob", "", ["stopped"], "")
    usage.event("culled", "runtime", "bob", "", "after", 0)
    assert run(notifier.run_once()) == 0 and len(chat.to("/hooks/bob")) == 2


def test_a_failing_webhook_holds_back_only_its_owner_and_never_repeats_the_email(db, chat, smtpd):
    ctl, inbox = smtpd
    usage, prefs = UsageStore(db), PrefsStore(db)
    notifier = Notifier(live_with(ctl.port, chat), db)
    run(notifier.run_once())
    prefs.set("ann", "ann@example.org", list(EVENTS), chat.url("/hooks/ann"))
    prefs.set("bob", "", list(EVENTS), chat.url("/hooks/bob"))
    chat.answers["/hooks/ann"] = 500  # ann's chat server is broken
    usage.event("dequeued", "", "ann", "", "", 0)
    usage.event("culled", "inactive", "ann", "", "Stopped ann.", 0)
    usage.event("culled", "inactive", "bob", "", "Stopped bob.", 0)
    assert run(notifier.run_once()) == 3  # ann's two emails, bob's post
    assert run(notifier.run_once()) == 0  # ann's webhook asked again, the first message only
    assert subjects(chat.to("/hooks/ann")) == ["gpulab: your server is starting"] * 2
    assert len(inbox.messages) == 2 and len(chat.to("/hooks/bob")) == 1  # nothing else repeated
    chat.answers["/hooks/ann"] = 200  # mended: both, in order, once
    assert run(notifier.run_once()) == 2
    assert subjects(chat.to("/hooks/ann")) == ["gpulab: your server is starting"] * 3 + [
        "gpulab: your server was stopped"]
    assert run(notifier.run_once()) == 0 and len(inbox.messages) == 2 and len(chat.to("/hooks/bob")) == 1
    # and the other way round: a mail server that is down does not repeat the posts
    down = Notifier(live_with(free_port(), chat), db)
    usage.event("culled", "inactive", "ann", "", "again", 0)
    assert run(down.run_once()) == 1 and run(down.run_once()) == 0
    assert len(chat.to("/hooks/ann")) == 5 and len(inbox.messages) == 2
    assert run(notifier.run_once()) == 1 and len(inbox.messages) == 3 and len(chat.to("/hooks/ann")) == 5


def test_a_webhook_that_is_down_is_tried_until_given_up(db, chat):
    usage, prefs = UsageStore(db), PrefsStore(db)
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    notifier = Notifier(live_with(None, chat, allowed=[dead, f"127.0.0.1:{chat.port}"]), db)
    prefs.set("ann", "", ["stopped"], f"http://{dead}/hooks/ann")
    usage.event("culled", "inactive", "ann", "", "old", 0)
    assert run(notifier.run_once()) == 0 and run(notifier.run_once()) == 0  # held: her place stays
    assert prefs.webhook_pending()[0][0].detail == "old"
    # older than give_up_after_minutes: dropped with a log line, and the next one goes out
    with db.engine.begin() as c:
        c.execute(sa.update(Event.__table__).where(Event.__table__.c.detail == "old").values(
            at=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(hours=2)))
    assert run(notifier.run_once()) == 0 and prefs.webhook_pending() == []
    prefs.set("ann", "", ["stopped"], chat.url("/hooks/ann"))  # changed: her place stays where it was
    usage.event("culled", "inactive", "ann", "", "new", 0)
    assert run(notifier.run_once()) == 1 and [t.count("new") for t in chat.to("/hooks/ann")] == [1]


def test_a_redirect_is_not_followed_and_a_refusal_is_not_repeated(db, chat):
    usage, prefs = UsageStore(db), PrefsStore(db)
    notifier = Notifier(live_with(None, chat), db)
    prefs.set("ann", "", ["stopped"], chat.url("/hooks/ann"))
    prefs.set("bob", "", ["stopped"], chat.url("/hooks/bob"))
    chat.answers.update({"/hooks/ann": 302, "/hooks/bob": 404})
    usage.event("culled", "inactive", "ann", "", "x", 0)
    usage.event("culled", "inactive", "bob", "", "x", 0)
    assert run(notifier.run_once()) == 0 and run(notifier.run_once()) == 0
    assert sorted(p for p, _ in chat.received) == ["/hooks/ann", "/hooks/bob"]  # once each; not /hooks/redirected


def test_a_host_no_longer_allowed_is_not_called(db, chat):
    usage, prefs = UsageStore(db), PrefsStore(db)
    prefs.set("ann", "", ["stopped"], chat.url("/hooks/ann"))  # allowed when she saved it
    usage.event("culled", "inactive", "ann", "", "x", 0)
    assert run(Notifier(live_with(None, chat, allowed=["hooks.slack.com"]), db).run_once()) == 0
    assert run(Notifier(live_with(None, chat, allowed=[]), db).run_once()) == 0
    assert chat.received == [] and prefs.webhook_pending() == []  # dropped, with a log line
    usage.event("culled", "inactive", "ann", "", "x", 0)
    assert run(Notifier(live_with(None, chat, enabled=False), db).run_once()) == 0 and chat.received == []
