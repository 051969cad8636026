"""LDAP / Active Directory sign-in over ldapauthenticator, with directory groups mapped by the
mixin.

ldapauthenticator binds as the person (their DN from ``bind_dn_template`` or a lookup) and, for
its own ``allowed_groups``, only checks the groups it is told about. gpulab instead searches for
*all* groups the person is in (``group_search_base`` + ``group_search_filter``), with the
person's own bound connection, and lets the mixin map them.
"""

from __future__ import annotations

import contextvars

import ldap3
from ldap3.utils.conv import escape_filter_chars
from ldapauthenticator import LDAPAuthenticator
from traitlets import Unicode

from .mixin import GroupMappingMixin

# Set and read within one sign-in: the upstream authenticate() calls get_user_attributes()
# with the bound connection; each request runs in its own asyncio context, so concurrent
# sign-ins never see each other's values.
_login: contextvars.ContextVar[str] = contextvars.ContextVar("gpulab_ldap_login", default="")
_groups: contextvars.ContextVar[list | None] = contextvars.ContextVar("gpulab_ldap_groups", default=None)


def group_filter(template: str, userdn: str, uid: str) -> str:
    """The search filter with the person's DN and name escaped (no LDAP injection)."""
    return template.format(userdn=escape_filter_chars(userdn), uid=escape_filter_chars(uid))


class GPULabLDAPAuthenticator(GroupMappingMixin, LDAPAuthenticator):
    """LDAP: the directory groups (their ``cn``) that list the person are the IdP groups."""

    group_search_base = Unicode(
        "",
        config=True,
        help="""Where to search for the person's groups (e.g. ou=groups,dc=lab,dc=example).
        Empty: no groups are read (everyone has only what the default quota gives).""",
    )
    group_name_attribute = Unicode(
        "cn",
        config=True,
        help="The attribute of a group entry that names it (the name group_map uses).",
    )

    async def authenticate(self, handler, data):
        _login.set((data or {}).get("username") or "")
        _groups.set(None)
        model = await super().authenticate(handler, data)
        if model is None:
            return None
        model["auth_state"]["groups"] = sorted(_groups.get() or [])
        return self.gpulab_apply_access(model)

    def get_user_attributes(self, conn, userdn):
        attrs = super().get_user_attributes(conn, userdn)
        _groups.set(self.gpulab_search_groups(conn, userdn, _login.get()))
        return attrs

    def gpulab_search_groups(self, conn, userdn: str, uid: str) -> list[str]:
        if not self.group_search_base:
            return []
        conn.search(
            search_base=self.group_search_base,
            search_scope=ldap3.SUBTREE,
            search_filter=group_filter(self.group_search_filter, userdn, uid),
            attributes=[self.group_name_attribute],
        )
        names = []
        for entry in conn.entries:
            values = entry.entry_attributes_as_dict.get(self.group_name_attribute) or []
            names += [str(v) for v in values[:1]]
        return sorted(set(names))

    def gpulab_identity_groups(self, auth_model):
        return (auth_model.get("auth_state") or {}).get("groups") or []

