"""From the groups an identity provider reports to what a person gets on the hub (pure).

An identity provider (OIDC claim, LDAP group, GitHub team, Google group) says which *IdP groups*
a person is in. The policy turns them into:

- hub groups (what quotas and profiles are keyed on): ``group_map`` sends one IdP group to any
  number of hub groups (``ds-researchers -> [researcher]``); unmapped IdP groups are dropped
  unless ``keep_unmapped`` (then they become hub groups of the same name);
- hub roles (JupyterHub scopes): a role lists the IdP groups whose members get it;
- admin status: members of ``admin_groups`` (and ``admin_users``) are admins; when the policy
  manages admin status, everyone else is *not* (removal at the IdP revokes it at next login);
- whether the person may sign in at all: admins, ``allowed_users``, members of
  ``allowed_groups``, or everyone the IdP authenticates when ``allow_all``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RoleSpec:
    """A hub role granted to members of some IdP groups."""

    name: str
    scopes: tuple[str, ...]
    idp_groups: frozenset[str]
    description: str = ""

    def as_jupyterhub(self) -> dict:
        """The role dict JupyterHub's managed roles take (``load_managed_roles``, auth models)."""
        return {"name": self.name, "description": self.description, "scopes": list(self.scopes)}


@dataclass(frozen=True)
class IdentityPolicy:
    group_map: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    allowed_groups: frozenset[str] = frozenset()
    admin_groups: frozenset[str] = frozenset()
    roles: tuple[RoleSpec, ...] = ()
    keep_unmapped: bool = False
    allow_all: bool = False
    allowed_users: frozenset[str] = frozenset()
    admin_users: frozenset[str] = frozenset()

    @classmethod
    def build(cls, *, group_map=None, allowed_groups=(), admin_groups=(), roles=None, keep_unmapped=False,
              allow_all=False, allowed_users=(), admin_users=()) -> IdentityPolicy:
        """From config-shaped values (``roles``: name -> {scopes, idp_groups, description})."""
        specs = tuple(
            RoleSpec(name, tuple(r.get("scopes") or ()), frozenset(r.get("idp_groups") or ()),
                     r.get("description") or "")
            for name, r in sorted((roles or {}).items())
        )
        return cls(
            group_map={k: tuple(v if isinstance(v, (list, tuple)) else [v]) for k, v in (group_map or {}).items()},
            allowed_groups=frozenset(allowed_groups or ()),
            admin_groups=frozenset(admin_groups or ()),
            roles=specs,
            keep_unmapped=bool(keep_unmapped),
            allow_all=bool(allow_all),
            allowed_users=frozenset(allowed_users or ()),
            admin_users=frozenset(admin_users or ()),
        )

    @property
    def manages_admin(self) -> bool:
        """Admin status follows the IdP only when IdP groups can grant it (or roles are managed,
        where JupyterHub needs every role, 'admin' included, stated at each login)."""
        return bool(self.admin_groups) or bool(self.roles)

    @property
    def referenced_groups(self) -> frozenset[str]:
        """Every IdP group the policy mentions (providers that must ask for membership one group
        at a time, such as Google, ask only about these)."""
        out = set(self.group_map) | self.allowed_groups | self.admin_groups
        for r in self.roles:
            out |= r.idp_groups
        return frozenset(out)


@dataclass(frozen=True)
class Access:
    """What one sign-in gets."""

    username: str
    idp_groups: tuple[str, ...]
    hub_groups: tuple[str, ...]
    roles: tuple[str, ...]
    admin: bool | None  # None: leave the hub's admin flag as it is
    allowed: bool
    message: str = ""  # why not, in words the person can act on

    def as_state(self) -> dict:
        """JSON-friendly summary (kept in the auth model / auth state for admins to inspect)."""
        return {"idp_groups": list(self.idp_groups), "hub_groups": list(self.hub_groups),
                "roles": list(self.roles), "admin": self.admin}


def _or_list(names: Iterable[str]) -> str:
    names = sorted(names)
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " or " + names[-1]


def decide(policy: IdentityPolicy, username: str, idp_groups: Iterable[str]) -> Access:
    groups = frozenset(g for g in idp_groups if g)
    hub: set[str] = set()
    for g in groups:
        if g in policy.group_map:
            hub.update(policy.group_map[g])
        elif policy.keep_unmapped:
            hub.add(g)
    roles = tuple(r.name for r in policy.roles if r.idp_groups & groups)
    is_admin = username in policy.admin_users or bool(groups & policy.admin_groups)
    admin = is_admin if policy.manages_admin else (True if is_admin else None)

    allowed = (
        policy.allow_all
        or is_admin
        or username in policy.allowed_users
        or bool(groups & policy.allowed_groups)
    )
    message = "" if allowed else refusal(policy, username, groups)
    return Access(username, tuple(sorted(groups)), tuple(sorted(hub)), roles, admin, allowed, message)


def refusal(policy: IdentityPolicy, username: str, groups: frozenset[str]) -> str:
    yours = ", ".join(sorted(groups)) if groups else "none"
    if policy.allowed_groups:
        who = f"members of {_or_list(policy.allowed_groups)}"
        which = "one of these groups" if len(policy.allowed_groups) > 1 else "this group"
        fix = f"Ask your lab's administrator to add you to {which}, then sign in again."
    else:
        who = "the people an administrator has listed"
        fix = "Ask your lab's administrator to give you access, then sign in again."
    return (
        f"You signed in as '{username}', but this hub is only for {who}. "
        f"Your groups: {yours}. {fix}"
    )
