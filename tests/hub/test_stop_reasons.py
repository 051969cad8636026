"""Who stopped a server, read from gpulab's usage records on a real hub: the person, an admin, a
service with an automation token, a server that died by itself, and the stock
jupyterhub-idle-culler run against the hub (its culls are culls, and gpulab_culls_total counts
them)."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys

import pytest

from tests.support.hubproc import Hub
from tests.support.polling import gpulab_rows, wait_for

pytestmark = pytest.mark.hub

CULLER_TOKEN = secrets.token_hex(32)
# the scopes jupyterhub-idle-culler's README asks for (servers only, no users)
CULLER_SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory, local_backend):
    hub = Hub(tmp_path_factory.mktemp("hub"), inventory="4xA100-80GB", local=dict(local_backend),
              quotas={"default": {"max_gpus": 1, "max_servers": 2}},
              extra={"hub": {"api_tokens": {"idle-culler": CULLER_TOKEN},
                             "api_token_scopes": {"idle-culler": CULLER_SCOPES}}})
    hub.config["hub"]["api_tokens"]["tests"] = hub.token
    hub.start(timeout=240)
    hub.create_users("ann", "bob", "ivy", "admin")
    yield hub
    hub.close()


def last_record(hub, user):
    return gpulab_rows(hub, "gpulab_usage", user)[-1]


def stopped(hub, user, token):
    hub.start_server(user, {"gpus": 1})
    st, _ = hub.api("DELETE", f"/users/{user}/server", token=token)
    assert st in (202, 204), st
    hub.wait_gone(user)
    wait_for(lambda: last_record(hub, user)["stopped_at"] is not None, 30, "the record to close")
    return last_record(hub, user)


def test_the_person_themselves(hub):
    rec = stopped(hub, "ann", hub.user_token("ann"))
    assert (rec["stop_reason"], rec["stopped_by"]) == ("user", "user:ann")


def test_an_admin(hub):
    rec = stopped(hub, "bob", hub.user_token("admin"))  # 'admin' is in hub.admin_users
    assert (rec["stop_reason"], rec["stopped_by"]) == ("admin", "admin:admin")


def test_an_automation_service(hub):
    rec = stopped(hub, "bob", hub.token)  # hub.api_tokens 'tests' (admin role)
    assert (rec["stop_reason"], rec["stopped_by"]) == ("service", "service:tests")


def test_a_server_that_dies_by_itself_says_nobody(hub):
    server = hub.start_server("ann", {"gpus": 1})
    os.kill(server["state"]["pid"], signal.SIGKILL)
    wait_for(lambda: hub.server_model("ann") is None, 60, "the hub to notice")
    wait_for(lambda: last_record(hub, "ann")["stopped_at"] is not None, 30, "the record to close")
    rec = last_record(hub, "ann")
    assert (rec["stop_reason"], rec["stopped_by"]) == ("crashed", "")


def test_the_stock_idle_culler(hub):
    """jupyterhub-idle-culler, unchanged, with its own token (hub.api_tokens + api_token_scopes,
    named 'idle-culler' as culler.external_cullers expects): GPUs released, record closed as a
    cull by it, counted by gpulab_culls_total{reason="external"}."""
    hub.start_server("ivy", {"gpus": 1})
    env = dict(os.environ, JUPYTERHUB_API_TOKEN=CULLER_TOKEN)
    log = open(hub.dir / "idle-culler.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterhub_idle_culler", "--timeout=8", "--cull-every=2",
                             f"--url=http://127.0.0.1:{hub.hub_port}/hub/api"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: hub.server_model("ivy") is None, 120, "the idle culler to cull ivy's server")
    finally:
        proc.terminate()
        proc.wait(10)
    wait_for(lambda: last_record(hub, "ivy")["stopped_at"] is not None, 30, "the record to close")
    rec = last_record(hub, "ivy")
    assert (rec["stop_reason"], rec["stopped_by"]) == ("culled", "service:idle-culler")
    assert not [a for a in hub.allocations() if a["user_name"] == "ivy"]
    culls = [e for e in gpulab_rows(hub, "gpulab_events") if e["kind"] == "culled"]
    assert [(e["reason"], e["user_name"]) for e in culls] == [("external", "ivy")]
    assert "Culling server ivy" in (hub.dir / "idle-culler.log").read_text()
    hub.wait_service("billing")
    metrics = hub.service("billing", "metrics").text
    assert re.search(r'^gpulab_culls_total\{reason="external"\} 1\.0$', metrics, re.M), metrics
