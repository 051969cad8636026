"""The hub's own pages and their data through a real hub: the home page's API (own servers only,
state, GPUs, cost, time left), 202 for a queued REST spawn, no stopped named server left by a
refused request, JupyterHub 6 spawn links (opt- parameters) and JupyterLab's own title."""

from __future__ import annotations

import json
import re
import time

import pytest
import requests

from tests.hub.test_form import form_model, login, signup
from tests.support.hubproc import Hub
from tests.support.polling import wait_for

pytestmark = pytest.mark.hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory, local_backend):
    hub = Hub(tmp_path_factory.mktemp("hub"), inventory="2xA100-80GB", local=dict(local_backend),
              quotas={"default": {"max_gpus": 2, "max_servers": 3}}, extra={"billing": {"rates": {"*": 3.6}}})
    hub.start(timeout=240)  # its services start first; slow when the machine is busy
    yield hub
    hub.close()


@pytest.fixture(scope="module")
def ann(hub):
    hub.create_users("ann", "bob", "carl", "dana")
    token = hub.user_token("ann")
    hub.start_server("ann", {"profile": "minimal", "gpus": 1, "runtime": "2h"})
    yield token
    hub.stop_server("ann")


def test_home_data_is_the_persons_own(hub, ann):
    st, data = hub.api("GET", "/gpulab/users/ann/servers", token=ann)
    assert st == 200, data
    (row,) = data["servers"]
    assert row["state"] == "running" and row["label"] == "default" and row["profile_display"] == "Minimal"
    assert row["gpus_text"] == "1 A100-80GB GPU" and row["devices"] == hub.server_model("ann")["state"]["gpus"]
    assert row["rate_text"] == "3.60 EUR/h" and row["cost"] >= 0.06  # at least the minimum charge (60 s)
    assert 7000 < row["seconds_left"] <= 7200 and row["time_left_text"].startswith("1 h 5")
    # from the server's record, as billing charges it: the same cost the billing service shows
    usage = hub.service("billing", "api/usage", token=ann).json()
    assert abs(usage["records"][-1]["cost"] - row["cost"]) < 0.02
    # nobody else's: bob is told nothing about ann's servers, sees his own (none)
    bob = hub.user_token("bob")
    assert hub.api("GET", "/gpulab/users/ann/servers", token=bob)[0] == 404
    assert hub.api("GET", "/gpulab/users/ann/servers/", token=bob)[0] == 404
    assert hub.api("GET", "/gpulab/users/bob/servers", token=bob)[1]["servers"] == []
    # nor does a token that may not read servers
    st, body = hub.api("POST", "/users/ann/tokens", {"scopes": ["read:users:name!user=ann"]})
    assert hub.api("GET", "/gpulab/users/ann/servers", token=body["token"])[0] in (403, 404)


def test_a_queued_rest_spawn_answers_202_at_once_and_shows_its_place(hub, ann):
    hub.start_server("carl", {"gpus": 1})
    # refused first (no free GPU, no queue), then again with the queue: the same server, pending
    assert hub.spawn("dana", {"gpus": 1, "queue": False})[0] == 409
    t0 = time.monotonic()
    st, _ = hub.spawn("dana", {"gpus": 1, "queue": True})
    took = time.monotonic() - t0
    # hub.slow_spawn_seconds (3 s by default), not JupyterHub's 10 s, and never 201 while it waits
    assert st == 202 and took < 8, (st, took)
    assert hub.server_model("dana")["pending"] == "spawn"
    (row,) = hub.api("GET", "/gpulab/users/dana/servers")[1]["servers"]
    assert row["state"] == "queued" and row["queue_position"] == 1 and row["queue_length"] == 1
    assert row["gpus_text"] == "1 GPU asked for" and row["cost"] is None
    # cancel: stopping the pending server
    assert hub.api("DELETE", "/users/dana/server")[0] in (202, 204)
    hub.wait_gone("dana")
    hub.stop_server("carl")


def test_a_refused_new_named_server_leaves_no_row(hub, ann):
    st, body = hub.spawn("bob", {"gpus": 3}, server="big")  # over his 2-GPU quota
    assert st == 403, body

    def servers():
        return hub.api("GET", "/users/bob?include_stopped_servers")[1]["servers"]

    wait_for(lambda: "big" not in servers(), 30, "the refused server's removal")
    # a named server that ran once and is refused later keeps its row (it has a history)
    hub.start_server("bob", {"gpus": 0}, server="kept")
    hub.stop_server("bob", "kept")
    assert hub.spawn("bob", {"gpus": 3}, server="kept")[0] == 403
    time.sleep(3)
    assert "kept" in servers()


def test_spawn_links_start_or_prefill(hub, ann):
    """JupyterHub 6 starts a server from /hub/spawn?opt-...; when gpulab refuses the link's choice,
    the form comes back with the refusal and the link's choice filled in."""
    assert "successfully created" in signup(hub, "admin").text or True
    s_admin, _ = login(hub, "admin")
    signup(hub, "eve")
    assert s_admin.get(f"{hub.url}/hub/authorize/eve").status_code == 200
    s, r = login(hub, "eve")
    r = s.get(f"{hub.url}/hub/spawn?opt-profile=minimal&opt-gpus=1&opt-runtime=1h")
    assert r.status_code == 200, r.text[:300]
    model = hub.server_model("eve")
    assert model is not None and model["user_options"] == {"profile": "minimal", "gpus": "1", "runtime": "1h"}
    hub.wait_ready("eve")
    assert hub.server_model("eve")["state"]["gpus"] and hub.allocations()
    hub.stop_server("eve")
    # over her quota: refused, the form says why and keeps the link's choice
    r = s.get(f"{hub.url}/hub/spawn?opt-profile=minimal&opt-gpus=4&opt-queue=false")
    assert "You asked for 4 GPUs" in r.text, r.text[:2000]
    assert form_model(r.text)["prefill"] == {"profile": "minimal", "gpus": "4", "queue": "false"}
    assert hub.server_model("eve") is None


def test_jupyterlab_says_gpus_and_time_left(hub, ann):
    """The server's JupyterLab (the 'minimal' profile runs in the hub's environment, where gpulab's
    server extension is) puts GPUs, time left and rate in the tab's title, and answers
    /gpulab/status from the hub's data."""
    headers = {"Authorization": f"token {ann}"}
    r = requests.get(f"{hub.url}/user/ann/gpulab/status", headers=headers, timeout=30)
    assert r.status_code == 200, r.text[:300]
    status = r.json()
    assert status["gpus_text"] == "1 A100-80GB GPU" and status["title"].startswith("gpulab · 1 A100-80GB GPU · 1 h")

    def title():
        # JupyterLab's script sets the tab's title from its page config's appName (the browser
        # test sees the title itself)
        page = requests.get(f"{hub.url}/user/ann/lab", headers=headers, timeout=30).text
        return json.loads(re.search(r'"appName": ("[^"]*")', page).group(1))

    wait_for(lambda: "gpulab" in title(), 30, "JupyterLab's title with the server's GPUs")
    assert re.match(r"gpulab · 1 A100-80GB GPU · 1 h \d\d min left · 3\.60 EUR/h - JupyterLab", title()), title()


def test_the_home_page_is_gpulabs(hub, ann):
    s, _ = login(hub, "admin")
    page = s.get(f"{hub.url}/hub/home").text
    # gpulab's table above JupyterHub's own page (start buttons, named servers)
    assert 'id="gpulab-servers"' in page and "/hub/api/gpulab/users/admin/servers" in page
    assert 'id="start"' in page and "Named Servers" in page
