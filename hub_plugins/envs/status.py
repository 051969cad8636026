"""What the hub says about a profile's environment: the spawn form's line, the refusal at spawn
and, for admins, where it is, how big it is and why it failed.

``describe`` is pure (tested with tables); ``Environments`` (``c.Environments.*``) reads the
environments directory for the spawners, without ever waiting on a build.
"""

from __future__ import annotations

import os
import time

from traitlets import Bool, Unicode, default
from traitlets.config import SingletonConfigurable

from .manager import EnvDir, EnvState, default_dir, resolve_prefix


class Environments(SingletonConfigurable):
    """Where the profiles' environments are (``environments`` in gpulab.yaml)."""

    dir = Unicode(
        config=True,
        help="""Directory of the profiles' environments (``{envs}`` in a profile's local.prefix).
        Default: /opt/gpulab/envs when the hub runs as root, else ~/.local/share/gpulab/envs.""",
    )
    build_missing = Bool(
        True,
        config=True,
        help="""Whether the hub's 'envs' service builds missing environments in the background (the
        form says so meanwhile); False: an admin runs `make envs`.""",
    )

    @default("dir")
    def _default_dir(self):
        return default_dir(os.geteuid() == 0, os.path.expanduser("~"))

    def prefix(self, profile) -> str:
        return resolve_prefix(profile.local_prefix, self.dir)

    def state(self, profile) -> EnvState | None:
        """None: gpulab does not build this profile's environment (the hub's own, or one an
        admin installed at an explicit local.prefix)."""
        if profile.environment is None or not profile.local_prefix.startswith("{envs}"):
            return None
        return EnvDir(self.dir).read_state(profile.environment)


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def size_text(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.0f} MB"


def describe(st: EnvState | None, name: str, admin: bool, build_missing: bool, now: float | None = None) -> dict:
    """The environment's line in the form and at spawn (pure).

    Returns ``ok`` (may start), ``why`` (shown after "Unavailable:" and in a refusal),
    ``installing`` (a progress bar: percent and words, or None) and ``admin`` (a note only
    admins see: path, disk size, the error and its log)."""
    if st is None:
        return {"ok": True, "why": "", "installing": None, "admin": ""}
    now = time.time() if now is None else now
    out = {"ok": False, "why": "", "installing": None, "admin": ""}
    rebuild = f"`make envs PROFILES={name}`"
    if st.state == "ready":
        out.update(ok=True, admin=f"environment {st.path}: {size_text(st.size)} on disk")
    elif st.state == "building":
        steps = max(st.steps, 1)
        words = f"step {st.step} of {steps}: {st.what[:1].lower() + st.what[1:]}, {_duration(now - st.started)} so far"
        out.update(why=f"being installed ({words}); it can be chosen here as soon as it is ready",
                   installing={"percent": int(100 * max(st.step - 1, 0) / steps), "text": words},
                   admin=f"building {st.path}; log: {st.log}")
    elif st.state == "queued":
        out.update(why="waiting to be installed (another environment is being built first); "
                       "it can be chosen here as soon as it is ready",
                   installing={"percent": 0, "text": "waiting for another build to finish"})
    elif st.state == "failed":
        first = (st.error or "unknown error").strip().splitlines()[0].rstrip(":")
        if admin:
            out.update(why=f"its environment failed to build: {first}. The log is {st.log}; fix the "
                           f"cause, then run {rebuild} or restart the hub",
                       admin=st.error)
        else:
            out["why"] = "unavailable, the admins have been told"
    elif build_missing:  # missing, and the envs service will build it
        out.update(why="waiting to be installed (the hub builds it in the background)",
                   installing={"percent": 0, "text": "waiting to start"})
    elif admin:
        out["why"] = f"its environment is not installed ({st.path}): run {rebuild}"
    else:
        out["why"] = "its environment is not installed yet; an admin has to install it"
    if not admin:
        out["admin"] = ""
    return out
