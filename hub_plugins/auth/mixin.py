"""One mixin for every identity-provider authenticator: IdP groups -> hub groups, roles, admin.

``class X(GroupMappingMixin, UpstreamAuthenticator)``: the concrete class implements only
``gpulab_identity_groups(auth_model)`` (which IdP groups this person is in, read from what the
upstream authenticator fetched) and calls ``gpulab_apply_access(auth_model)`` once the upstream
has built its auth model. The mixin then, at every login:

- sets ``groups`` (``manage_groups``): JupyterHub replaces the person's hub groups with them, so
  removal from an IdP group takes effect at the next login;
- sets ``roles`` (``manage_roles``, only when roles are configured) and ``admin``;
- refuses people outside the allowed groups with a 403 page that says what to do.

The decisions themselves are pure (``policy.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

from tornado import web
from traitlets import Bool, Dict, List, Set, Unicode, default
from traitlets.config import LoggingConfigurable

from ..scopes import ADMIN_ROLE
from .policy import Access, IdentityPolicy, decide
from .requester import NoteStopRequester

STATE_KEY = "gpulab"  # where the decision is kept in auth_state (admins can inspect it)


class NotAllowed(web.HTTPError):
    """403 with a message a person can act on (JupyterHub renders it on its error page)."""

    def __init__(self, message: str):
        # '%s' keeps a '%' in a group name from being read as a format directive
        super().__init__(403, "%s", message, reason="Not allowed on this hub")


class GroupMappingMixin(NoteStopRequester, LoggingConfigurable):
    """Map identity-provider groups to hub groups, roles and admin status (``c.GroupMappingMixin``)."""

    group_map = Dict(
        key_trait=Unicode(),
        value_trait=List(Unicode()),
        config=True,
        help="""IdP group -> hub groups its members get, e.g. {"ds-researchers": ["researcher"]}.
        Quotas and profiles are keyed on hub groups. IdP groups not listed here are ignored
        unless keep_unmapped_groups is True.""",
    )
    keep_unmapped_groups = Bool(
        False,
        config=True,
        help="""Also give people a hub group of the same name for every IdP group that
        group_map does not list (off by default, so an IdP with hundreds of groups does not
        flood the hub).""",
    )
    idp_allowed_groups = Set(
        Unicode(),
        config=True,
        help="""IdP groups whose members may sign in. Admins and allowed_users may always sign
        in; everyone else gets a 403 page naming these groups. Empty: only admins and
        allowed_users (or everyone the IdP authenticates, with allow_all). This replaces the
        upstream authenticator's own allow rules; its block rules (blocked_users, Google's
        hosted_domain) still apply.""",
    )
    idp_admin_groups = Set(
        Unicode(),
        config=True,
        help="""IdP groups whose members are hub admins. When set, admin status follows the IdP
        at every login (admin_users stay admins).""",
    )
    idp_roles = Dict(
        config=True,
        help="""Hub roles granted by IdP group: name -> {"scopes": [...], "idp_groups": [...],
        "description": "..."}. Turns on manage_roles: JupyterHub then takes every user's roles
        from the authenticator at each login.""",
    )

    @default("manage_groups")
    def _gpulab_default_manage_groups(self):
        return True

    @default("manage_roles")
    def _gpulab_default_manage_roles(self):
        return bool(self.idp_roles)

    @property
    def identity_policy(self) -> IdentityPolicy:
        return IdentityPolicy.build(
            group_map=self.group_map,
            allowed_groups=self.idp_allowed_groups,
            admin_groups=self.idp_admin_groups,
            roles=self.idp_roles,
            keep_unmapped=self.keep_unmapped_groups,
            allow_all=self.allow_all,
            allowed_users=self.allowed_users,
            admin_users=self.admin_users,
        )

    # -- the provider's step -----------------------------------------------------------------
    def gpulab_identity_groups(self, auth_model: dict) -> Iterable[str]:
        """The IdP groups of the person in ``auth_model`` (provider-specific)."""
        raise NotImplementedError

    # -- shared steps ------------------------------------------------------------------------
    def gpulab_access(self, auth_model: dict) -> Access:
        return decide(self.identity_policy, auth_model["name"], self.gpulab_identity_groups(auth_model))

    def gpulab_apply_access(self, auth_model: dict) -> dict:
        """Put the decision into the auth model JupyterHub applies after a successful login."""
        access = self.gpulab_access(auth_model)
        state = auth_model.get("auth_state")
        if state is None:
            state = auth_model["auth_state"] = {}
        state[STATE_KEY] = access.as_state()
        if self.manage_groups:
            auth_model["groups"] = list(access.hub_groups)
        if self.manage_roles:
            auth_model["roles"] = self.gpulab_role_models(access)
        if access.admin is not None:
            auth_model["admin"] = access.admin
        self.log.info(
            "gpulab: %s: IdP groups %s -> hub groups %s, roles %s, admin %s",
            access.username, list(access.idp_groups), list(access.hub_groups), list(access.roles), access.admin,
        )
        return auth_model

    def gpulab_role_models(self, access: Access) -> list[dict]:
        # JupyterHub strips every role not listed, the default ones included: list them
        out = [{"name": "user"}]
        if access.admin:  # the hub's admin role, and gpulab's (its services' admin scopes)
            out += [{"name": "admin"}, {"name": ADMIN_ROLE}]
        specs = {r.name: r for r in self.identity_policy.roles}
        out += [specs[name].as_jupyterhub() for name in access.roles]
        return out

    async def load_managed_roles(self):
        # Roles defined here survive their last member leaving (JupyterHub deletes managed roles
        # it does not know about when they become empty, and re-creates them without scopes).
        return [r.as_jupyterhub() for r in self.identity_policy.roles]

    async def refresh_user(self, user, handler=None, **kwargs):
        """With auth state (``auth.refresh_seconds``), upstream re-reads the person's data and
        the mapping runs again (JupyterHub then applies the new groups). Someone who left every
        allowed group is refused there and then, with the same explanation as at sign-in: their
        page views and spawns, even an admin's spawn for them, answer 403."""
        result = await super().refresh_user(user, handler, **kwargs)
        state = (result.get("auth_state") or {}).get(STATE_KEY) if isinstance(result, dict) else None
        if state is not None:
            access = decide(self.identity_policy, user.name, state["idp_groups"])
            if not access.allowed:
                self.log.warning("gpulab: %s is no longer in an allowed group", user.name)
                raise NotAllowed(access.message)
        return result

    async def check_allowed(self, username, auth_model):
        if auth_model is None:  # JupyterHub < 5 asks without a model
            return True
        state = (auth_model.get("auth_state") or {}).get(STATE_KEY)
        groups = state["idp_groups"] if state else self.gpulab_identity_groups(auth_model)
        access = decide(self.identity_policy, username, groups)
        if access.allowed:
            return True
        self.log.warning("gpulab: refusing %s (IdP groups: %s)%s", username, ", ".join(access.idp_groups) or "none",
                         "" if access.idp_groups else "; if everyone is refused, check that the IdP sends the groups")
        raise NotAllowed(access.message)
