"""Creating people and adding them to groups through the hub's REST API, with the admin's own
token (the quotas service holds no such right itself: the hub checks the admin's).

``apply`` runs a :class:`~services.admin.members.Plan`: ``POST /users`` creates the accounts
that do not exist yet (people who have not signed in), a missing group is created, then
``POST /groups/{name}/users`` adds the members. JupyterHub only adds: nobody is removed.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from .core import AdminError
from .members import Plan


async def call(api_url: str, token: str, method: str, path: str, body=None) -> tuple[int, object]:
    req = HTTPRequest(api_url.rstrip("/") + path, method=method, headers={"Authorization": f"token {token}"},
                      body=None if body is None else json.dumps(body), allow_nonstandard_methods=True,
                      request_timeout=60)
    resp = await AsyncHTTPClient().fetch(req, raise_error=False)
    try:
        data = json.loads(resp.body) if resp.body else None
    except ValueError:
        data = resp.body.decode(errors="replace")[:300]
    return resp.code, data


def _why(code: int, data) -> str:
    message = data.get("message") if isinstance(data, dict) else str(data or "")
    if code == 400 and "Group management via API is disabled" in message:
        return ("groups come from your identity provider on this hub (auth.group_map in gpulab.yaml), "
                "not from this page")
    if code == 403:
        return "the hub refused: your sign-in does not allow managing users and groups (sign in again as an admin)"
    return f"the hub answered {code}: {message}"


async def apply(api_url: str, token: str, plan: Plan) -> dict:
    """Create who is missing, then add each group's members. Returns what was done and what not."""
    if not token:
        raise AdminError(403, "Sign in through the hub (or send an admin's API token) to manage people.")
    created: list[str] = []
    errors = list(plan.errors)
    if plan.users:
        code, data = await call(api_url, token, "POST", "/users", {"usernames": list(plan.users)})
        if code == 201:
            created = sorted(u["name"] for u in data)
        elif code != 409:  # 409: every one of them exists already
            raise AdminError(403 if code == 403 else 502, f"Could not create the accounts: {_why(code, data)}.")
    added: dict[str, list[str]] = {}
    for group, members in sorted(plan.groups.items()):
        path = f"/groups/{quote(group, safe='')}"
        code, data = await call(api_url, token, "GET", path)
        if code == 404:
            code, data = await call(api_url, token, "POST", path)
            if code != 201:
                errors.append(f"group {group}: could not create it: {_why(code, data)}")
                continue
        elif code != 200:
            errors.append(f"group {group}: {_why(code, data)}")
            continue
        code, data = await call(api_url, token, "POST", path + "/users", {"users": list(members)})
        if code == 200:
            added[group] = list(members)
        else:
            errors.append(f"group {group}: {_why(code, data)}")
    return {"created": created, "added": added, "errors": errors,
            "people": len(plan.users), "ok": not errors}


def status(result: dict) -> int:
    """200 when something was done (refused rows are listed beside it), 400 when nothing was."""
    return 200 if result["created"] or result["added"] or not result["errors"] else 400


def without_quota(result: dict, quota_groups) -> list[str]:
    """The groups people were added to that gpulab.yaml gives no quota (a new group, or a typo
    of a quota group's name): their members get the default quota."""
    return sorted(g for g in result["added"] if g not in set(quota_groups))


def summary(result: dict, quota_groups=None) -> str:
    """One sentence for the admin page (and a second where a group has no quota)."""
    parts = []
    if result["created"]:
        parts.append(f"Created {len(result['created'])} account{'s' if len(result['created']) != 1 else ''} "
                     f"({', '.join(result['created'][:10])}{', ...' if len(result['created']) > 10 else ''}); "
                     "they sign up (or sign in) with these names")
    for group, members in result["added"].items():
        parts.append(f"added {', '.join(members[:10])}{', ...' if len(members) > 10 else ''} to group {group}")
    if not parts:
        parts.append("Nothing changed")
    text = "; ".join(parts)
    text = text[0].upper() + text[1:] + "."
    bare = without_quota(result, quota_groups) if quota_groups is not None else []
    if bare:
        named = ", ".join(quota_groups) or "none"
        which = f"group {bare[0]} has" if len(bare) == 1 else f"groups {', '.join(bare)} have"
        whose = "its" if len(bare) == 1 else "their"
        text += (f" Note: {which} no quota in gpulab.yaml (quota groups: {named}), so {whose} people get the "
                 "default quota; check the name, or give it a quota under quotas.groups.")
    return text
