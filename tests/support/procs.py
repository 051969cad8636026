"""What really runs, read from the processes themselves (``/proc/<pid>/environ``): a hub's
single-user servers (grouped by spawn id, with the devices they were given) and its services.
Tests compare this with what the hub and gpulab's tables say."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

from hub_plugins.lifeline import cmdline, is_lifeline


def environ(pid: int) -> dict[str, str] | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    if stat[stat.rindex(b")") + 2:].split()[0] in (b"Z", b"X"):
        return None  # a zombie runs nothing
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)


def parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def hub_processes(hub_port: int) -> dict[int, dict[str, str]]:
    """pid -> environment of every live process started for the hub whose API is on ``hub_port``."""
    marker = f"http://127.0.0.1:{hub_port}/hub/api"
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            env = environ(int(name))
            if env and env.get("JUPYTERHUB_API_URL") == marker:
                out[int(name)] = env
    return out


@dataclass
class LiveServer:
    spawn_id: str
    user: str
    server: str
    devices: tuple[str, ...]
    pids: list[int] = field(default_factory=list)


def live_servers(hub_port: int) -> dict[str, LiveServer]:
    """spawn id -> the live server (its lifeline, JupyterLab and any helpers count as one)."""
    out: dict[str, LiveServer] = {}
    for pid, env in hub_processes(hub_port).items():
        spawn = env.get("GPULAB_SPAWN_ID")
        if spawn is None or "JUPYTERHUB_SERVICE_NAME" in env:
            continue
        devices = tuple(d for d in env.get("GPULAB_GPUS", "").split(",") if d)
        s = out.setdefault(spawn, LiveServer(spawn, env.get("JUPYTERHUB_USER", ""),
                                             env.get("JUPYTERHUB_SERVER_NAME", ""), devices))
        s.pids.append(pid)
    return out


def devices_held_twice(servers: dict[str, LiveServer]) -> dict[str, list[str]]:
    """device -> the spawn ids of the live servers using it, where more than one does."""
    users: dict[str, list[str]] = {}
    for s in servers.values():
        for d in s.devices:
            users.setdefault(d, []).append(s.spawn_id)
    return {d: sorted(ids) for d, ids in users.items() if len(ids) > 1}


def service_processes(hub_port: int, commands: bool = False) -> Counter:
    """service name -> how many instances run (a service under its lifeline is one instance).
    ``commands``: only instances whose command runs, not a lifeline still waiting for a stale
    instance to go before it starts its command (``lifeline.replace_stale``)."""
    procs = {pid: env for pid, env in hub_processes(hub_port).items() if "JUPYTERHUB_SERVICE_NAME" in env}
    if commands:
        procs = {pid: env for pid, env in procs.items() if not is_lifeline(cmdline(pid))}
    count: Counter = Counter()
    for pid, env in procs.items():
        name = env["JUPYTERHUB_SERVICE_NAME"]
        p = procs.get(parent(pid))
        if p is None or p.get("JUPYTERHUB_SERVICE_NAME") != name:
            count[name] += 1  # the root of one instance
    return count
