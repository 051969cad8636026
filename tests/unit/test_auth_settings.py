"""The auth and services sections of gpulab.yaml: checks with messages naming the key, and the
config they produce (down to the authenticator object they configure)."""


import pytest
import yaml
from traitlets.config import Config

from hub_plugins.settings.apply import apply_all
from hub_plugins.settings.errors import ConfigError
from hub_plugins.settings.loader import load
from hub_plugins.settings.typed import load_settings
from hub_plugins.settings.apply import QUOTAS_SERVICE_SCOPES, update_services
from tests.unit.test_settings import ROOT, write

SECRET = "s3cret-from-the-idp"


@pytest.fixture
def secret_file(tmp_path):
    p = tmp_path / "client_secret"
    p.write_text(SECRET + "\n")
    return p


def oidc(secret_file, **auth):
    base = {"kind": "oidc", "oidc": {"issuer": "https://sso.example.org/realms/lab", "client_id": "gpulab",
                                     "client_secret": f"file:{secret_file}"},
            "group_map": {"ds-researchers": ["researcher"]}, "allowed_groups": ["ds-researchers"]}
    base.update(auth)
    return {"auth": base, "quotas": {"groups": {"researcher": {"max_gpus": 2}}}}


@pytest.mark.parametrize("change, message", [
    ({"kind": "native", "oidc": None, "group_map": {"a": ["b"]}}, "auth.group_map: built-in accounts"),
    ({"kind": "ldap"}, "auth.ldap: missing"),
    ({"oidc": {"client_id": "x", "client_secret": "plain-text"}}, "auth.oidc.client_secret: 'plain-text' is not in the expected form"),
    ({"oidc": {"client_id": "x", "client_secret": "env:GPULAB_TEST_UNSET_VAR"}}, "auth.oidc.client_secret: environment variable GPULAB_TEST_UNSET_VAR is not set"),
    ({"allowed_groups": []}, "auth: say who may sign in"),
    ({"allow_all": True}, "auth.allow_all: true lets everyone in"),
    ({"roles": {"admin": {"scopes": ["admin-ui"], "idp_groups": ["x"]}}}, "auth.roles.admin: 'admin' is one of JupyterHub's own roles"),
    ({"roles": {"premium": {"scopes": ["fly:planes"], "idp_groups": ["x"]}}}, "auth.roles.premium.scopes: unknown scope 'fly:planes'"),
    ({"roles": {"premium": {"scopes": ["shares!user"]}}}, "'idp_groups' is a required property"),
    ({"group_map": {"ds-researchers": ["researchers"]}}, "quotas.groups.researcher: no IdP group maps to this hub group"),
    ({"group_map": {"ds-r": ["bad name!"]}}, "auth.group_map.ds-r[0]"),
    ({"kind": "github", "github": {"client_id": "x", "client_secret": "env:HOME"}},
     "hub.admin_users: 'admin' is a GitHub account someone else owns"),
    ({"kind": "google", "google": {"client_id": "x", "client_secret": "env:HOME"}},
     "auth.google: reading Google groups needs gsuite_administrator and service_account_keys"),
])
def test_auth_checks_name_the_key(tmp_path, secret_file, change, message):
    data = oidc(secret_file)
    for k, v in change.items():
        if v is None:
            data["auth"].pop(k, None)
        else:
            data["auth"][k] = v
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, data))
    assert message in str(e.value)


def test_github_everyone_refused(tmp_path):
    data = {"hub": {"admin_users": ["octo-admin"]},
            "auth": {"kind": "github", "github": {"client_id": "x", "client_secret": "env:HOME"}, "allow_all": True}}
    with pytest.raises(ConfigError, match="auth.allow_all with GitHub would let every GitHub account in"):
        load(write(tmp_path, data))


def test_refresh(tmp_path, secret_file, monkeypatch):
    monkeypatch.delenv("JUPYTERHUB_CRYPT_KEY", raising=False)
    data = oidc(secret_file, refresh_seconds=300)
    cfg = load(write(tmp_path, data))  # services load the file too, without the crypt key
    with pytest.raises(ConfigError, match="set JUPYTERHUB_CRYPT_KEY"):
        apply_all(Config(), cfg)  # the hub refuses to start without it
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", "ab" * 32)
    c = Config()
    apply_all(c, load(write(tmp_path, data)))
    t = c.GPULabOIDCAuthenticator
    assert t.enable_auth_state is True and t.auth_refresh_age == 300 and t.refresh_pre_spawn is True
    ldap = {"auth": {"kind": "ldap", "refresh_seconds": 60, "allow_all": True,
                     "ldap": {"server_address": "x", "bind_dn_template": ["uid={username},dc=x"]}}}
    with pytest.raises(ConfigError, match="LDAP cannot re-read groups"):
        load(write(tmp_path, ldap))


def test_oidc_needs_issuer_or_endpoints(tmp_path, secret_file):
    data = oidc(secret_file)
    del data["auth"]["oidc"]["issuer"]
    data["auth"]["oidc"]["token_url"] = "https://sso/t"
    with pytest.raises(ConfigError, match="missing: authorize_url, userdata_url"):
        load(write(tmp_path, data))


def make_authenticator(c: Config, cls):
    return cls(config=c)


def test_oidc_applied(tmp_path, secret_file):
    data = oidc(secret_file, admin_groups=["ds-admins"],
                roles={"premium": {"scopes": ["shares!user"], "idp_groups": ["ds-premium"]}})
    data["hub"] = {"bind_url": "https://gpu.example.org"}
    cfg = load(write(tmp_path, data))
    c = Config()
    apply_all(c, cfg)
    assert c.JupyterHub.authenticator_class == "gpulab-oidc"
    from hub_plugins.auth.oauth import GPULabOIDCAuthenticator

    a = make_authenticator(c, GPULabOIDCAuthenticator)
    assert a.client_secret == SECRET and a.client_id == "gpulab"
    assert a.oauth_callback_url == "https://gpu.example.org/hub/oauth_callback"
    assert a.issuer == "https://sso.example.org/realms/lab" and a.authorize_url == ""  # discovered later
    assert a.manage_groups and a.manage_roles and a.idp_admin_groups == {"ds-admins"}
    assert a.scope == ["openid", "profile", "email", "groups"] and a.username_claim == "preferred_username"

    # the whole sign-in decision on an auth model shaped as oauthenticator builds it
    model = {"name": "ann", "admin": None,
             "auth_state": {"oauth_user": {"preferred_username": "ann", "groups": ["ds-researchers", "ds-premium"]}}}
    model = a.gpulab_apply_access(model)
    assert model["groups"] == ["researcher"] and model["admin"] is False
    assert model["roles"] == [{"name": "user"}, {"name": "premium", "description": "", "scopes": ["shares!user"]}]
    assert model["auth_state"]["gpulab"]["idp_groups"] == ["ds-premium", "ds-researchers"]
    # IdP admins get gpulab's admin role at login: with managed roles, JupyterHub refuses users
    # assigned in load_roles, so the gpulab-admin role lists none
    boss = a.gpulab_apply_access({"name": "boss", "admin": None,
                                  "auth_state": {"oauth_user": {"preferred_username": "boss", "groups": ["ds-admins"]}}})
    assert {"name": "admin"} in boss["roles"] and {"name": "gpulab-admin"} in boss["roles"]
    (role,) = [r for r in c.JupyterHub.load_roles if r["name"] == "gpulab-admin"]
    assert "users" not in role and "groups" not in role


async def test_refused_sign_in_is_a_403_with_the_reason(tmp_path, secret_file):
    from hub_plugins.auth.mixin import NotAllowed
    from hub_plugins.auth.oauth import GPULabOIDCAuthenticator

    c = Config()
    apply_all(c, load(write(tmp_path, oidc(secret_file))))
    a = GPULabOIDCAuthenticator(config=c)
    model = a.gpulab_apply_access({"name": "bob", "admin": None,
                                   "auth_state": {"oauth_user": {"groups": ["sales"]}}})
    with pytest.raises(NotAllowed) as e:
        await a.check_allowed("bob", model)
    assert e.value.status_code == 403 and "Your groups: sales" in e.value.get_message()
    assert await a.check_allowed("bob", {**model, "auth_state": {"gpulab": {"idp_groups": ["ds-researchers"]}}})


def test_ldap_applied(tmp_path):
    data = {"auth": {"kind": "ldap", "ldap": {"server_address": "ldap.example.org", "tls": "on_connect",
                                              "bind_dn_template": ["uid={username},ou=people,dc=x"],
                                              "group_search_base": "ou=groups,dc=x"},
                     "allowed_users": ["ann"]}}
    c = Config()
    apply_all(c, load(write(tmp_path, data)))
    from hub_plugins.auth.ldap import GPULabLDAPAuthenticator

    a = GPULabLDAPAuthenticator(config=c)
    assert a.tls_strategy.name == "on_connect" and a.server_port == 636
    assert a.group_search_base == "ou=groups,dc=x" and a.manage_groups and not a.manage_roles
    assert a.allowed_users == {"ann"}


def test_ldap_group_filter_escapes():
    from hub_plugins.auth.ldap import group_filter

    assert group_filter("(|(member={userdn})(memberUid={uid}))", "uid=a*,dc=x", "a)(x") == \
        r"(|(member=uid=a\2a,dc=x)(memberUid=a\29\28x))"


def test_native_unchanged(tmp_path):
    c = Config()
    apply_all(c, load(write(tmp_path, {})))
    assert c.JupyterHub.authenticator_class == "gpulab-native" and c.NativeAuthenticator.allow_all is True


def test_quotas_service_least_privilege(tmp_path):
    cfg = load(write(tmp_path, {"quotas": {"overrides": [
        {"user": "ann", "max_gpus": 2, "expires": "2099-01-01", "reason": "x"}]}}))
    cfg["_project_root"] = str(ROOT)
    c = Config()
    apply_all(c, cfg)
    (svc,) = [s for s in c.JupyterHub.services if s["name"] == "quotas"]
    inner = svc["command"][svc["command"].index("--") + 1:]  # run under its lifeline
    assert inner[1:] == ["-m", "services.admin"] and svc["cwd"] == str(ROOT)
    assert svc["url"].startswith("http://127.0.0.1:") and svc["oauth_no_confirm"] and svc["display"]
    # configured as every service is: the hub's gpulab.yaml, read as typed settings
    settings = load_settings(svc["environment"]["GPULAB_CONFIG"])
    assert settings.db_url.endswith("gpulab.sqlite") and settings.raw["quotas"]["overrides"][0]["expires"] == "2099-01-01"
    (role,) = [r for r in c.JupyterHub.load_roles if r["name"] == "gpulab-quotas-service"]
    assert role["scopes"] == QUOTAS_SERVICE_SCOPES == ["list:users", "read:users:name", "read:users:groups"]
    assert role["services"] == ["quotas"] and "users" not in role and "groups" not in role
    (user,) = [r for r in c.JupyterHub.load_roles if r["name"] == "user"]
    assert "access:services!service=quotas" in user["scopes"] and "self" in user["scopes"]


def test_quotas_service_can_be_turned_off(tmp_path):
    cfg = load(write(tmp_path, {"services": {"quotas": {"enabled": False}}}))
    c = Config()
    update_services(c, cfg)
    assert "quotas" not in [s["name"] for s in c.JupyterHub.services]
    (user,) = [r for r in c.JupyterHub.load_roles if r["name"] == "user"]
    assert "access:services!service=quotas" not in user["scopes"]
    with pytest.raises(ConfigError, match="services.quotas.url"):
        load(write(tmp_path, {"services": {"quotas": {"url": "somewhere"}}}))


def test_example_configs_in_the_docs_are_valid(tmp_path, monkeypatch):
    """Every gpulab.yaml example in docs/auth.md loads (with its secrets provided)."""
    import re

    text = (ROOT / "docs" / "auth.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(blocks) >= 4
    for var in set(re.findall(r"env:([A-Z_]+)", text)) | {"JUPYTERHUB_CRYPT_KEY"}:
        monkeypatch.setenv(var, "secret-value-from-the-environment")
    for block in blocks:
        data = yaml.safe_load(block)
        data.setdefault("auth", {})
        for section in ("oidc", "github", "google", "ldap"):
            if section in data["auth"]:
                for key in ("client_secret", "lookup_dn_search_password"):
                    if str(data["auth"][section].get(key, "")).startswith("file:"):
                        f = tmp_path / f"{section}-{key}"
                        f.write_text("secret")
                        data["auth"][section][key] = f"file:{f}"
        if data["auth"].get("kind") == "google":
            continue  # needs oauthenticator[googlegroups], not installed in tests
        load(write(tmp_path, data))


def test_api_token_scopes(tmp_path):
    tok = "t" * 40
    cfg = load(write(tmp_path, {"hub": {"api_tokens": {"ci": tok, "monitor": tok.replace("t", "m")},
                                        "api_token_scopes": {"monitor": ["read:users:activity", "list:users"]}}}))
    c = Config()
    apply_all(c, cfg)
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["admin"]["services"] == ["ci"]
    assert roles["gpulab-token-monitor"]["scopes"] == ["read:users:activity", "list:users"]
    assert roles["gpulab-token-monitor"]["services"] == ["monitor"]
    with pytest.raises(ConfigError, match="hub.api_token_scopes.nope: there is no hub.api_tokens.nope"):
        load(write(tmp_path, {"hub": {"api_token_scopes": {"nope": ["list:users"]}}}))
    with pytest.raises(ConfigError, match="hub.api_token_scopes.ci: unknown scope 'everything'"):
        load(write(tmp_path, {"hub": {"api_tokens": {"ci": tok}, "api_token_scopes": {"ci": ["everything"]}}}))


def test_github_applied(tmp_path):
    data = {"hub": {"admin_users": ["octo-admin"]},
            "auth": {"kind": "github", "github": {"client_id": "x", "client_secret": "env:HOME"},
                     "group_map": {"my-lab:gpu-users": ["researcher"]}, "allowed_groups": ["my-lab"]},
            "quotas": {"groups": {"researcher": {"max_gpus": 2}}}}
    c = Config()
    apply_all(c, load(write(tmp_path, data)))
    from hub_plugins.auth.oauth import GPULabGitHubAuthenticator

    a = GPULabGitHubAuthenticator(config=c)
    assert a.scope == ["read:user", "read:org"] and a.populate_teams_in_auth_state and a.manage_groups
    model = a.gpulab_apply_access({"name": "kim", "admin": None, "auth_state": {
        "teams": [{"slug": "gpu-users", "organization": {"login": "my-lab"}}], "orgs": []}})
    assert model["groups"] == ["researcher"] and model["auth_state"]["gpulab"]["idp_groups"] == [
        "my-lab", "my-lab:gpu-users"]


def test_google_requires_a_verified_email(tmp_path):
    from hub_plugins.auth.mixin import NotAllowed
    from hub_plugins.auth.oauth import GPULabGoogleAuthenticator

    data = {"auth": {"kind": "google", "allowed_users": ["ann"],
                     "google": {"client_id": "x", "client_secret": "env:HOME", "hosted_domain": ["lab.example"]}}}
    c = Config()
    apply_all(c, load(write(tmp_path, data)))
    a = GPULabGoogleAuthenticator(config=c)
    info = {"email": "ann@lab.example", "hd": "lab.example", "verified_email": False}
    with pytest.raises(NotAllowed, match="is not verified"):
        a.check_blocked_users("ann", {"auth_state": {"google_user": info}})
    assert a.check_blocked_users("ann", {"auth_state": {"google_user": {**info, "verified_email": True}}})
    assert not a.check_blocked_users("ann", {"auth_state": {"google_user": {**info, "verified_email": True,
                                                                            "hd": "elsewhere.example"}}})
