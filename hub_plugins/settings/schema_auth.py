"""gpulab.yaml's ``auth`` section: built-in accounts or an identity provider, and the group
mapping (checked further and applied by ``settings/auth.py``). Registered in ``schema.GPULAB_SCHEMA``."""

from __future__ import annotations

from .patterns import NAME

SECRET = {
    "type": "string",
    "description": "'env:VAR' or 'file:/path': secrets are read from the environment or a file, never written here",
    "pattern": "^(env|file):.+$",
}
_URL = {"type": "string", "pattern": r"^https?://[^/\s]+(/.*)?$"}
_strings = {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True}
_OAUTH_COMMON = {
    "client_id": {"type": "string", "minLength": 1},
    "client_secret": SECRET,
    "scopes": {**_strings, "description": "OAuth scopes to request (each provider has a sensible default)"},
    "callback_url": {**_URL, "description": "default: hub.bind_url + /hub/oauth_callback"},
    "login_service": {"type": "string", "minLength": 1, "description": "the sign-in button says 'Sign in with ...'"},
    "auto_login": {"type": "boolean", "description": "skip the hub's login page, go straight to the provider"},
}


def _closed(properties: dict, required=()) -> dict:
    return {"type": "object", "additionalProperties": False, "properties": properties, "required": list(required)}


AUTH = _closed({
    "kind": {"enum": ["native", "oidc", "github", "google", "ldap"]},
    "native": _closed({
        "open_signup": {"type": "boolean"},
        "minimum_password_length": {"type": "integer", "minimum": 8},
        "check_common_password": {"type": "boolean"},
        "allowed_failed_logins": {"type": "integer", "minimum": 0},
        "seconds_before_next_try": {"type": "integer", "minimum": 0},
    }),
    "oidc": _closed({
        **_OAUTH_COMMON,
        "issuer": {**_URL, "description": "the IdP's issuer URL; its discovery document gives the endpoints"},
        "authorize_url": _URL,
        "token_url": _URL,
        "userdata_url": _URL,
        "username_claim": {"type": "string", "minLength": 1},
        "groups_claim": {"type": "string", "minLength": 1, "description": "userinfo claim with the groups; dotted for nested"},
        "logout_redirect_url": _URL,
        "validate_server_cert": {"type": "boolean"},
    }, required=["client_id", "client_secret"]),
    "github": _closed({**_OAUTH_COMMON, "github_url": _URL}, required=["client_id", "client_secret"]),
    "google": _closed({
        **_OAUTH_COMMON,
        "hosted_domain": _strings,
        "gsuite_administrator": {"type": "object", "additionalProperties": {"type": "string", "minLength": 3},
                                 "description": "domain -> an admin's email, to read Google groups"},
        "service_account_keys": {"type": "object", "additionalProperties": {"type": "string", "minLength": 1},
                                 "description": "domain -> service account key file, to read Google groups"},
    }, required=["client_id", "client_secret"]),
    "ldap": _closed({
        "server_address": {"type": "string", "minLength": 1},
        "server_port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "tls": {"enum": ["on_connect", "before_bind", "insecure"],
                "description": "on_connect (ldaps), before_bind (StartTLS) or insecure (tests only)"},
        "bind_dn_template": {"type": "array", "items": {"type": "string", "pattern": r"\{username\}"}, "minItems": 1},
        "lookup_dn": {"type": "boolean"},
        "user_search_base": {"type": "string"},
        "user_attribute": {"type": "string"},
        "lookup_dn_search_user": {"type": "string"},
        "lookup_dn_search_password": SECRET,
        "group_search_base": {"type": "string"},
        "group_search_filter": {"type": "string", "description": "with {userdn} and {uid}"},
        "group_name_attribute": {"type": "string", "minLength": 1},
        "valid_username_regex": {"type": "string", "minLength": 1},
    }, required=["server_address"]),
    "group_map": {
        "type": "object",
        "description": "IdP group -> hub groups its members get",
        "additionalProperties": {"type": "array", "items": {"type": "string", "pattern": NAME}, "uniqueItems": True},
    },
    "allowed_groups": {**_strings, "description": "IdP groups whose members may sign in"},
    "admin_groups": {**_strings, "description": "IdP groups whose members are hub admins"},
    "keep_unmapped_groups": {"type": "boolean"},
    "allowed_users": {"type": "array", "items": {"type": "string", "pattern": NAME}, "uniqueItems": True},
    "allow_all": {"type": "boolean", "description": "everyone the identity provider authenticates may sign in"},
    "refresh_seconds": {
        "type": ["integer", "null"], "minimum": 0,
        "description": "re-read IdP groups this often and before every spawn (OAuth kinds; needs JUPYTERHUB_CRYPT_KEY)",
    },
    "roles": {
        "type": "object",
        "propertyNames": {"pattern": r"^[a-z][a-z0-9_-]{1,254}$"},
        "additionalProperties": _closed({
            "description": {"type": "string"},
            "scopes": {**_strings, "minItems": 1},
            "idp_groups": {**_strings, "minItems": 1},
        }, required=["scopes", "idp_groups"]),
    },
})
