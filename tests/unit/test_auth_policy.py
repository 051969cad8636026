"""IdP groups -> hub groups, roles, admin, allowed (pure), and where each provider keeps groups."""

import pytest

from hub_plugins.auth.oauth import claim_groups, discovered_endpoints, github_groups
from hub_plugins.auth.policy import IdentityPolicy, decide

POLICY = IdentityPolicy.build(
    group_map={"ds-researchers": ["researcher"], "ds-staff": ["staff", "researcher"]},
    allowed_groups=["ds-researchers", "ds-students"],
    admin_groups=["ds-admins"],
    roles={"premium": {"scopes": ["shares!user"], "idp_groups": ["ds-premium"]}},
    allowed_users=["guest"],
    admin_users=["root-admin"],
)


@pytest.mark.parametrize("user, idp, hub_groups, roles, admin, allowed", [
    ("a", ["ds-researchers"], ("researcher",), (), False, True),
    ("a", ["ds-staff", "ds-researchers"], ("researcher", "staff"), (), False, True),
    ("a", ["ds-students"], (), (), False, True),  # allowed, but maps to no hub group
    ("a", ["ds-students", "ds-premium"], (), ("premium",), False, True),
    ("a", ["ds-admins"], (), (), True, True),  # admins may always sign in
    ("root-admin", [], (), (), True, True),
    ("guest", ["marketing"], (), (), False, True),  # allowed_users
    ("b", ["marketing", "ds-researcher"], (), (), False, False),  # near miss is a miss
    ("b", [], (), (), False, False),
    ("a", ["", "ds-researchers"], ("researcher",), (), False, True),
])
def test_decide(user, idp, hub_groups, roles, admin, allowed):
    access = decide(POLICY, user, idp)
    assert (access.hub_groups, access.roles, access.admin, access.allowed) == (hub_groups, roles, admin, allowed)
    assert bool(access.message) is not allowed


def test_refusal_says_what_to_do():
    msg = decide(POLICY, "bob", ["marketing", "sales"]).message
    assert msg == ("You signed in as 'bob', but this hub is only for members of ds-researchers or ds-students. "
                   "Your groups: marketing, sales. Ask your lab's administrator to add you to one of these "
                   "groups, then sign in again.")
    assert "Your groups: none" in decide(POLICY, "bob", []).message


def test_admin_status_left_alone_unless_the_idp_can_grant_it():
    plain = IdentityPolicy.build(group_map={"x": ["y"]}, allow_all=True)
    assert decide(plain, "a", ["x"]).admin is None  # the admin page keeps deciding
    assert decide(IdentityPolicy.build(admin_users=["a"], allow_all=True), "a", []).admin is True
    assert decide(POLICY, "a", ["ds-researchers"]).admin is False  # revoked when leaving ds-admins


def test_keep_unmapped_and_allow_all():
    p = IdentityPolicy.build(group_map={"ds-r": ["researcher"]}, keep_unmapped=True, allow_all=True)
    access = decide(p, "a", ["ds-r", "physics"])
    assert access.hub_groups == ("physics", "researcher") and access.allowed


def test_referenced_groups():
    assert POLICY.referenced_groups == {"ds-researchers", "ds-staff", "ds-students", "ds-admins", "ds-premium"}


@pytest.mark.parametrize("claims, path, groups", [
    ({"groups": ["a", "b"]}, "groups", ["a", "b"]),
    ({"groups": "a, b c"}, "groups", ["a", "b", "c"]),
    ({"realm_access": {"roles": ["x"]}}, "realm_access.roles", ["x"]),
    ({"realm_access": ["x"]}, "realm_access.roles", []),
    ({}, "groups", []),
    ({"groups": None}, "groups", []),
    ({"groups": [1, "", {"a": 1}, "b"]}, "groups", ["1", "b"]),
    ({"groups": {"a": 1}}, "groups", []),
])
def test_claim_groups(claims, path, groups):
    assert claim_groups(claims, path) == groups


def test_github_groups():
    teams = [{"slug": "gpu-users", "organization": {"login": "my-lab"}}, {"slug": "x", "organization": {}}]
    orgs = [{"login": "other-org"}]
    assert github_groups(teams, orgs) == ["my-lab", "my-lab:gpu-users", "other-org"]
    assert github_groups(None, None) == []


def test_discovery_checks_the_issuer():
    doc = {"issuer": "https://sso/realms/lab", "authorization_endpoint": "https://sso/a",
           "token_endpoint": "https://sso/t", "userinfo_endpoint": "https://sso/u"}
    assert discovered_endpoints("https://sso/realms/lab/", doc) == {
        "authorize_url": "https://sso/a", "token_url": "https://sso/t", "userdata_url": "https://sso/u"}
    with pytest.raises(ValueError, match="names issuer 'https://evil'"):
        discovered_endpoints("https://sso/realms/lab", {**doc, "issuer": "https://evil"})
    with pytest.raises(ValueError, match="lacks userinfo_endpoint"):
        discovered_endpoints("https://sso/realms/lab", {**doc, "userinfo_endpoint": ""})
