"""System users for the local backend: one per hub user, created on first spawn (as TLJH does).

Hub user names are user input (sign-up forms, IdP claims): they never reach a shell, and the
system name is derived so that it is always a valid, unprivileged, prefixed account name. A hub
user called ``root`` becomes ``jupyter-root``, never ``root``.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import stat
import subprocess
import threading

_VALID = re.compile(r"^[a-z_][a-z0-9_-]*$")
MAX_LEN = 32  # useradd's limit on Linux
_lock = threading.Lock()


def system_username(hub_name: str, prefix: str = "jupyter-") -> str:
    """``Alice.Smith@uni`` -> ``jupyter-alice-smith-uni-1a2b3c``: lowercase, only [a-z0-9_-],
    with a short hash whenever characters were changed or the name was cut, so two hub users can
    never map to the same system user."""
    cleaned = re.sub(r"[^a-z0-9_-]", "-", hub_name.lower())
    name = prefix + cleaned
    if cleaned != hub_name or len(name) > MAX_LEN:
        digest = hashlib.sha256(hub_name.encode()).hexdigest()[:6]
        name = f"{name[: MAX_LEN - 7]}-{digest}"
    if not _VALID.match(name):  # pragma: no cover - prefix is validated by the config schema
        raise ValueError(f"cannot derive a valid system user name from {hub_name!r}")
    return name


def ensure_user(name: str, home_root: str) -> pwd.struct_passwd:
    """Create the system user (and a private home) if missing. Needs root."""
    if not _VALID.match(name) or len(name) > MAX_LEN:
        raise ValueError(f"invalid system user name {name!r}")
    with _lock:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
        home = os.path.join(home_root, name)
        subprocess.run(
            ["useradd", "--create-home", "--home-dir", home, "--shell", "/bin/bash",
             "--user-group", "--comment", "gpulab user", name],
            check=True, capture_output=True, text=True,
        )
        os.chmod(home, 0o700)  # users must not read each other's work
        return pwd.getpwnam(name)


def executable_by(path: str, uid: int, gids: set[int]) -> str | None:
    """Why ``uid`` cannot run ``path`` (None if it can): every directory on the way must be
    searchable and the file executable for that user. Plain mode bits, no ACLs."""
    path = os.path.realpath(path)
    parts = path.split(os.sep)
    for i in range(1, len(parts) + 1):
        p = os.sep.join(parts[:i]) or os.sep
        try:
            st = os.stat(p)
        except FileNotFoundError:
            return f"{p} does not exist"
        if st.st_uid == uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in gids:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
            return f"{kind} {p} (mode {stat.filemode(st.st_mode)}) is not accessible"
    return None


def groups_of(pw: pwd.struct_passwd) -> set[int]:
    return set(os.getgrouplist(pw.pw_name, pw.pw_gid))
