"""Borrowing through a real hub and its real culler service: ann borrows idle GPUs beyond her
quota; bob, within his, asks for GPUs that are not free and waits; after a warning and the grace
period ann's youngest borrowed server is stopped ('reclaimed'), bob's server starts, and her
server within quota runs on. Who may not borrow is refused (403), a non-boolean 'preemptible' too
(400)."""

from __future__ import annotations

import time

import pytest

from tests.support.inprocess import in_thread
from tests.support.polling import gpulab_rows, wait_for

pytestmark = [pytest.mark.hub, pytest.mark.slow]

GRACE_S, AFTER_S = 6, 3


@pytest.fixture
async def hub(inprocess_hub):
    """In the test process (``tests/support/inprocess.py``); the test's body runs in a thread."""
    h = await inprocess_hub(inventory="4xA100-80GB", extra={
        "quotas": {"default": {"max_gpus": 1, "max_servers": 3},
                   "groups": {"borrowers": {"max_gpus": 1, "max_servers": 3},
                              "researcher": {"max_gpus": 2, "max_servers": 2}}},
        "queue": {"borrowing": {"enabled": True, "groups": ["borrowers"], "rate_factor": 0.5,
                                "grace_minutes": GRACE_S / 60, "reclaim_after_minutes": AFTER_S / 60}},
        "billing": {"rates": {"*": 2.0}},
        "culler": {"interval_seconds": 1},
    })
    await h.aio.create_users("ann", "bob", "cal", groups={"borrowers": ["ann"], "researcher": ["bob"]})
    return h


def usage(hub, user, server=""):
    return [r for r in gpulab_rows(hub, "gpulab_usage", user) if r["server_name"] == server][-1]


@in_thread
def test_a_borrowed_server_is_reclaimed_for_a_request_within_quota(hub):
    hub.start_server("ann", {"gpus": 1})  # her quota: 1 GPU
    hub.start_server("ann", {"gpus": 1, "preemptible": True}, server="b1")
    time.sleep(0.05)  # b2 is the younger
    hub.start_server("ann", {"gpus": 1, "preemptible": True}, server="b2")
    assert [usage(hub, "ann", s)["borrowed"] for s in ("", "b1", "b2")] == [False, True, True]
    assert usage(hub, "ann", "b1")["rate_per_hour"] == 1.0  # 2.0 x rate_factor 0.5

    # marked apart: the quota API counts them in no amount, metrics and the CSV export show them
    q = hub.service("billing", "api/quota?user=ann").json()
    assert q["in_use"]["gpus"] == 1.0
    assert sorted(s["label"] for s in q["in_use"]["servers"] if s["borrowed"]) == ["'b1'", "'b2'"]
    assert 'gpulab_gpus_borrowed{gpu_type="A100-80GB"} 2.0' in hub.service("billing", "metrics").text
    csv_text = hub.service("billing", "api/usage?user=ann&format=csv").text
    assert csv_text.splitlines()[0].endswith("queued_seconds,preemptible,currency") and ",True," in csv_text

    st, body = hub.spawn("cal", {"gpus": 1, "preemptible": True})
    assert st == 403 and "Only members of 'borrowers'" in body["message"], body
    st, body = hub.spawn("ann", {"gpus": 1, "preemptible": "yes"}, server="b3")
    assert st == 400 and "'preemptible' must be true or false" in body["message"], body

    st, body = hub.spawn("bob", {"gpus": 2})  # 1 GPU free; without the queue he is told why to wait
    assert st == 409 and "2 of the busy ones are borrowed beyond quota: wait in the queue" in body["message"], body
    st, body = hub.spawn("bob", {"gpus": 2, "queue": True})  # 1 GPU free: he waits
    assert st == 202, body
    t0 = time.monotonic()
    wait_for(lambda: hub.server_model("ann", "b2") is None, timeout=40, what="ann's youngest borrowed server to stop")
    stopped_after = time.monotonic() - t0
    assert stopped_after >= GRACE_S, stopped_after  # not before the warning's grace
    bob = hub.wait_ready("bob", timeout=30)
    assert len(bob["state"]["gpus"]) == 2

    assert usage(hub, "ann", "b2")["stop_reason"] == "reclaimed"
    events = [(e["kind"], e["reason"], e["server_name"]) for e in gpulab_rows(hub, "gpulab_events", "ann")]
    assert ("warned", "reclaim", "b2") in events and ("culled", "reclaim", "b2") in events
    assert events.index(("warned", "reclaim", "b2")) < events.index(("culled", "reclaim", "b2"))
    # only what bob needed was taken back; her server within quota is never a candidate
    assert hub.server_model("ann")["ready"] and hub.server_model("ann", "b1")["ready"]
    assert usage(hub, "ann")["stopped_at"] is None and usage(hub, "ann", "b1")["stopped_at"] is None
    assert not [e for e in events if e[2] in ("", "b1") and e[1] == "reclaim"]
