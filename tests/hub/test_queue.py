"""The queue through a real hub: waiting holds no GPU, is not cut by start_timeout, starts as soon
as GPUs free up in fair-share order, can be cancelled, survives a hub restart."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
import requests

from tests.support.inprocess import in_thread
from tests.support.polling import gpulab_rows, wait_for

pytestmark = [pytest.mark.hub, pytest.mark.slow]



def pending(hub, user, server=""):
    s = hub.server_model(user, server)
    return bool(s and s.get("pending") == "spawn")


def queue_rows(hub):
    return gpulab_rows(hub, "gpulab_queue", order_by="created_at")


class Progress:
    """Follow a pending spawn's progress stream in the background, as the progress page does."""

    def __init__(self, hub, user, server=""):
        self.messages: list[str] = []
        self.done = threading.Event()
        path = hub.server_path(user, server) + "/progress"
        self.thread = threading.Thread(target=self._run, args=(hub, path), daemon=True)
        self.thread.start()

    def _run(self, hub, path):
        try:
            with requests.get(f"{hub.url}/hub/api{path}", stream=True, timeout=300,
                              headers={"Authorization": f"token {hub.token}"}) as r:
                for line in r.iter_lines():
                    if line.startswith(b"data:"):
                        event = json.loads(line[5:])
                        self.messages.append(event.get("message", ""))
                        if event.get("ready") or event.get("failed"):
                            break
        finally:
            self.done.set()

    def text(self):
        return " | ".join(self.messages)


HUB = {"inventory": "2xA100-80GB", "quotas": {"default": {"max_gpus": 2, "max_servers": 2}},
       # queue waits below run longer than start_timeout; a queued spawn's API answer (202) comes
       # after slow_spawn_seconds
       "extra": {"hub": {"start_timeout": 10, "slow_spawn_seconds": 0.5}}}


@pytest.fixture
async def hub(inprocess_hub):
    """In-process (the tests run their bodies in a thread: ``in_thread``); only the restart
    test needs a hub process (``hub_process``)."""
    return await inprocess_hub(**HUB)


@pytest.fixture
def hub_process(hub_factory):
    return hub_factory(**HUB)


@in_thread
def test_queue_waits_without_gpus_and_starts_when_freed(hub):
    hub.create_users("ann", "bob", "cal")
    hub.start_server("ann", {"gpus": 2})
    st, body = hub.spawn("bob", {"gpus": 1, "queue": True})
    assert st == 202, body
    prog = Progress(hub, "bob")
    st, body = hub.spawn("cal", {"gpus": 2, "queue": True})
    assert st == 202, body
    wait_for(lambda: "Queue position 1 of 2" in prog.text(), what="bob's position line")
    assert "waiting in the queue (you hold no GPU while you wait" in prog.text()
    assert [r["user_name"] for r in queue_rows(hub)] == ["bob", "cal"]
    assert {a["user_name"] for a in hub.allocations()} == {"ann"}  # waiting holds no GPU
    # the billing service's view of one person's requests, keeping their places; not another's
    cal = hub.user_token("cal")
    mine = hub.service("billing", "api/queue/cal", token=cal).json()["queue"]
    assert [(e["position"], e["user"], e["server"], e["gpus"]) for e in mine] == [(2, "cal", "", 2)]
    assert hub.service("billing", "api/queue/cal/other", token=cal).json()["queue"] == []
    assert hub.service("billing", "api/queue/bob", token=cal).status_code == 403
    assert [e["user"] for e in hub.service("billing", "api/queue/bob").json()["queue"]] == ["bob"]  # admin
    time.sleep(12)  # longer than start_timeout (10 s): the wait is not cut short
    assert pending(hub, "bob") and pending(hub, "cal")
    hub.stop_server("ann")  # returns once ann's GPUs are released
    t0 = time.monotonic()
    wait_for(lambda: "bob" in {a["user_name"] for a in hub.allocations()}, timeout=30, what="bob's GPUs")
    reserved_after = time.monotonic() - t0
    # woken by the release, not by the fallback look (every 5 s, waiting.LOOK_EVERY)
    assert reserved_after < 2.5, reserved_after
    bob = hub.wait_ready("bob", timeout=30)
    assert "Your turn after" in " ".join(prog.messages) or prog.done.wait(10)
    # cal needs 2 and only 1 is free: still waiting, in order
    assert pending(hub, "cal") and [r["user_name"] for r in queue_rows(hub)] == ["cal"]
    assert len(bob["state"]["gpus"]) == 1
    hub.stop_server("bob")
    cal = hub.wait_ready("cal", timeout=30)
    assert sorted(cal["state"]["gpus"]) == ["0", "1"] and queue_rows(hub) == []
    rec = {r["user_name"]: r for r in gpulab_rows(hub, "gpulab_usage")}
    assert rec["cal"]["queued_seconds"] > 12


@in_thread
def test_cancel_by_stopping_the_pending_server(hub):
    hub.create_users("ann", "bob")
    hub.start_server("ann", {"gpus": 2})
    assert hub.spawn("bob", {"gpus": 1, "queue": True})[0] == 202
    wait_for(lambda: [r["user_name"] for r in queue_rows(hub)] == ["bob"], what="bob queued")
    st, _ = hub.api("DELETE", "/users/bob/server")
    assert st in (202, 204)
    hub.wait_gone("bob")
    wait_for(lambda: queue_rows(hub) == [], what="the queue entry to go")
    hub.stop_server("ann")
    time.sleep(1)
    assert hub.server_model("bob") is None  # a cancelled request never starts later


@in_thread
def test_without_queue_the_request_is_refused(hub):
    hub.create_users("ann", "bob")
    hub.start_server("ann", {"gpus": 2})
    st, body = hub.spawn("bob", {"gpus": 1})
    assert st == 409 and "Not enough free GPUs" in body["message"] and queue_rows(hub) == []


async def test_a_request_no_host_can_hold_is_refused_not_queued(inprocess_hub):
    h = await inprocess_hub(inventory="2xA100-80GB@n1, 2xA100-80GB@n2",
                            quotas={"default": {"max_gpus": 4, "max_servers": 2}})
    await h.aio.create_users("cid")
    st, body = await h.aio.spawn("cid", {"gpus": 3, "queue": True})
    assert st == 400 and "No host has 3 A100-80GB GPUs" in body["message"], body
    assert "ask for at most 2" in body["message"] and await asyncio.to_thread(queue_rows, h) == []


@in_thread
def test_fair_share_puts_light_users_first(hub):
    hub.create_users("ann", "heavy", "light")
    hub.start_server("heavy", {"gpus": 1}, server="warm")  # heavy has recent GPU use
    time.sleep(2)
    hub.start_server("ann", {"gpus": 1})  # now full
    assert hub.spawn("heavy", {"gpus": 1, "queue": True})[0] == 202  # heavy asks first
    wait_for(lambda: len(queue_rows(hub)) == 1, what="heavy queued")
    assert hub.spawn("light", {"gpus": 1, "queue": True})[0] == 202
    wait_for(lambda: len(queue_rows(hub)) == 2, what="light queued")
    hub.stop_server("ann")
    light = hub.wait_ready("light", timeout=30)
    assert light["state"]["gpus"] and pending(hub, "heavy")


def test_queued_request_survives_a_hub_restart(hub_process):
    hub = hub_process
    hub.create_users("ann", "bob")
    hub.start_server("ann", {"gpus": 2})
    assert hub.spawn("bob", {"gpus": 2, "queue": True})[0] == 202
    wait_for(lambda: len(queue_rows(hub)) == 1, what="bob queued")
    hub.kill()
    hub.start()
    assert [r["user_name"] for r in queue_rows(hub)] == ["bob"]  # still queued
    # the hub dropped the interrupted spawn; asking again resumes the place (the culler service
    # does this by itself, see tests/hub/test_culler.py)
    wait_for(lambda: not pending(hub, "bob"), what="the interrupted spawn to be cleared")
    assert hub.spawn("bob", {"gpus": 2, "queue": True})[0] == 202
    hub.stop_server("ann")
    bob = hub.wait_ready("bob", timeout=30)
    assert sorted(bob["state"]["gpus"]) == ["0", "1"]


@pytest.fixture
async def hub4(inprocess_hub):
    return await inprocess_hub(inventory="4xA100-80GB", quotas={"default": {"max_gpus": 4, "max_servers": 1}})


@in_thread
def test_a_newcomer_does_not_jump_a_waiting_multi_gpu_request(hub4):
    """Issue 12's scenario: 4 GPUs held by four 1-GPU servers, a 4-GPU request waits; when one
    server stops, its GPU is held for the 4-GPU request, so a new 1-GPU request waits behind it
    (202) or, without the queue box, is told why (409); the 4-GPU request starts when the others
    stop, and the newcomer only after it."""
    h = hub4
    small = ["s0", "s1", "s2", "s3"]
    h.create_users(*small, "big", "late", "rude")
    for u in small:
        h.start_server(u, {"gpus": 1})
    assert h.spawn("big", {"gpus": 4, "queue": True})[0] == 202
    wait_for(lambda: [r["user_name"] for r in queue_rows(h)] == ["big"], what="big queued")
    h.stop_server("s0")  # one GPU free, held for big
    st, body = h.spawn("rude", {"gpus": 1})
    assert st == 409 and "waiting for GPUs before yours" in body["message"], body
    assert h.spawn("late", {"gpus": 1, "queue": True})[0] == 202
    wait_for(lambda: [r["user_name"] for r in queue_rows(h)] == ["big", "late"], what="late queued behind big")
    time.sleep(3)  # several looks at the queue: late still waits although a GPU is free
    assert pending(h, "late") and pending(h, "big")
    for u in small[1:]:
        h.stop_server(u)
    big = h.wait_ready("big", timeout=60)
    assert sorted(big["state"]["gpus"]) == ["0", "1", "2", "3"]
    assert pending(h, "late")
    h.stop_server("big")
    assert h.wait_ready("late", timeout=60)["state"]["gpus"]


def test_a_request_queued_again_after_a_cancel_is_answered_202(hub_process):
    """A request cancelled through the billing API fails its start; JupyterHub 6 then answered
    the next POST for that server 201 ("running") while it waited in the queue (the spawner it
    made in place of the failed one was not the one that started: hubapp.keep_replaced_spawners)."""
    hub = hub_process
    hub.create_users("ann", "eve")
    hub.start_server("ann", {"gpus": 2})
    assert hub.spawn("eve", {"gpus": 1, "queue": True})[0] == 202
    wait_for(lambda: queue_rows(hub), what="eve's request in the queue")
    assert hub.service("billing", "api/queue/eve", method="DELETE").status_code == 200
    wait_for(lambda: hub.server_model("eve") is None, timeout=20, what="the cancelled start to end")
    st, body = hub.spawn("eve", {"gpus": 1, "queue": True})
    assert st == 202 and pending(hub, "eve"), (st, body)
    hub.stop_server("eve")
    hub.stop_server("ann")

