"""LDAP end to end: a real OpenLDAP ``slapd`` (started here, with a small directory) and a real
hub. Bind as the person, their directory groups -> hub groups -> quota; membership changes
take effect at the next sign-in; wrong passwords and people outside the allowed groups are
refused."""

from __future__ import annotations

import html

import pytest

from tests.conftest import require
from tests.hub.test_form import login
from tests.support.hubproc import Hub
from tests.support.idp import SLAPD, SlapdServer

pytestmark = pytest.mark.hub

USERS = {"erin": "erin-pass-1", "finn": "finn-pass-1", "gwen": "gwen-pass-1", "hugo": "hugo-pass-1"}
GROUPS = {
    "ds-researchers": ["erin", "gwen"],
    "ds-admins": ["gwen"],
    "ds-students": ["finn", "erin"],
    "marketing": ["hugo"],
}


@pytest.fixture(scope="module")
def slapd(tmp_path_factory):
    require(SLAPD is not None, "OpenLDAP slapd (Debian packages slapd, ldap-utils)")
    server = SlapdServer(tmp_path_factory.mktemp("slapd")).start(USERS, GROUPS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hub(tmp_path_factory, local_backend, slapd):
    auth = {
        "kind": "ldap",
        "ldap": {
            "server_address": "127.0.0.1",
            "server_port": slapd.port,
            "tls": "insecure",  # a loopback test server; deployments use on_connect or before_bind
            "bind_dn_template": [f"uid={{username}},ou=people,{slapd.base}"],
            "group_search_base": f"ou=groups,{slapd.base}",
        },
        "group_map": {"ds-researchers": ["researcher"], "ds-students": ["student"]},
        "allowed_groups": ["ds-researchers", "ds-students"],
        "admin_groups": ["ds-admins"],
    }
    quotas = {"default": {"max_gpus": 1}, "groups": {"researcher": {"max_gpus": 2}, "student": {"max_gpus": 1}}}
    hub = Hub(tmp_path_factory.mktemp("hub"), quotas=quotas, extra={"auth": auth}, local=dict(local_backend))
    hub.start()
    yield hub
    hub.close()


def groups_of(hub, name):
    st, model = hub.api("GET", f"/users/{name}")
    assert st == 200, model
    return sorted(model["groups"]), model["admin"]


def test_bind_and_group_membership_become_hub_groups(hub):
    s, r = login(hub, "erin", "erin-pass-1")
    assert r.status_code == 302, r.text[:500]
    assert groups_of(hub, "erin") == (["researcher", "student"], False)
    # researcher (2 GPUs) is the most generous of her groups
    st, body = hub.spawn("erin", {"profile": "minimal", "gpus": 3})
    assert st == 403 and "allows 2 GPUs" in body["message"], body


def test_membership_change_takes_effect_at_next_login(hub, slapd):
    login(hub, "erin", "erin-pass-1")
    slapd.remove_member("ds-researchers", "erin")
    assert groups_of(hub, "erin")[0] == ["researcher", "student"]  # until she signs in again
    _, r = login(hub, "erin", "erin-pass-1")
    assert r.status_code == 302
    assert groups_of(hub, "erin")[0] == ["student"]
    st, body = hub.spawn("erin", {"profile": "minimal", "gpus": 2})
    assert st == 403 and "group 'student' allows 1 GPU" in body["message"], body


def test_admin_group(hub):
    _, r = login(hub, "gwen", "gwen-pass-1")
    assert r.status_code == 302
    assert groups_of(hub, "gwen") == (["researcher"], True)


def test_wrong_password_is_refused(hub):
    _, r = login(hub, "finn", "not-finn")
    assert r.status_code == 403 and "Invalid username or password" in r.text
    assert hub.api("GET", "/users/finn")[0] == 404


def test_outside_allowed_groups_gets_a_clear_403(hub):
    _, r = login(hub, "hugo", "hugo-pass-1")
    assert r.status_code == 403
    assert "this hub is only for members of ds-researchers or ds-students" in html.unescape(r.text)
    assert hub.api("GET", "/users/hugo")[0] == 404


def test_ldap_injection_in_username_is_harmless(hub):
    _, r = login(hub, "erin)(uid=*", "erin-pass-1")
    assert r.status_code in (200, 403) and "Invalid username or password" in r.text
