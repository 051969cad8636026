"""The quotas service (/services/quotas/) on a real hub: overrides created and removed through
the REST API take effect at the next spawn and are audited; people see their own quota; the
admin page works through the hub's OAuth with XSRF."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import requests

from tests.hub.test_form import login, signup

pytestmark = pytest.mark.hub

SOON = (dt.date.today() + dt.timedelta(days=30)).isoformat()
YESTERDAY = (dt.date.today() - dt.timedelta(days=1)).isoformat()
QUOTAS = {
    "default": {"max_gpus": 1, "max_servers": 2},
    "groups": {"researcher": {"max_gpus": 2}},
    "overrides": [{"user": "cfg-user", "max_gpus": 3, "expires": SOON, "reason": "in the yaml"}],
}


@pytest.fixture(scope="module")
def hub(module_hub_factory):
    return module_hub_factory(quotas=QUOTAS)


def svc(hub, method, path, token=None, **kw):
    headers = {"Authorization": f"token {token or hub.token}"}
    r = requests.request(method, f"{hub.url}/services/quotas/{path}", headers=headers, timeout=60, **kw)
    return r.status_code, (r.json() if r.headers.get("Content-Type", "").startswith("application/json") else r.text)


def test_override_applies_at_next_spawn_and_is_audited(hub):
    hub.create_users("uma")
    st, body = hub.spawn("uma", {"profile": "minimal", "gpus": 2})
    assert st == 403 and "allows 1 GPU" in body["message"]

    st, created = svc(hub, "POST", "api/overrides", json={
        "user": "uma", "max_gpus": 2, "expires": SOON, "reason": "paper deadline", "approved_by": "prof. x"})
    assert st == 201, created
    assert created["user"] == "uma" and created["limits"] == {"max_gpus": 2} and created["created_by"] == "service:tests"

    uma = hub.user_token("uma")
    st, me = svc(hub, "GET", "api/me", token=uma)
    assert st == 200 and me["limits"]["max_gpus"] == 2.0
    assert me["sources"]["max_gpus"] == f"your override until {SOON}"
    assert [o["reason"] for o in me["overrides"]] == ["paper deadline"]

    server = hub.start_server("uma", {"profile": "minimal", "gpus": 2})
    assert server["state"]["gpus"] == ["0", "1"]
    st, me = svc(hub, "GET", "api/me", token=uma)
    assert me["in_use"] == 2.0 and me["left_text"] == "0 GPUs" and me["servers"][0]["count"] == 2
    hub.stop_server("uma")

    st, removed = svc(hub, "DELETE", f"api/overrides/{created['id']}", json={"reason": "deadline passed"})
    assert st == 200 and removed["id"] == created["id"]
    st, body = hub.spawn("uma", {"profile": "minimal", "gpus": 2})
    assert st == 403 and "allows 1 GPU" in body["message"]

    st, audit = svc(hub, "GET", "api/audit?user=uma")
    assert st == 200
    assert [(a["action"], a["actor"], a["reason"]) for a in audit] == [
        ("override.remove", "service:tests", "deadline passed"),
        ("override.create", "service:tests", "paper deadline"),
    ]
    assert audit[0]["before"]["limits"] == {"max_gpus": 2} and audit[0]["after"] is None
    assert audit[1]["before"] is None and audit[1]["after"]["approved_by"] == "prof. x"


def test_list_includes_config_overrides_read_only(hub):
    st, listed = svc(hub, "GET", "api/overrides")
    assert st == 200
    cfg = [o for o in listed if o["source"] == "config"]
    assert cfg and cfg[0]["user"] == "cfg-user" and cfg[0]["id"] == "config:0"
    st, body = svc(hub, "DELETE", "api/overrides/config:0")
    assert st == 409 and "gpulab.yaml" in body["message"]


@pytest.mark.parametrize("body, status, message", [
    ({"user": "uma", "expires": SOON, "reason": "x"}, 400, "must set at least one limit"),
    ({"user": "uma", "max_gpus": 2, "expires": YESTERDAY, "reason": "x"}, 400, "'expires' must be after today"),
    ({"user": "uma", "max_gpus": 2, "reason": "x"}, 400, "'expires' is a required property"),
    ({"user": "uma", "max_gpus": 2, "expires": SOON}, 400, "'reason' is a required property"),
    ({"user": "uma", "max_gpu": 2, "expires": SOON, "reason": "x"}, 400, "unknown key 'max_gpu'"),
    ({"user": "uma", "max_gpus": -1, "expires": SOON, "reason": "x"}, 400, "max_gpus: -1 is less than the minimum of 0"),
    ({"user": "uma", "profiles": ["nope"], "expires": SOON, "reason": "x"}, 400, "Unknown profile 'nope'"),
    ({"user": "nobody-here", "max_gpus": 2, "expires": SOON, "reason": "x"}, 404, "There is no user 'nobody-here'"),
    ("not an object", 400, "Send a JSON object"),
])
def test_override_validation(hub, body, status, message):
    st, answer = svc(hub, "POST", "api/overrides", json=body)
    assert st == status and message in answer["message"], answer


def test_unknown_override(hub):
    st, body = svc(hub, "DELETE", "api/overrides/db:99999")
    assert st == 404 and "There is no override 'db:99999'" in body["message"]


def test_user_view_for_admins(hub):
    hub.create_users("val", groups={"researcher": ["val"]})
    st, view = svc(hub, "GET", "api/users/val")
    assert st == 200 and view["groups"] == ["researcher"] and view["limits"]["max_gpus"] == 2.0
    assert view["sources"]["max_gpus"] == "group 'researcher'"
    assert svc(hub, "GET", "api/users/no-such-user")[0] == 404


def test_pages_through_hub_oauth(hub):
    signup(hub, "admin")
    admin, r = login(hub, "admin")
    assert r.status_code == 302
    page = admin.get(f"{hub.url}/services/quotas/")  # OAuth with the hub, as a browser does
    assert page.status_code == 200 and "Your GPU quota" in page.text and "Quota overrides" in page.text
    r = admin.get(f"{hub.url}/services/quotas/admin")
    assert r.status_code == 200 and 'id="add-override"' in r.text
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', r.text).group(1)
    hub.create_users("wes")
    r = admin.post(f"{hub.url}/services/quotas/admin", data={
        "_xsrf": xsrf, "user": "wes", "max_gpus": "3", "expires": SOON, "reason": "demo"})
    assert r.status_code == 200 and "added; it applies from the user&#39;s next spawn" in r.text, r.text[-2000:]
    assert re.search(r"<td>wes</td>\s*<td><code>max_gpus: 3</code>", r.text)
    # a bad form is shown again with the message and what was typed
    r = admin.post(f"{hub.url}/services/quotas/admin", data={
        "_xsrf": xsrf, "user": "wes", "max_gpus": "lots", "expires": SOON, "reason": "demo"})
    assert r.status_code == 400 and "&#39;max_gpus&#39; must be a number from 0 to 4096, got &#39;lots&#39;" in r.text
    assert 'value="lots"' in r.text
    # without the XSRF token the cookie does not count: nothing is created
    before = len(svc(hub, "GET", "api/overrides?user=wes")[1])
    r = admin.post(f"{hub.url}/services/quotas/admin", data={
        "user": "wes", "max_gpus": "4", "expires": SOON, "reason": "forged"}, allow_redirects=False)
    assert r.status_code in (302, 403)
    assert len(svc(hub, "GET", "api/overrides?user=wes")[1]) == before


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_service_leaves_with_a_killed_hub(hub_factory):
    """A hub killed with -9 cannot stop its managed services; the quotas service notices and exits
    (the next hub starts its own) instead of lingering."""
    import time

    h = hub_factory(quotas={"default": {"max_gpus": 1}})
    service = [pid for pid in h.server_pids()  # the service and its lifeline (hub_plugins/lifeline.py)
               if b"JUPYTERHUB_SERVICE_NAME=quotas" in open(f"/proc/{pid}/environ", "rb").read()]
    assert service
    h.kill()
    deadline = time.monotonic() + 15
    while any(running(p) for p in service) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(running(p) for p in service)
