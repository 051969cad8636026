"""OpenID Connect end to end: a real provider (django-oidc-provider, its own process) and a real
hub. Sign-in through the provider's login page, the ``groups`` claim -> hub groups -> the quota a
spawn gets; changes at the provider take effect at the next sign-in; people outside the allowed
groups get a 403 page that says what to do."""

from __future__ import annotations

import html
import os
import re
import secrets

import pytest
import requests

from tests.conftest import require
from tests.support.hubproc import Hub
from tests.support.idp import OIDCProvider, django_oidc_available

pytestmark = pytest.mark.hub

USERS = [
    {"name": "alice", "password": "alice-pass-1", "groups": ["ds-researchers"]},
    {"name": "bob", "password": "bob-pass-1", "groups": ["marketing"]},
    {"name": "carol", "password": "carol-pass-1", "groups": ["ds-admins", "ds-researchers"]},
    {"name": "dave", "password": "dave-pass-1", "groups": ["ds-students", "ds-premium"]},
    {"name": "eve", "password": "eve-pass-1", "groups": ["ds-researchers"]},
]


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    require(django_oidc_available(), "an OpenID Connect provider (pip: django, django-oidc-provider)")
    provider = OIDCProvider(tmp_path_factory.mktemp("idp"))
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def hub(tmp_path_factory, local_backend, idp):
    auth = {
        "kind": "oidc",
        "oidc": {"issuer": idp.issuer, "client_id": idp.client_id, "client_secret": f"file:{idp.secret_file}",
                 "login_service": "Lab SSO"},
        "group_map": {"ds-researchers": ["researcher"], "ds-students": ["student"]},
        "allowed_groups": ["ds-researchers", "ds-students"],
        "admin_groups": ["ds-admins"],
        "refresh_seconds": 300,  # and before every spawn
        "roles": {"premium": {"description": "may read the hub's metrics", "scopes": ["read:metrics"],
                              "idp_groups": ["ds-premium"]}},
    }
    quotas = {"default": {"max_gpus": 1, "max_servers": 2},
              "groups": {"researcher": {"max_gpus": 2}, "student": {"max_gpus": 1}}}

    hub = Hub(tmp_path_factory.mktemp("hub"), quotas=quotas, extra={"auth": auth}, local=dict(local_backend))
    idp.start([f"{hub.url}/hub/oauth_callback"], USERS)  # the client's redirect URI is the hub's
    os.environ["JUPYTERHUB_CRYPT_KEY"] = secrets.token_hex(32)  # auth state: for refresh_seconds
    try:
        hub.start()
    finally:
        del os.environ["JUPYTERHUB_CRYPT_KEY"]
    yield hub
    hub.close()


def oidc_login(hub, name: str, password: str) -> tuple[requests.Session, requests.Response]:
    """Sign in as a browser does: hub -> provider's login form -> provider -> hub callback."""
    s = requests.Session()
    r = s.get(f"{hub.url}/hub/oauth_login?next=/hub/home")
    assert "Lab single sign-on" in r.text, (r.status_code, r.url, r.text[:500])
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', r.text).group(1)
    nxt = html.unescape(re.search(r'name="next" value="([^"]*)"', r.text).group(1))
    r = s.post(r.url, data={"username": name, "password": password, "csrfmiddlewaretoken": csrf, "next": nxt})
    return s, r


def user_model(hub, name):
    st, model = hub.api("GET", f"/users/{name}")
    assert st == 200, (st, model)
    return model


def test_group_claim_becomes_hub_group_and_quota(hub, idp):
    s, r = oidc_login(hub, "alice", "alice-pass-1")
    assert r.status_code == 200 and r.url.endswith("/hub/home"), (r.status_code, r.url, r.text[:300])
    m = user_model(hub, "alice")
    assert m["groups"] == ["researcher"] and m["admin"] is False
    # the researcher quota (2 GPUs) applies to her spawn
    server = hub.start_server("alice", {"profile": "minimal", "gpus": 2})
    assert server["state"]["gpus"] == ["0", "1"]
    hub.stop_server("alice")


def test_removal_from_idp_group_takes_effect_at_next_login(hub, idp):
    oidc_login(hub, "alice", "alice-pass-1")
    assert user_model(hub, "alice")["groups"] == ["researcher"]
    idp.set_groups("alice", ["ds-students"])  # the IdP admin moves her
    assert user_model(hub, "alice")["groups"] == ["researcher"]  # nothing changes until she signs in
    _, r = oidc_login(hub, "alice", "alice-pass-1")
    assert r.status_code == 200
    assert user_model(hub, "alice")["groups"] == ["student"]
    st, body = hub.spawn("alice", {"profile": "minimal", "gpus": 2})
    assert st == 403 and "group 'student' allows 1 GPU" in body["message"], body
    idp.set_groups("alice", ["ds-researchers"])


def test_outside_allowed_groups_gets_a_clear_403(hub):
    _, r = oidc_login(hub, "bob", "bob-pass-1")
    assert r.status_code == 403
    text = html.unescape(r.text)
    assert "You signed in as 'bob', but this hub is only for members of ds-researchers or ds-students" in text
    assert "Your groups: marketing" in text and "Ask your lab's administrator" in text
    assert hub.api("GET", "/users/bob")[0] == 404  # never became a hub user


def test_admin_group_grants_and_revokes_admin(hub, idp):
    oidc_login(hub, "carol", "carol-pass-1")
    assert user_model(hub, "carol")["admin"] is True
    idp.set_groups("carol", ["ds-researchers"])
    oidc_login(hub, "carol", "carol-pass-1")
    assert user_model(hub, "carol")["admin"] is False


def test_role_follows_idp_group(hub, idp):
    oidc_login(hub, "dave", "dave-pass-1")
    roles = user_model(hub, "dave")["roles"]
    assert set(roles) == {"user", "premium"}, roles
    # the role's scope (every user may share their own servers: 'shares!user' is in the user role)
    assert "read:metrics" in token_scopes(hub, "dave")
    idp.set_groups("dave", ["ds-students"])
    oidc_login(hub, "dave", "dave-pass-1")
    assert user_model(hub, "dave")["roles"] == ["user"]
    assert "read:metrics" not in token_scopes(hub, "dave")
    idp.set_groups("dave", ["ds-students", "ds-premium"])  # granted again: the role kept its scopes
    oidc_login(hub, "dave", "dave-pass-1")
    assert "read:metrics" in token_scopes(hub, "dave")


def token_scopes(hub, name) -> list[str]:
    st, me = hub.api("GET", "/user", token=hub.user_token(name))
    assert st == 200, me
    return me["scopes"]


def test_wrong_password_stays_at_the_provider(hub):
    _, r = oidc_login(hub, "alice", "not-her-password")
    assert "Wrong username or password" in r.text and r.url.startswith("http://127.0.0.1") and "/hub/" not in r.url


def test_with_refresh_the_quota_follows_the_idp_at_the_next_spawn(hub, idp):
    """auth.refresh_seconds: the groups are read again before every spawn, no new sign-in needed."""
    _, r = oidc_login(hub, "eve", "eve-pass-1")
    assert r.status_code == 200 and user_model(hub, "eve")["groups"] == ["researcher"]
    idp.set_groups("eve", ["ds-students"])
    st, body = hub.spawn("eve", {"profile": "minimal", "gpus": 2})
    assert st == 403 and "group 'student' allows 1 GPU" in body["message"], body
    assert user_model(hub, "eve")["groups"] == ["student"]
    idp.set_groups("eve", [])  # out of every allowed group: no more spawns, and no sign-in either
    st, body = hub.spawn("eve", {"profile": "minimal", "gpus": 0})
    assert st == 403 and "this hub is only for members of ds-researchers or ds-students" in body["message"], body
    assert hub.server_model("eve") is None
    _, r = oidc_login(hub, "eve", "eve-pass-1")
    assert r.status_code == 403 and "Your groups: none" in html.unescape(r.text)
