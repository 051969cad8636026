"""Servers as transient systemd scopes (on hosts that run systemd): the adapter for ``plan.py``.

As jupyterhub-systemdspawner does with transient services, systemd holds each server to its
limits (``MemoryMax=``, ``CPUQuota=``, ``DevicePolicy=closed`` + ``DeviceAllow=``, on cgroup v1 or
v2 alike). A *scope* rather than a service keeps what the local backend relies on: the command is
executed by ``systemd-run`` itself, so the process JupyterHub started is the server (same pid,
environment and working directory), and ``--uid``/``--gid`` drop root inside the scope.
"""

from __future__ import annotations

import os
import shutil
import subprocess

SYSTEMD_RUN = "systemd-run"


def booted(run_dir: str = "/run/systemd/system") -> bool:
    """systemd is the init system (sd_booted(3)), and systemd-run is here."""
    return os.path.isdir(run_dir) and shutil.which(SYSTEMD_RUN) is not None


def unit(name: str) -> str:
    return f"{name}.scope"


def run_argv(name: str, properties: list[str], cmd: list[str], uid: int | None = None,
             gid: int | None = None, slice_: str | None = None) -> list[str]:
    """The command line that runs ``cmd`` in the server's scope (pure)."""
    argv = [SYSTEMD_RUN, "--scope", "--quiet", f"--unit={unit(name)}"]
    if slice_:
        argv.append(f"--slice={slice_}")
    argv += [f"--property={p}" for p in properties]
    if uid is not None:
        argv.append(f"--uid={uid}")
    if gid is not None:
        argv.append(f"--gid={gid}")
    return [*argv, "--", *cmd]


def _systemctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=30)


def result(name: str) -> str:
    """How the scope ended: 'success', 'oom-kill', ... ('' if systemd does not know it)."""
    try:
        out = _systemctl("show", "--property=Result", "--value", unit(name))
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def remove(name: str) -> None:
    """Stop what is left in the scope and forget a failed one (so the name can be used again)."""
    for args in (("stop", unit(name)), ("reset-failed", unit(name))):
        try:
            _systemctl(*args)
        except (OSError, subprocess.SubprocessError):
            pass
