"""Token hygiene on a real hub: a user's token starts and stops their own servers with GPU
options and nothing else; crafted options cannot beat the quota; services hold only the roles
they need."""

from __future__ import annotations

import datetime as dt
import secrets

import pytest
import requests

from tests.support.hubproc import Hub

pytestmark = pytest.mark.hub

SOON = (dt.date.today() + dt.timedelta(days=30)).isoformat()


@pytest.fixture(scope="module")
def hub(tmp_path_factory, local_backend):
    hub = Hub(tmp_path_factory.mktemp("hub"), local=dict(local_backend),
              quotas={"default": {"max_gpus": 1, "max_servers": 2}, "groups": {"researcher": {"max_gpus": 2}}})
    # an automation token with only the scopes a monitoring job needs
    hub.monitor_token = secrets.token_hex(32)
    hub.config["hub"]["api_tokens"]["monitor"] = hub.monitor_token
    hub.config["hub"]["api_token_scopes"] = {"monitor": ["list:users", "read:users:activity", "read:servers"]}
    hub.start()
    hub.create_users("amy", "ben", groups={"researcher": ["ben"]})
    yield hub
    hub.close()


@pytest.fixture(scope="module")
def amy(hub):
    return hub.user_token("amy")


@pytest.fixture(scope="module")
def ben_running(hub):
    hub.start_server("ben", {"profile": "minimal", "gpus": 1})
    yield
    hub.stop_server("ben")


def quotas(hub, method, path, token, **kw):
    return requests.request(method, f"{hub.url}/services/quotas/{path}", timeout=60,
                            headers={"Authorization": f"token {token}"}, **kw).status_code


def test_own_server_with_gpu_options(hub, amy):
    st, body = hub.spawn("amy", {"profile": "minimal", "gpus": 1, "gpu_type": "A100-80GB"}, token=amy)
    assert st in (201, 202), body
    hub.wait_ready("amy")
    st, me = hub.api("GET", "/users/amy", token=amy)
    assert st == 200 and me["servers"][""]["user_options"]["gpus"] == 1
    assert hub.api("DELETE", "/users/amy/server", token=amy)[0] in (202, 204)
    hub.wait_gone("amy")


def test_cannot_touch_another_users_server(hub, amy, ben_running):
    assert hub.api("GET", "/users/ben", token=amy)[0] == 404  # cannot even see ben
    assert hub.api("POST", "/users/ben/servers/x", {"gpus": 1}, token=amy)[0] == 404
    assert hub.api("DELETE", "/users/ben/server", token=amy)[0] == 404
    assert hub.api("GET", "/users/ben/server/progress", token=amy)[0] == 404
    r = requests.get(f"{hub.url}/user/ben/api/status", headers={"Authorization": f"token {amy}"},
                     allow_redirects=False)
    assert r.status_code == 403  # the proxy routes to ben's server, which refuses amy
    assert hub.server_model("ben")["ready"]  # still running


def test_crafted_options_cannot_beat_the_quota(hub, amy):
    for body, status, words in [
        ({"gpus": 2}, 403, "allows 1 GPU"),
        ({"gpus": "2"}, 403, "allows 1 GPU"),
        ({"gpus": 1.5}, 400, "'gpus' must be a whole number"),
        ({"gpus": [4]}, 400, "'gpus' must be a whole number"),
        ({"gpus": 1, "gpu_type": ["A100-80GB", "A100-80GB"]}, 400, "gpu_type"),
        ({"gpus": 1, "max_gpus": 8}, 400, "max_gpus"),
        ({"gpus": 1, "profile": "../minimal"}, 400, "Unknown profile"),
    ]:
        st, answer = hub.spawn("amy", body, token=amy)
        assert st == status and words in answer["message"], (body, st, answer)
    assert hub.server_model("amy") is None
    # two servers of 1 GPU each are still 2 GPUs: named servers are summed
    assert hub.spawn("amy", {"gpus": 1}, server="one", token=amy)[0] in (201, 202)
    hub.wait_ready("amy", "one")
    st, answer = hub.spawn("amy", {"gpus": 1}, server="two", token=amy)
    assert st == 403 and "allows 1 GPU" in answer["message"]
    hub.stop_server("amy", "one")


def test_cannot_grant_itself_more(hub, amy):
    assert hub.api("PATCH", "/users/amy", {"admin": True}, token=amy)[0] == 403
    assert hub.api("POST", "/groups/researcher/users", {"users": ["amy"]}, token=amy)[0] in (403, 404)
    assert hub.api("POST", "/users/ben/tokens", {"note": "x"}, token=amy)[0] in (403, 404)
    assert hub.api("POST", "/users", {"usernames": ["eve"]}, token=amy)[0] == 403
    st, me = hub.api("GET", "/users/amy", token=amy)
    assert me["admin"] is False and me["groups"] == []


def test_cannot_reach_the_override_endpoint(hub, amy):
    assert quotas(hub, "GET", "api/overrides", amy) == 403
    assert quotas(hub, "POST", "api/overrides", amy, json={
        "user": "amy", "max_gpus": 4, "expires": SOON, "reason": "I want more"}) == 403
    assert quotas(hub, "DELETE", "api/overrides/db:1", amy) == 403
    assert quotas(hub, "GET", "api/audit", amy) == 403
    assert quotas(hub, "GET", "api/users/ben", amy) == 403
    assert quotas(hub, "GET", "api/me", amy) == 200  # her own quota, yes


def test_narrow_token_does_only_what_it_says(hub):
    st, body = hub.api("POST", "/users/amy/tokens", {"note": "read-only", "scopes": ["read:users:name!user=amy"]})
    assert st == 201, body
    narrow = body["token"]
    assert hub.api("POST", "/users/amy/server", {"gpus": 1}, token=narrow)[0] == 403
    assert quotas(hub, "GET", "api/me", narrow) == 403  # no access to the service either
    st, body = hub.api("POST", "/users/amy/tokens", {"note": "servers", "scopes": ["servers!user=amy"]})
    servers_only = body["token"]
    st, answer = hub.spawn("amy", {"gpus": 1}, token=servers_only)
    assert st in (201, 202), answer
    hub.wait_ready("amy")
    assert hub.api("GET", "/users/amy/tokens", token=servers_only)[0] == 403
    hub.stop_server("amy")


def test_quotas_service_holds_only_its_role(hub):
    st, service = hub.api("GET", "/services/quotas")
    assert st == 200
    assert service["roles"] == ["gpulab-quotas-service"] and not service.get("admin")


def test_scoped_automation_token(hub, ben_running):
    token = hub.monitor_token
    st, users = hub.api("GET", "/users", token=token)
    assert st == 200 and {"amy", "ben"} <= {u["name"] for u in users}
    assert hub.api("GET", "/users/ben", token=token)[1]["servers"][""]["ready"]  # read:servers
    assert hub.api("POST", "/users/amy/server", {"gpus": 1}, token=token)[0] == 403
    assert hub.api("DELETE", "/users/ben/server", token=token)[0] == 403
    assert quotas(hub, "GET", "api/overrides", token) == 403
    st, service = hub.api("GET", "/services/monitor")
    assert service["roles"] == ["gpulab-token-monitor"]
