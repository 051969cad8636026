"""OAuth2 / OpenID Connect sign-in over oauthenticator, with IdP groups mapped by the mixin.

Each class adds only its provider's steps: where the person's groups are (a userinfo claim,
GitHub teams and organisations, Google groups) and, for OIDC, endpoint discovery from the issuer.
Everything else (the OAuth dance, state, PKCE, token exchange) is oauthenticator's.
"""

from __future__ import annotations

from collections.abc import Iterable

from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.github import GitHubOAuthenticator
from oauthenticator.google import GoogleOAuthenticator
from oauthenticator.oauth2 import OAuthLoginHandler
from traitlets import Unicode, default

from .mixin import STATE_KEY, GroupMappingMixin, NotAllowed


# -- pure: where the groups are --------------------------------------------------------------
def claim_groups(claims: dict, path: str) -> list[str]:
    """The groups in a (possibly nested, dotted) claim: ``groups`` or ``realm_access.roles``.

    A list of names, or one string of names separated by commas or spaces (some IdPs flatten
    multi-valued claims). A missing claim means no groups."""
    value = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return []
        value = value.get(part)
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.replace(",", " ").split() if v]
    if isinstance(value, (list, tuple, set)):
        return [str(v) for v in value if isinstance(v, (str, int)) and str(v)]
    return []


def github_groups(teams: Iterable[dict] | None, orgs: Iterable[dict] | None) -> list[str]:
    """GitHub memberships as IdP group names: ``org`` for each organisation and ``org:team``
    for each team (team slug, as in its URL)."""
    out = {o["login"] for o in orgs or () if o.get("login")}
    for t in teams or ():
        org = (t.get("organization") or {}).get("login")
        if org and t.get("slug"):
            out.add(org)
            out.add(f"{org}:{t['slug']}")
    return sorted(out)


def discovered_endpoints(issuer: str, doc: dict) -> dict[str, str]:
    """authorize/token/userinfo URLs from an OIDC discovery document, checked against the issuer
    the admin configured (a mismatch means a wrong URL or someone else's document)."""
    if doc.get("issuer", "").rstrip("/") != issuer.rstrip("/"):
        raise ValueError(
            f"The OIDC discovery document at {issuer} names issuer {doc.get('issuer')!r}; "
            "set auth.oidc.issuer to exactly the IdP's issuer URL."
        )
    missing = [k for k in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint") if not doc.get(k)]
    if missing:
        raise ValueError(f"The OIDC discovery document of {issuer} lacks {', '.join(missing)}.")
    return {
        "authorize_url": doc["authorization_endpoint"],
        "token_url": doc["token_endpoint"],
        "userdata_url": doc["userinfo_endpoint"],
    }


# -- shared by the OAuth classes -------------------------------------------------------------
class _OAuthGroups(GroupMappingMixin):
    async def update_auth_model(self, auth_model):
        auth_model = await super().update_auth_model(auth_model)
        return self.gpulab_apply_access(auth_model)

    async def get_user_groups(self, auth_state):
        # oauthenticator asks this (after update_auth_model) for the hub groups to set
        return set(auth_state[STATE_KEY]["hub_groups"])


class _DiscoveringLoginHandler(OAuthLoginHandler):
    async def get(self):
        await self.authenticator.gpulab_discover()
        return super().get()


class GPULabOIDCAuthenticator(_OAuthGroups, GenericOAuthenticator):
    """OpenID Connect (Keycloak, Dex, university SSO): groups from a userinfo claim."""

    login_handler = _DiscoveringLoginHandler

    issuer = Unicode(
        "",
        config=True,
        help="""The IdP's issuer URL (e.g. https://sso.example.org/realms/lab). Its discovery
        document (/.well-known/openid-configuration) fills authorize_url, token_url and
        userdata_url that are not set explicitly; it is read at the first sign-in, so the hub
        starts even while the IdP is down.""",
    )
    groups_claim = Unicode(
        "groups",
        config=True,
        help="""The userinfo claim listing the person's groups; a dotted path reaches nested
        claims (e.g. 'realm_access.roles' for Keycloak realm roles).""",
    )

    @default("username_claim")
    def _gpulab_username_claim(self):
        return "preferred_username"

    @default("scope")
    def _gpulab_scope(self):
        return ["openid", "profile", "email", "groups"]

    @default("login_service")
    def _gpulab_login_service(self):
        return "single sign-on"

    _gpulab_discovered = False

    async def gpulab_discover(self) -> None:
        if self._gpulab_discovered or not self.issuer:
            return
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc = await self.httpfetch(url, "fetching OIDC discovery", method="GET",
                                   validate_cert=self.validate_server_cert)
        for key, value in discovered_endpoints(self.issuer, doc).items():
            if not getattr(self, key):  # explicit settings win
                setattr(self, key, value)
        self._gpulab_discovered = True
        self.log.info("gpulab: OIDC endpoints of %s: %s, %s, %s", self.issuer, self.authorize_url,
                      self.token_url, self.userdata_url)

    async def get_token_info(self, handler, params):
        await self.gpulab_discover()  # a callback can arrive first after a hub restart
        return await super().get_token_info(handler, params)

    async def token_to_user(self, token_info):
        await self.gpulab_discover()
        return await super().token_to_user(token_info)

    def gpulab_identity_groups(self, auth_model):
        return claim_groups(auth_model["auth_state"][self.user_auth_state_key], self.groups_claim)


class GPULabGitHubAuthenticator(_OAuthGroups, GitHubOAuthenticator):
    """GitHub: organisations (``my-lab``) and teams (``my-lab:gpu-users``) are the IdP groups."""

    @default("populate_teams_in_auth_state")
    def _gpulab_teams(self):
        return True

    @default("scope")
    def _gpulab_scope(self):
        return ["read:user", "read:org"]  # read:org lists private memberships too

    async def update_auth_model(self, auth_model):
        state = auth_model["auth_state"]
        token = state["token_response"]
        # GitHub's own update (teams) runs in super(); organisations without a team are only
        # visible through /user/orgs
        state["orgs"] = await self.httpfetch(
            f"{self.github_api}/user/orgs?per_page=100", "fetching user organizations", method="GET",
            headers=self.build_userdata_request_headers(token["access_token"], token.get("token_type", "bearer")),
            validate_cert=self.validate_server_cert,
        ) or []
        return await super().update_auth_model(auth_model)

    def gpulab_identity_groups(self, auth_model):
        state = auth_model["auth_state"]
        return github_groups(state.get("teams"), state.get("orgs"))


class GPULabGoogleAuthenticator(_OAuthGroups, GoogleOAuthenticator):
    """Google Workspace: Google groups (fetched with a service account) are the IdP groups."""

    def gpulab_identity_groups(self, auth_model):
        return auth_model["auth_state"][self.user_auth_state_key].get("google_groups") or []

    def check_blocked_users(self, username, auth_model):
        # Upstream checks the verified email in check_allowed, which the mixin replaces
        info = (auth_model or {}).get("auth_state", {}).get(self.user_auth_state_key, {})
        if auth_model is not None and not info.get("verified_email"):
            raise NotAllowed(f"Your Google account's email address ({info.get('email')}) is not verified. "
                             "Verify it with Google, then sign in again.")
        return super().check_blocked_users(username, auth_model)
