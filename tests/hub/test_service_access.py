"""Who may do what in gpulab's services, on a real hub (issue 10): admin rights come from gpulab's
own scopes, not from list:users; token calls are not subject to XSRF, cookie calls are; every
cookie is SameSite=Lax; the billing admin page works once hub groups exist."""

from __future__ import annotations

import secrets

import pytest
import requests

from tests.hub.test_form import login, signup
from tests.support.polling import gpulab_rows, wait_for

pytestmark = pytest.mark.hub

READ_USAGE = "custom:gpulab:read:usage"


@pytest.fixture(scope="module")
def hub(tmp_path_factory, local_backend):
    from tests.support.hubproc import Hub

    h = Hub(tmp_path_factory.mktemp("hub"), inventory="1xA100-80GB", local=dict(local_backend),
            quotas={"default": {"max_gpus": 1, "max_servers": 2}}, extra={"culler": {"enabled": False}})
    # a monitoring token that may list users (and nothing of gpulab's), and a reporting token
    # that may read everyone's usage and nothing else
    h.monitor, h.reporter = secrets.token_hex(32), secrets.token_hex(32)
    h.config["hub"]["api_tokens"].update(monitor=h.monitor, reporter=h.reporter)
    access = ["access:services!service=billing", "access:services!service=quotas"]
    h.config["hub"]["api_token_scopes"] = {"monitor": ["list:users", "read:users:groups", "read:groups", *access],
                                           "reporter": [READ_USAGE, *access]}
    h.start()
    h.wait_service("billing")
    h.create_users("ann", "bob", groups={"lab": ["ann"]})  # a hub group exists from here on
    yield h
    h.close()


def queue_rows(hub):
    return gpulab_rows(hub, "gpulab_queue")


def queued(hub, user):
    assert hub.spawn(user, {"gpus": 1, "queue": True})[0] in (201, 202)  # answered after 10 s either way
    wait_for(lambda: user in [r["user_name"] for r in queue_rows(hub)], what=f"{user} queued")


def test_queue_cancel_with_a_token_is_not_subject_to_xsrf(hub):
    hub.start_server("bob", {"gpus": 1}, server="holder")  # the only GPU
    ann = hub.user_token("ann")
    queued(hub, "ann")
    # the documented call, from a script: the user's own request
    r = hub.service("billing", "api/queue/ann", method="DELETE", token=ann)
    assert r.status_code == 200 and r.json() == {"cancelled": 1}, r.text
    hub.wait_gone("ann")
    # someone else's: refused for what it is (not for a missing _xsrf)
    queued(hub, "ann")
    r = hub.service("billing", "api/queue/ann", method="DELETE", token=hub.user_token("bob"))
    assert r.status_code == 403 and "only cancel your own" in r.json()["message"]
    # an admin automation token may (gpulab's queue scope)
    r = hub.service("billing", "api/queue/ann", method="DELETE")
    assert r.status_code == 200 and r.json() == {"cancelled": 1}, r.text
    hub.wait_gone("ann")
    r = hub.service("billing", "api/queue/ann", method="DELETE", token=ann)
    assert r.status_code == 404 and "No waiting request for ann" in r.json()["message"]
    hub.stop_server("bob", "holder")


def test_admin_rights_come_from_gpulab_scopes_not_list_users(hub):
    # list:users (a monitoring token's) is not an admin right in the services any more
    for path in ("api/usage?user=ann", "api/quota?user=ann", "admin"):
        r = hub.service("billing", path, token=hub.monitor)
        assert r.status_code == 403, (path, r.status_code, r.text[:300])
    r = hub.service("billing", "api/usage", token=hub.monitor)  # its own: none
    assert r.status_code == 200 and r.json()["user"] == "monitor" and r.json()["records"] == [], r.text[:300]
    gpus = hub.service("billing", "api/gpus", token=hub.monitor).json()
    assert all(d.get("user") in (None, "another user") for d in gpus["devices"])
    # a token with gpulab's read-usage scope reads everyone's, and can change nothing
    assert hub.service("billing", "api/usage?user=ann", token=hub.reporter).status_code == 200
    assert hub.service("billing", "api/quota?user=ann", token=hub.reporter).json()["user"] == "ann"
    assert hub.service("quotas", "api/overrides", token=hub.reporter).status_code == 403
    r = hub.service("billing", "api/queue/ann", method="DELETE", token=hub.reporter)
    assert r.status_code == 403
    # the admin token (admin role + gpulab-admin) manages overrides
    assert hub.service("quotas", "api/overrides").status_code == 200
    st, svc = hub.api("GET", "/services/reporter")
    assert svc["roles"] == ["gpulab-token-reporter"]
    assert sorted(hub.api("GET", "/services/tests")[1]["roles"]) == ["admin", "gpulab-admin"]


def test_billing_admin_page_with_hub_groups(hub):
    """It listed groups with a role that lacked list:groups: a 500 as soon as any group existed."""
    assert hub.api("GET", "/groups/lab")[0] == 200
    r = hub.service("billing", "admin?days=7", token=hub.reporter)
    assert r.status_code == 200, r.text[:500]
    assert "lab" in r.text
    assert hub.service("billing", "admin").status_code == 200


def set_cookies(responses) -> list[str]:
    out = []
    for r in responses:
        out += r.raw.headers.getlist("Set-Cookie")
    return out


def test_cookies_are_samesite_lax_and_cookie_changes_need_xsrf(hub):
    signup(hub, "admin")
    s, r = login(hub, "admin")
    assert r.status_code == 302
    hub_cookies = set_cookies([r])
    page = s.get(f"{hub.url}/services/billing/")  # the OAuth dance with the hub, as a browser does
    assert page.status_code == 200, page.text[:500]
    service_cookies = set_cookies([*page.history, page])
    names = {c.split("=", 1)[0] for c in hub_cookies + service_cookies}
    assert {"jupyterhub-hub-login", "jupyterhub-session-id", "_xsrf"} <= names, names
    assert {"service-billing", "service-billing-oauth-state"} <= names, names  # the service's session
    for cookie in hub_cookies + service_cookies:
        if '=""; expires=' in cookie:  # a cookie being cleared (the OAuth state, once used)
            continue
        assert "samesite=lax" in cookie.lower(), cookie
    # a cookie-authenticated change without the page's _xsrf value is refused, with the reason
    r = s.post(f"{hub.url}/services/billing/queue/cancel", data={"server": ""}, allow_redirects=False)
    assert r.status_code == 403 and "XSRF token is missing or stale" in r.text
    r = s.delete(f"{hub.url}/services/billing/api/queue/admin", allow_redirects=False)
    assert r.status_code == 403
    xsrf = s.cookies.get("_xsrf", path="/services/billing/")  # what the page's forms carry
    assert xsrf, s.cookies
    r = s.post(f"{hub.url}/services/billing/queue/cancel", data={"server": "", "_xsrf": xsrf},
               allow_redirects=False)
    assert r.status_code == 302
    # the admin (hub.admin_users: gpulab-admin) sees the admin pages through the cookie
    assert s.get(f"{hub.url}/services/billing/admin").status_code == 200
    assert s.get(f"{hub.url}/services/quotas/admin").status_code == 200


def test_a_person_without_gpulab_scopes_is_not_an_admin(hub):
    ann = hub.user_token("ann")
    assert hub.service("billing", "admin", token=ann).status_code == 403
    assert hub.service("quotas", "api/overrides", token=ann).status_code == 403
    r = requests.get(f"{hub.url}/services/quotas/api/me", headers={"Authorization": f"token {ann}"}, timeout=30)
    assert r.status_code == 200 and r.json()["user"] == "ann"
