"""Who stopped a server, where the hub lets us know (the decision is pure; the note is a
context variable).

A spawner's ``stop()`` is not told who asked. JupyterHub's request handlers know (the person or
service behind the request), and JupyterHub hands its handler to the authenticator right before
every stop it performs on request: ``Authenticator.refresh_user(user, handler)``, called because
gpulab sets ``refresh_pre_stop``. gpulab's authenticators note the requester there
(:func:`note`), in a context variable of the request's task; JupyterHub runs the stop in a task
started from that request, so the spawner's ``stop()`` reads the same note (:func:`requester`).

What cannot be told this way: a server that exits by itself (JupyterLab's File > Shut Down, a
crash, the node going away) is found by polling, with no request behind it, and is recorded as
'crashed' (or 'failed' if it never came up); a stop while ``auth_refresh_age`` is 0 (JupyterHub
then skips the refresh) or with another authenticator class is recorded as the user's.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Requester:
    kind: str  # user | service
    name: str
    admin: bool
    target: str  # the user whose server the request acts on

    @property
    def label(self) -> str:
        return f"{'admin' if self.admin else self.kind}:{self.name}"


_REQUESTER: ContextVar[Requester | None] = ContextVar("gpulab_stop_requester", default=None)


def note(user_name: str, handler) -> None:
    """Remember who makes the current request (called from ``refresh_user``)."""
    who = getattr(handler, "current_user", None) if handler is not None else None
    if who is None:
        return
    kind = getattr(who, "kind", "user")
    admin = kind == "user" and bool(getattr(who, "admin", False))
    _REQUESTER.set(Requester(kind, who.name, admin, user_name))


def requester(owner: str) -> Requester | None:
    """Who asked to stop ``owner``'s server in the current request, if the hub said."""
    r = _REQUESTER.get()
    return r if r is not None and r.target == owner else None


def cause(r: Requester | None, owner: str, cullers=()) -> tuple[str, str]:
    """(stop reason, stopped by) for a stop someone asked for. Reasons: 'user' (the owner, or
    nobody the hub named), 'admin' (a hub admin), 'other_user' (someone granted the right to stop
    it), 'culled' (a service named in ``culler.external_cullers``), 'service' (any other
    service)."""
    if r is None:
        return "user", ""
    if r.kind == "service":
        return ("culled" if r.name in cullers else "service"), f"service:{r.name}"
    if r.name == owner:
        return "user", f"user:{r.name}"
    return ("admin" if r.admin else "other_user"), r.label
