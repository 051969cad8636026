"""Local servers held to their limits by the kernel: memory, CPU and GPU devices per server.

``plan.py`` decides (pure); ``systemd.py`` (transient scopes, on systemd hosts) and
``cgroupfs.py`` (the cgroup filesystem, v1 or v2) apply. :class:`Enforcer` picks what the host
offers, once, and is what the local spawner talks to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import systemd
from ..lifeline import join_cgroups
from .cgroupfs import CgroupFS
from .plan import (
    CONTROLS, Limits, Node, char_majors, device_rules, gpu_node_paths, limits_for, nvidia_extra_rules, oom_message,
    systemd_properties,
)

MODES = ("auto", "systemd", "cgroup", "off")


@dataclass
class Enforcer:
    kind: str  # "systemd", "cgroup v1", "cgroup v2" or "none"
    controls: frozenset[str] = frozenset()
    problem: str = ""
    fs: CgroupFS | None = None
    device_dir: str = "/dev"
    extra_rules: tuple = field(default_factory=tuple)

    @classmethod
    def detect(cls, mode: str = "auto", device_dir: str = "/dev") -> Enforcer:
        """What this host can enforce. ``mode``: auto (systemd if it runs the host, else the
        cgroup filesystem), systemd, cgroup, or off."""
        try:
            majors = char_majors(open("/proc/devices").read())
        except OSError:
            majors = {}
        extra = nvidia_extra_rules(majors)
        if mode == "off":
            return cls("none", problem="local.limits is off", device_dir=device_dir)
        if mode in ("auto", "systemd") and os.geteuid() == 0 and systemd.booted():
            return cls("systemd", frozenset(CONTROLS), device_dir=device_dir, extra_rules=extra)
        if mode == "systemd":
            return cls("none", problem="local.limits is systemd, but systemd does not run this host (or the "
                                       "hub is not root)", device_dir=device_dir)
        fs = CgroupFS.discover()
        if fs.version is None:
            return cls("none", problem=fs.problem, device_dir=device_dir)
        return cls(f"cgroup v{fs.version}", fs.controls, fs.problem, fs, device_dir, extra)

    def summary(self) -> str:
        """The line the hub logs at start-up."""
        names = {"memory": "memory", "cpu": "CPU", "devices": "GPU devices"}
        held = [names[c] for c in CONTROLS if c in self.controls]
        if not held:
            return (f"gpulab: local servers are NOT held to any limit: {self.problem}. Memory and CPU limits "
                    "are not enforced and every server can open every GPU; the spawn form shows no limits.")
        missing = [names[c] for c in CONTROLS if c not in self.controls]
        line = f"gpulab: local servers are held to their {', '.join(held)} limits ({self.kind})"
        return line + (f"; NOT to their {', '.join(missing)} limits: {self.problem}" if missing else "")

    # -- per server ----------------------------------------------------------------------------
    def limits(self, profile, quota_limits, gpu_indices: list[int] | None) -> Limits:
        nodes = None
        if gpu_indices is not None:
            nodes = [Node(p, _number(p)) for p in gpu_node_paths(gpu_indices, self.device_dir)]
        return limits_for(profile.cpu_limit, profile.mem_limit, quota_limits.cpu_limit, quota_limits.mem_limit,
                          nodes, self.controls)

    def prepare(self, name: str, limits: Limits) -> None:
        if self.fs is not None:
            self.fs.prepare(name, limits, device_rules(limits, self.extra_rules))
        elif self.kind == "systemd":
            systemd.remove(name)  # a failed scope of an earlier run would hold the name

    def wrap(self, cmd: list[str], name: str, limits: Limits, uid: int | None, gid: int | None) -> list[str]:
        """The command that starts the server (systemd: inside its scope)."""
        if self.kind != "systemd":
            return cmd
        props = systemd_properties(limits, device_rules(limits, self.extra_rules))
        return systemd.run_argv(name, props, cmd, uid, gid)

    def joiner(self, name: str):
        """What the child runs before exec to enter its cgroups (None: nothing to join)."""
        if self.fs is None:
            return None
        files = self.fs.procs_files(name)
        return lambda: join_cgroups(files)

    def procs_files(self, name: str) -> list[str]:
        """The files a server's first process writes its pid into (lifeline ``--join``)."""
        return self.fs.procs_files(name) if self.fs is not None else []

    def emptied(self, name: str) -> bool:
        """Whether the server's cgroups are gone (``cleanup`` removes them once empty): then
        nothing of a server that ran in them runs anywhere, known without a look through /proc."""
        return self.fs is not None and not any(os.path.isdir(d) for d in self.fs.dirs(name).values())

    def killed_for_memory(self, name: str) -> bool:
        if self.fs is not None:
            return self.fs.oom_kills(name) > 0
        if self.kind == "systemd":
            return systemd.result(name) == "oom-kill"
        return False

    def removed_if_empty(self, name: str) -> bool:
        """Whether the server's cgroups are gone, removed now if they were empty and the kernel
        never stopped it for its memory (which the caller then records, in a worker thread): a
        few syscalls, no waiting, fit for the hub's loop. False: ``cleanup`` does the rest."""
        return self.fs is not None and not self.fs.oom_kills(name) and self.fs.remove_if_empty(name)

    def sweep(self, suffix: str) -> int:
        """Remove the empty cgroups of one hub's servers (names ending in ``suffix``, its tag)
        and return how many went: what a hub killed mid-start left (prepared for a server whose
        process never started, or of a server the restarted hub's reconcile stopped as an
        orphan). Only while none of that hub's spawns can be between preparing its cgroups and
        joining them: at start-up, before the gate opens. Those of a server the kernel stopped
        for its memory stay for its stop to read (``removed_if_empty``); a spawn of that name
        recreates them."""
        if self.fs is None:  # systemd removes a scope once its processes are gone
            return 0
        return sum(1 for name in sorted(self.fs.names(suffix)) if self.removed_if_empty(name))

    def cleanup(self, name: str) -> list[int]:
        if self.fs is not None:
            return self.fs.remove(name)
        if self.kind == "systemd":
            systemd.remove(name)
        return []


def _number(path: str) -> tuple[int, int] | None:
    import stat

    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.major(st.st_rdev), os.minor(st.st_rdev)) if stat.S_ISCHR(st.st_mode) else None


__all__ = ["Enforcer", "Limits", "MODES", "oom_message"]
