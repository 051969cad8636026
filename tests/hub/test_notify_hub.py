"""Notifications through a real hub, its culler and billing services, a real SMTP server and a
real chat server: people choose on their usage page (or its API), and an email (and a post on
their chat webhook, if they gave one) arrives for each event they chose: a warning before an
idle stop (not at the stop), the stop, a queued request's start, and most of a budget spent."""

from __future__ import annotations

import json

import pytest

from tests.support.chat import ChatServer
from tests.support.polling import gpulab_rows
from tests.support.smtp import SMTPServer

pytestmark = [pytest.mark.hub, pytest.mark.slow]


@pytest.fixture
def smtp():
    with SMTPServer() as server:
        yield server


@pytest.fixture
def chat():
    with ChatServer() as server:
        yield server


def test_warned_stopped_and_queued_start_arrive_by_email_and_webhook(hub_factory, smtp, chat):
    hub = hub_factory(start=False, inventory="2xA100-80GB", quotas={"default": {"max_gpus": 2, "max_servers": 1, "budget": 0.04}},
                      extra={"culler": {
                          "interval_seconds": 1,
                          "policies": [{"name": "gpu", "match": {"gpu": True}, "gpu_idle_minutes": 0.5,
                                        "inactive_minutes": None, "startup_grace_minutes": 0}],
                          "warn_at": [0.5],
                      }, "notifications": {"poll_seconds": 1, "hub_url": "https://gpus.example.org",
                                           "smtp": {"host": "127.0.0.1", "port": smtp.port},
                                           "webhooks": {"allowed_hosts": [f"127.0.0.1:{chat.port}"],
                                                        "require_https": False}},
                             "hub": {"slow_spawn_seconds": 0.5}})
    hub.state_dir.mkdir(parents=True, exist_ok=True)
    (hub.state_dir / "simulated-gpu-metrics.json").write_text(json.dumps({"*": {"util": 0, "power_w": 60}}))
    hub.start()
    hub.create_users("ann", "bob", "cal")
    ann, bob, cal = (hub.user_token(u) for u in ("ann", "bob", "cal"))

    def prefs(token, body=None, user=""):
        q = f"?user={user}" if user else ""
        if body is None:
            return hub.service("billing", f"api/notifications{q}", token=token)
        return hub.service("billing", f"api/notifications{q}", method="PUT", token=token, data=body)

    # the choice: someone who never chose has no address and every event ticked
    first = prefs(ann).json()
    assert first["email"] == "" and first["events"] == ["queue_started", "stop_warning", "stopped", "budget_warning"]
    assert prefs(ann, json.dumps({"email": "ann@example.org"})).json()["email"] == "ann@example.org"
    assert prefs(bob, json.dumps({"email": "bob@example.org", "events": ["queue_started"]})).status_code == 200
    assert prefs(cal, json.dumps({"email": "cal@example.org", "events": []})).status_code == 200
    hook = chat.url("/hooks/ann-secret")
    assert prefs(ann, json.dumps({"email": "ann@example.org", "webhook": hook})).json()["webhook"] == hook
    # bad input: a 4xx that says what to change, and nothing stored
    for body, says in [(json.dumps({"email": "ann@example.org\r\nBcc: all@example.org"}), "one address like"),
                       (json.dumps({"email": "ann@example.org", "events": ["everything"]}), "Unknown event"),
                       (json.dumps({"mail": "x"}), "Unknown field 'mail'"),
                       (json.dumps({"email": 12}), "must be text"),
                       (json.dumps({"webhook": "http://169.254.169.254/latest"}),
                        f"must go to a host this hub allows: 127.0.0.1:{chat.port} (not '169.254.169.254')"),
                       (json.dumps({"webhook": f"http://evil@127.0.0.1:{chat.port}/x"}), "user name or password"),
                       (json.dumps({"webhook": chat.url("/x\r\nX-Evil: 1")}), "plain ASCII"),
                       ("[1, 2]", "Send {"),
                       ("{" + '"email": "' + "a" * 10_000_000 + '"}', "")]:
        r = prefs(ann, body)
        assert 400 <= r.status_code < 500 and says in r.text, (r.status_code, r.text[:200])
    assert prefs(ann).json()["email"] == "ann@example.org" and prefs(ann).json()["webhook"] == hook
    # others' choices: not changed by anyone else, not read by users
    assert prefs(bob, json.dumps({"email": "bob@example.org"}), user="ann").status_code == 403
    assert prefs(bob, user="ann").status_code == 403
    # an admin may read it, but not the webhook's secret path
    assert prefs(None, user="ann").json()["email"] == "ann@example.org"
    assert prefs(None, user="ann").json()["webhook"] == f"http://127.0.0.1:{chat.port}/…"
    # the usage page shows one's own form
    page = hub.service("billing", "", token=ann).text
    assert 'id="notifications"' in page and 'value="ann@example.org"' in page and f'value="{hook}"' in page

    # ann holds both GPUs and lets them idle; bob's request waits for them. Her minimum charge
    # (2 GPUs x 60 s) is 83 % of her 0.04 GPU-hours: she is told that too
    hub.start_server("ann", {"gpus": 2})
    assert hub.spawn("bob", {"gpus": 1, "queue": True})[0] == 202
    warn = smtp.inbox.wait_for("ann@example.org", "will be stopped", timeout=60)
    stop = smtp.inbox.wait_for("ann@example.org", "was stopped", timeout=60)
    assert "gpus.example.org/hub/home" in warn.get_payload() and "keep-alive" in warn.get_payload()
    assert "will be stopped in less than a minute: its GPUs were idle" in warn.get_payload()
    started = smtp.inbox.wait_for("bob@example.org", "is starting", timeout=60)
    assert "your queued request got its GPUs" in started.get_payload()
    hub.wait_ready("bob", timeout=60)
    # the warning came before the stop, at half the idle time, not at the stop (both GPUs held:
    # scarcity halves the 30 s idle limit, so 7.5 s before)
    events = {e["kind"]: e for e in gpulab_rows(hub, "gpulab_events")
              if e["user_name"] == "ann" and e["kind"] in ("warned", "culled")}
    assert (events["culled"]["at"] - events["warned"]["at"]).total_seconds() >= 5
    # each once, and only what each chose: bob chose queue starts only, cal nothing
    budget = smtp.inbox.wait_for("ann@example.org", "of your budget is spent", timeout=30)
    assert "You have used 0.033 GPU-hours of your budget of 0.04 GPU-hours" in budget.get_payload()
    assert sorted(m["Subject"] for m in smtp.inbox.to("ann@example.org")) == [
        "gpulab: 83% of your budget is spent", "gpulab: your server was stopped",
        "gpulab: your server will be stopped in less than a minute"]
    assert [m["Subject"] for m in smtp.inbox.to("bob@example.org")] == ["gpulab: your server is starting"]
    assert smtp.inbox.to("cal@example.org") == []
    # ann's webhook got the same, each once (bob and cal gave none)
    chat.wait_for("/hooks/ann-secret", "of your budget is spent", timeout=30)
    assert sorted(t.split("\n\n")[0] for t in chat.to("/hooks/ann-secret")) == [
        "gpulab: 83% of your budget is spent", "gpulab: your server was stopped",
        "gpulab: your server will be stopped in less than a minute"]
    assert {p for p, _ in chat.received} == {"/hooks/ann-secret"}
