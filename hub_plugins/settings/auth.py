"""The ``auth`` section of gpulab.yaml: cross-checks the schema cannot express, secrets, and its
translation into authenticator config (``apply_auth``, called from ``apply.update_auth``).

``auth.kind`` picks the class; the provider's section (``auth.oidc``, ``auth.ldap``, ...) holds its
settings; the group mapping (``group_map``, ``allowed_groups``, ``admin_groups``, ``roles``) is the
same for every identity provider.
"""

from __future__ import annotations

import importlib.util
import os

from jupyterhub.scopes import scope_definitions
from traitlets.config import Config

from ..auth.policy import IdentityPolicy
from .errors import ConfigError
from .secrets import read_secret

CLASSES = {
    "native": "gpulab-native",
    "oidc": "gpulab-oidc",
    "github": "gpulab-github",
    "google": "gpulab-google",
    "ldap": "gpulab-ldap",
}
TRAIT_CLASS = {
    "oidc": "GPULabOIDCAuthenticator",
    "github": "GPULabGitHubAuthenticator",
    "google": "GPULabGoogleAuthenticator",
    "ldap": "GPULabLDAPAuthenticator",
}
MAPPING_KEYS = ("group_map", "allowed_groups", "admin_groups", "keep_unmapped_groups", "roles")
RESERVED_ROLES = {"admin", "user", "server", "token"}


# -- checks (at load) --------------------------------------------------------------------------
def check_auth(cfg: dict, secrets: bool = True) -> None:
    """Raise ConfigError naming the key when the auth section cannot work; read its secrets
    (``secrets``: only in the hub, whose environment holds them)."""
    _check_token_scopes(cfg["hub"])
    auth = cfg["auth"]
    kind = auth["kind"]
    if kind == "native":
        used = [k for k in MAPPING_KEYS if auth.get(k)]
        if used:
            raise ConfigError(
                f"auth.{used[0]}: built-in accounts (auth.kind: native) have no identity-provider groups; "
                "put people in hub groups on the admin page (/hub/admin) instead, or choose an identity provider"
            )
        return
    section = auth.get(kind)
    if not section:
        raise ConfigError(f"auth.{kind}: missing; auth.kind is '{kind}', so its settings are needed (see docs/auth.md)")
    for key in ("client_secret", "lookup_dn_search_password"):
        if secrets and key in section:
            section[key] = read_secret(section[key], f"auth.{kind}.{key}", min_length=1)
    if kind == "oidc" and not section.get("issuer"):
        missing = [k for k in ("authorize_url", "token_url", "userdata_url") if not section.get(k)]
        if missing:
            raise ConfigError(f"auth.oidc: set issuer (endpoints are discovered) or all of authorize_url, "
                              f"token_url, userdata_url (missing: {', '.join(missing)})")
    if kind == "ldap" and not section.get("bind_dn_template") and not section.get("lookup_dn"):
        raise ConfigError("auth.ldap: set bind_dn_template (e.g. ['uid={username},ou=people,dc=lab,dc=example']) "
                          "or lookup_dn: true with user_search_base and user_attribute")
    if auth["allow_all"] and auth["allowed_groups"]:
        raise ConfigError("auth.allow_all: true lets everyone in, so auth.allowed_groups would be ignored; keep one")
    if not (auth["allow_all"] or auth["allowed_groups"] or auth["allowed_users"]):
        raise ConfigError(
            "auth: say who may sign in besides hub.admin_users: auth.allowed_groups (IdP groups whose members may sign in), "
            "auth.allowed_users, or auth.allow_all: true (everyone the identity provider authenticates)"
        )
    if kind == "github" and "admin" in cfg["hub"]["admin_users"]:
        raise ConfigError("hub.admin_users: 'admin' is a GitHub account someone else owns; list your admins' "
                          "GitHub logins instead (or use auth.admin_groups, e.g. 'my-lab:hub-admins')")
    if kind == "github" and auth["allow_all"]:
        raise ConfigError("auth.allow_all with GitHub would let every GitHub account in; list your organisation "
                          "or teams in auth.allowed_groups (e.g. 'my-lab' or 'my-lab:gpu-users')")
    if auth["refresh_seconds"] is not None:
        if kind == "ldap":
            raise ConfigError("auth.refresh_seconds: LDAP cannot re-read groups without the person's password; "
                              "their groups are read at every sign-in")
    _check_roles(auth["roles"])
    _check_quota_groups_reachable(cfg)
    if kind == "google":
        _check_google(section, auth)


def _check_scopes(scopes, where: str) -> None:
    for scope in scopes:
        base = scope.split("!", 1)[0]
        if base not in scope_definitions and not base.startswith("custom:"):
            raise ConfigError(f"{where}: unknown scope '{scope}' (JupyterHub scopes: "
                              "https://jupyterhub.readthedocs.io/en/stable/rbac/scopes.html)")


def _check_roles(roles: dict) -> None:
    for name, role in roles.items():
        if name in RESERVED_ROLES:
            raise ConfigError(f"auth.roles.{name}: '{name}' is one of JupyterHub's own roles; choose another name "
                              "(admin status comes from hub.admin_users and auth.admin_groups)")
        _check_scopes(role["scopes"], f"auth.roles.{name}.scopes")


def _check_token_scopes(hub: dict) -> None:
    for name, scopes in (hub.get("api_token_scopes") or {}).items():
        if name not in hub["api_tokens"]:
            raise ConfigError(f"hub.api_token_scopes.{name}: there is no hub.api_tokens.{name} to give scopes to")
        _check_scopes(scopes, f"hub.api_token_scopes.{name}")


def _check_quota_groups_reachable(cfg: dict) -> None:
    """With an identity provider, hub groups come only from group_map: a quota group no IdP group
    maps to can never have members (usually a typo that silently leaves people on the default)."""
    auth = cfg["auth"]
    if auth["keep_unmapped_groups"]:
        return
    targets = {g for hub_groups in auth["group_map"].values() for g in hub_groups}
    unreachable = sorted(set(cfg["quotas"]["groups"]) - targets)
    if unreachable:
        raise ConfigError(
            f"quotas.groups.{unreachable[0]}: no IdP group maps to this hub group, so nobody can be in it; "
            f"add it to auth.group_map (hub groups it gives now: {', '.join(sorted(targets)) or 'none'}) "
            "or set auth.keep_unmapped_groups: true"
        )


def _check_google(section: dict, auth: dict) -> None:
    wants_groups = any(auth.get(k) for k in MAPPING_KEYS if k != "keep_unmapped_groups")
    if not wants_groups:
        return
    if not (section.get("gsuite_administrator") and section.get("service_account_keys")):
        raise ConfigError("auth.google: reading Google groups needs gsuite_administrator and service_account_keys "
                          "(per domain); without them nobody would be in any group")
    if importlib.util.find_spec("googleapiclient") is None:
        raise ConfigError("auth.google: reading Google groups needs `pip install oauthenticator[googlegroups]`")


# -- translation (at start-up) -----------------------------------------------------------------
def apply_auth(c: Config, cfg: dict) -> None:
    """Configure the identity-provider authenticator selected by ``auth.kind`` (not native)."""
    auth = cfg["auth"]
    kind = auth["kind"]
    # checked here, in the hub, not when the file is loaded: services read gpulab.yaml too and
    # never get the crypt key
    if auth["refresh_seconds"] is not None and not os.environ.get("JUPYTERHUB_CRYPT_KEY"):
        raise ConfigError("auth.refresh_seconds keeps each person's IdP tokens in the hub's database, "
                          "encrypted: set JUPYTERHUB_CRYPT_KEY (e.g. `openssl rand -hex 32`) in the hub's environment")
    cls = TRAIT_CLASS[kind]
    section = dict(auth[kind])
    c.JupyterHub.authenticator_class = CLASSES[kind]
    t = c[cls]
    # the mapping, the same for every provider (GroupMappingMixin traits)
    t.group_map = {k: list(v) for k, v in auth["group_map"].items()}
    t.keep_unmapped_groups = auth["keep_unmapped_groups"]
    t.idp_allowed_groups = set(auth["allowed_groups"])
    t.idp_admin_groups = set(auth["admin_groups"])
    t.idp_roles = {name: dict(role) for name, role in auth["roles"].items()}
    t.allowed_users = set(auth["allowed_users"])
    t.allow_all = auth["allow_all"]
    if auth["refresh_seconds"] is not None:
        # keep the IdP tokens (encrypted) to re-read the groups while people stay signed in, and
        # always right before a spawn, so the quota follows the IdP without a new sign-in
        t.enable_auth_state = True
        t.auth_refresh_age = auth["refresh_seconds"]
        t.refresh_pre_spawn = True
    if kind == "ldap":
        _apply_ldap(t, section)
        return
    t.oauth_callback_url = section.pop("callback_url", None) or cfg["hub"]["bind_url"].rstrip("/") + "/hub/oauth_callback"
    if "scopes" in section:
        t.scope = section.pop("scopes")
    if "auto_login" in section:
        t.auto_login = section.pop("auto_login")
    if kind == "google":
        keys = section.get("service_account_keys") or {}
        # upstream fetches a person's groups only when it has groups to check: give it every
        # group the mapping mentions, per domain it can read
        referenced = sorted(IdentityPolicy.build(
            group_map=auth["group_map"], allowed_groups=auth["allowed_groups"],
            admin_groups=auth["admin_groups"], roles=auth["roles"]).referenced_groups)
        if referenced and keys:
            t.allowed_google_groups = {domain: set(referenced) for domain in keys}
        if "service_account_keys" in section:
            t.google_service_account_keys = section.pop("service_account_keys")
    for key, value in section.items():
        setattr(t, key, value)


def _apply_ldap(t, section: dict) -> None:
    # the LDAP library only where LDAP is configured (it is heavy, and optional for every other kind)
    from ldapauthenticator.ldapauthenticator import TlsStrategy

    tls = section.pop("tls", "before_bind")
    t.tls_strategy = TlsStrategy[tls]
    for key, value in section.items():
        setattr(t, key, value)
