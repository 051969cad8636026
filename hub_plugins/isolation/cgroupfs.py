"""The cgroup filesystem, v1 or v2, whichever the host has (the adapter for ``plan.py``).

Servers' cgroups are created under the hub's own cgroup (``<hub's cgroup>/gpulab/<server>``), so
that whatever holds the hub (a systemd unit, a container, a session's memory cap) holds its
servers too, and the hub's own limits stay in force. A server joins its cgroups between fork and
exec (``join`` runs in the child), before it drops root; it cannot leave them afterwards.

On cgroup v1 a server's CPU cgroup sits beside the hub's own processes (``<hub's cpu
cgroup>/<server>``), not in the parent: the scheduler weighs each cgroup like one task of its
level, so each server competes with the hub as its process would without cgroups (stock
JupyterHub), busy or idle. In one parent weighted for every server it holds (as before), the few
servers busy at a moment took the whole weight: each one woken preempted the hub, and at 50 stops
at once the hub waited in ``kill``.

The parsers of ``/proc/self/mountinfo`` and ``/proc/self/cgroup`` are pure and tested with
recorded files; the rest reads and writes under ``root``.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass, field

from .plan import CONTROLS, PREFIX, DeviceRule, Limits, group_weight, oom_kills, v1_writes, v2_writes

PARENT = "gpulab"  # the directory under the hub's cgroup that holds the servers'


def parse_mounts(mountinfo: str) -> dict[str, str]:
    """Controller -> mount point of the v1 hierarchies, and 'unified' -> the v2 mount."""
    out: dict[str, str] = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        point, fstype, superopts = fields[4], rfields[0], rfields[2]
        if fstype == "cgroup2":
            out.setdefault("unified", point)
        elif fstype == "cgroup":
            for opt in superopts.split(","):
                if opt in CONTROLS or opt in ("cpuacct", "pids"):
                    out.setdefault(opt, point)
    return out


def parse_self_cgroup(text: str) -> dict[str, str]:
    """Controller -> this process's cgroup path (v1 lines ``4:memory:/x``; v2 ``0::/x`` as 'unified')."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            out["unified"] = path
        for c in controllers.split(","):
            if c:
                out[c] = path
    return out


@dataclass
class CgroupFS:
    """Where the servers' cgroups live on this host, and what they can enforce."""

    version: int | None = None  # 1, 2 or None (no usable cgroups)
    bases: dict[str, str] = field(default_factory=dict)  # v1: controller -> dir; v2: 'unified' -> dir
    controls: frozenset[str] = frozenset()
    problem: str = ""  # why something cannot be enforced (said at start-up)
    cpu_beside_hub: bool = False  # v1: the servers' CPU cgroups sit beside the hub's processes

    # -- discovery -----------------------------------------------------------------------------
    @classmethod
    def discover(cls, proc: str = "/proc") -> CgroupFS:
        if os.geteuid() != 0:
            return cls(problem="the hub is not running as root, so it cannot create cgroups")
        try:
            mounts = parse_mounts(open(f"{proc}/self/mountinfo").read())
            mine = parse_self_cgroup(open(f"{proc}/self/cgroup").read())
        except OSError as e:
            return cls(problem=f"cannot read the cgroup mounts ({e})")
        v1 = {c: os.path.join(mounts[c], mine.get(c, "/").lstrip("/"), PARENT) for c in CONTROLS
              if c in mounts and c in mine}
        # the CPU cgroups beside the hub (see above); not where cpu shares a hierarchy with memory
        # or devices, whose cgroups stay under the parent: a process is in one cgroup a hierarchy
        beside = "cpu" in v1 and all(mounts[c] != mounts["cpu"] for c in v1 if c != "cpu")
        if beside:
            v1["cpu"] = os.path.dirname(v1["cpu"])
        if v1:
            fs = cls(1, v1, cpu_beside_hub=beside)
            fs.controls = frozenset(c for c in v1 if fs._writable(v1[c]))
            fs.reweigh()
            missing = sorted(set(CONTROLS) - fs.controls)
            if missing:
                fs.problem = f"cgroup v1 without a usable {', '.join(missing)} controller"
            return fs if fs.controls else cls(problem=fs.problem)
        if "unified" in mounts and "unified" in mine:
            return cls._discover_v2(os.path.join(mounts["unified"], mine["unified"].lstrip("/")))
        return cls(problem="this host mounts no cgroup controllers")

    @classmethod
    def _discover_v2(cls, hub_dir: str) -> CgroupFS:
        base = os.path.join(hub_dir, PARENT)
        fs = cls(2, {"unified": base})
        if not fs._writable(base):
            return cls(problem=f"cannot create cgroups under {hub_dir}")
        try:  # controllers must be handed down to the servers' cgroups
            available = set(open(os.path.join(base, "cgroup.controllers")).read().split())
            wanted = {"memory", "cpu"} & available
            if wanted:
                with open(os.path.join(base, "cgroup.subtree_control"), "w") as f:
                    f.write(" ".join(f"+{c}" for c in sorted(wanted)))
        except OSError as e:
            return cls(problem=f"cgroup v2: the hub's cgroup {hub_dir} does not delegate memory and cpu ({e}); "
                               "run the hub in a systemd unit")
        fs.controls = frozenset(wanted)
        fs.reweigh()
        fs.problem = "cgroup v2 without systemd: GPU devices are not restricted (v2 controls devices through systemd)"
        return fs

    @staticmethod
    def _writable(base: str) -> bool:
        probe = os.path.join(base, f"probe-{os.getpid()}")
        try:
            os.makedirs(probe, exist_ok=True)
            os.rmdir(probe)
            return True
        except OSError:
            return False

    def reweigh(self) -> None:
        """Give the servers' parent cgroup its CPU weight for the servers it holds now
        (``plan.group_weight``): at discovery and whenever a server comes or goes, where their
        CPU cgroups have one parent (v2, and v1 with cpu mounted with memory or devices). Two
        spawns at once may write a count one off; the next one corrects it."""
        base = self.bases.get("cpu" if self.version == 1 else "unified")
        if base is None or "cpu" not in self.controls or self.cpu_beside_hub:
            return
        try:
            servers = sum(1 for e in os.scandir(base) if e.is_dir(follow_symlinks=False))
            fname, value = group_weight(self.version, servers, os.cpu_count() or 1)
            _write(os.path.join(base, fname), value)
        except OSError:
            pass

    # -- one server ----------------------------------------------------------------------------
    def dirs(self, name: str) -> dict[str, str]:
        return {c: os.path.join(base, name) for c, base in self.bases.items() if c in self.controls or c == "unified"}

    def prepare(self, name: str, limits: Limits, rules: list[DeviceRule]) -> None:
        """Create the server's cgroups and write its limits (before it starts)."""
        dirs = self.dirs(name)
        for d in dirs.values():
            try:  # an empty one left by an earlier run: anew, so that its OOM count starts at 0
                os.rmdir(d)
            except OSError:
                pass
            os.makedirs(d, exist_ok=True)
        self.reweigh()
        if self.version == 1:
            swap = os.path.exists(os.path.join(dirs.get("memory", "/nonexistent"), "memory.memsw.limit_in_bytes"))
            for controller, fname, value in v1_writes(limits, rules, swap):
                _write(os.path.join(dirs[controller], fname), value)
        else:
            for fname, value in v2_writes(limits):
                _write(os.path.join(dirs["unified"], fname), value)

    def procs_files(self, name: str) -> list[str]:
        """The files a process writes its pid into to join the server's cgroups."""
        return [os.path.join(d, "cgroup.procs") for d in self.dirs(name).values()]

    def pids(self, name: str) -> list[int]:
        out: set[int] = set()
        for f in self.procs_files(name):
            try:
                out |= {int(p) for p in open(f).read().split()}
            except OSError:
                continue
        return sorted(out)

    def oom_kills(self, name: str) -> int:
        d = self.dirs(name).get("memory" if self.version == 1 else "unified")
        fname = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            return oom_kills(_read(os.path.join(d, fname))) if d else 0
        except OSError:
            return 0

    def remove_if_empty(self, name: str) -> bool:
        """Remove the server's cgroups if nothing is left in them, without waiting: whether they
        are all gone. The kernel refuses to remove one with a process in it (EBUSY), so trying is
        the test."""
        dirs = self._all_dirs(name)
        for d in dirs:
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError:
                return False
        self.reweigh()
        return True

    def names(self, suffix: str) -> set[str]:
        """The names of the servers' cgroups that end in ``suffix`` (one hub's tag), in every
        hierarchy: what a hub finds of its servers at start-up, whatever its database says."""
        bases = [b for c, b in self.bases.items() if c in self.controls or c == "unified"]
        if self.cpu_beside_hub:
            bases.append(os.path.join(self.bases["cpu"], PARENT))
        found: set[str] = set()
        for base in bases:
            try:
                with os.scandir(base) as entries:
                    found |= {e.name for e in entries if e.name.startswith(PREFIX) and e.name.endswith(suffix)
                              and e.is_dir(follow_symlinks=False)}
            except OSError:
                continue
        return found

    def _all_dirs(self, name: str) -> list[str]:
        dirs = list(self.dirs(name).values())
        if self.cpu_beside_hub:  # where a hub before that layout put it: a server it started
            dirs.append(os.path.join(self.bases["cpu"], PARENT, name))
        return dirs

    def remove(self, name: str, timeout: float = 5.0) -> list[int]:
        """Stop what is left of the server (its processes that outlived it) and remove its
        cgroups. Returns the pids it had to kill."""
        killed = self.pids(name)
        for pid in killed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for d in self._all_dirs(name):
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:  # EBUSY while the killed processes exit
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
        self.reweigh()
        return killed


def _read(path: str) -> str:
    """A small control file, without a Python file object: read on the hub's loop at every
    stop (``remove_if_empty``'s caller), where open() cost 3x the system calls."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536).decode()
    finally:
        os.close(fd)


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
