"""What a local server is held to, and how the kernel is told (pure: tested with tables).

A server's limits are its profile's CPU and memory capped by its user's quota, and the GPU device
nodes of its allocation. They become, depending on what the host offers:

- cgroup v1 files (``memory.limit_in_bytes``, ``cpu.cfs_quota_us``, ``devices.allow``);
- cgroup v2 files (``memory.max``, ``cpu.max``; v2 has no device files: devices need systemd);
- properties of a transient systemd scope (``MemoryMax=``, ``CPUQuota=``, ``DeviceAllow=``).

Devices are an allow-list, the way Docker and systemd's ``DevicePolicy=closed`` do it: the few
pseudo-devices every program needs, terminals, the NVIDIA control nodes, and the server's own
GPUs. Any other device, including every other GPU (and one added to the host later), is refused
by the kernel when the server opens it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

CPU_PERIOD_US = 100_000  # the CFS period the quota is a share of (the kernel's default)
NVIDIA_MAJOR = 195  # /dev/nvidia<N> is 195:<N>, /dev/nvidiactl 195:255, /dev/nvidia-modeset 195:254
CONTROLS = ("memory", "cpu", "devices")


@dataclass(frozen=True)
class DeviceRule:
    """One allowed device: ``kind`` 'c' (character) or 'b' (block); ``minor`` None = every minor."""

    kind: str
    major: int
    minor: int | None
    access: str = "rwm"
    path: str = ""  # the node systemd names it by (DeviceAllow= takes paths or 'char-<group>')

    def v1(self) -> str:
        """The line ``devices.allow`` takes: ``c 195:1 rwm``."""
        return f"{self.kind} {self.major}:{'*' if self.minor is None else self.minor} {self.access}"


# What any program needs (the set Docker allows a container, without mknod): /dev/null, zero,
# full, random, urandom, tty, console, ptmx, and the pseudo-terminals (Jupyter's terminals).
BASE_DEVICES = (
    DeviceRule("c", 1, 3, "rwm", "/dev/null"),
    DeviceRule("c", 1, 5, "rwm", "/dev/zero"),
    DeviceRule("c", 1, 7, "rwm", "/dev/full"),
    DeviceRule("c", 1, 8, "rwm", "/dev/random"),
    DeviceRule("c", 1, 9, "rwm", "/dev/urandom"),
    DeviceRule("c", 5, 0, "rwm", "/dev/tty"),
    DeviceRule("c", 5, 1, "rwm", "/dev/console"),
    DeviceRule("c", 5, 2, "rwm", "/dev/ptmx"),
    DeviceRule("c", 136, None, "rwm", "char-pts"),
)


@dataclass(frozen=True)
class Limits:
    """What one server is held to. None: not limited. ``gpus``: the (major, minor) of each GPU
    node it may open; None when devices are not controlled at all."""

    mem_bytes: int | None = None
    cpus: float | None = None
    gpus: tuple[tuple[int, int], ...] | None = None
    gpu_paths: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = []
        if self.cpus is not None:
            parts.append(f"{self.cpus:g} CPU{'s' if self.cpus != 1 else ''}")
        if self.mem_bytes is not None:
            parts.append(f"{human_bytes(self.mem_bytes)} memory")
        if self.gpus is not None:
            parts.append(f"GPU devices {', '.join(self.gpu_paths)}" if self.gpu_paths else "no GPU devices")
        return ", ".join(parts) or "no limits"


def human_bytes(n: int) -> str:
    for unit, size in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return f"{n} B"


def cap(profile_value, quota_value):
    """A profile's limit capped by the user's quota (None: no limit)."""
    values = [v for v in (profile_value, quota_value) if v is not None]
    return min(values) if values else None


@dataclass(frozen=True)
class Node:
    """A GPU's device node as the host has it: its path and (major, minor), or None if missing."""

    path: str
    number: tuple[int, int] | None


def limits_for(profile_cpu, profile_mem, quota_cpu, quota_mem, gpu_nodes: list[Node] | None,
               controls: frozenset[str]) -> Limits:
    """The limits of one server, keeping only what the host can enforce (``controls``, a subset
    of CONTROLS). ``gpu_nodes``: the nodes of its allocated GPUs (None: the backend does not
    place devices, e.g. no inventory)."""
    mem = cap(profile_mem, quota_mem) if "memory" in controls else None
    cpus = cap(profile_cpu, quota_cpu) if "cpu" in controls else None
    gpus = paths = None
    if "devices" in controls and gpu_nodes is not None:
        present = [n for n in gpu_nodes if n.number is not None]
        gpus = tuple(sorted({n.number for n in present}))
        paths = tuple(sorted({n.path for n in present}))
    return Limits(mem_bytes=int(mem) if mem is not None else None, cpus=float(cpus) if cpus is not None else None,
                  gpus=gpus, gpu_paths=paths or ())


def gpu_node_paths(indices, device_dir: str = "/dev") -> list[str]:
    """The device node of each GPU index (MIG slices and shares: their parent GPU's node)."""
    return [f"{device_dir.rstrip('/')}/nvidia{i}" for i in sorted(set(indices))]


def device_rules(limits: Limits, extra: tuple[DeviceRule, ...] = ()) -> list[DeviceRule]:
    """The allow-list for a server: base devices, the NVIDIA control nodes (``extra``: e.g.
    nvidia-uvm, whose major the driver picks at load time) and its own GPUs."""
    rules = list(BASE_DEVICES)
    if limits.gpus:  # CUDA needs the control nodes once it may use a GPU
        rules += [DeviceRule("c", NVIDIA_MAJOR, 255, "rw", "/dev/nvidiactl"),
                  DeviceRule("c", NVIDIA_MAJOR, 254, "rw", "/dev/nvidia-modeset"), *extra]
    for (major, minor), path in zip(limits.gpus or (), limits.gpu_paths):
        rules.append(DeviceRule("c", major, minor, "rw", path))
    return rules


def v1_writes(limits: Limits, rules: list[DeviceRule], swap_accounting: bool) -> list[tuple[str, str, str]]:
    """(controller, file, value) to write, in order, into a server's v1 cgroups."""
    out: list[tuple[str, str, str]] = []
    if limits.mem_bytes is not None:
        out.append(("memory", "memory.limit_in_bytes", str(limits.mem_bytes)))
        if swap_accounting:  # memory + swap at the same limit: no swapping past it
            out.append(("memory", "memory.memsw.limit_in_bytes", str(limits.mem_bytes)))
    if limits.cpus is not None:
        out.append(("cpu", "cpu.cfs_period_us", str(CPU_PERIOD_US)))
        out.append(("cpu", "cpu.cfs_quota_us", str(max(1000, round(limits.cpus * CPU_PERIOD_US)))))
    if limits.gpus is not None:
        out.append(("devices", "devices.deny", "a"))  # deny all, then allow the list
        out += [("devices", "devices.allow", r.v1()) for r in rules]
    return out


def v2_writes(limits: Limits) -> list[tuple[str, str]]:
    """(file, value) for a server's v2 cgroup (devices are not files in v2)."""
    out = []
    if limits.mem_bytes is not None:
        out += [("memory.max", str(limits.mem_bytes)), ("memory.swap.max", "0")]
    if limits.cpus is not None:
        out.append(("cpu.max", f"{max(1000, round(limits.cpus * CPU_PERIOD_US))} {CPU_PERIOD_US}"))
    return out


def group_weight(version: int, servers: int, cpus: int) -> tuple[str, str]:
    """(file, value) of the CPU weight of the cgroup that holds every server, where one does (v2
    without systemd; v1 puts each server's CPU cgroup beside the hub: ``cgroupfs.py``). CFS weighs
    a cgroup like one task of the level it sits in: the servers together weigh like as many tasks
    as there are servers (what they would weigh without cgroups, as under stock JupyterHub, when
    all are busy), and at least like the host's CPUs, so that a few busy processes outside never
    starve all of them."""
    tasks = max(servers, cpus, 1)
    if version == 1:
        return "cpu.shares", str(min(1024 * tasks, 262144))  # the kernel's maximum
    return "cpu.weight", str(min(100 * tasks, 10000))


def systemd_properties(limits: Limits, rules: list[DeviceRule]) -> list[str]:
    """``--property`` values of the server's transient scope."""
    out = []
    if limits.mem_bytes is not None:
        out += [f"MemoryMax={limits.mem_bytes}", "MemorySwapMax=0"]
    if limits.cpus is not None:
        out.append(f"CPUQuota={round(limits.cpus * 100)}%")
    if limits.gpus is not None:
        out.append("DevicePolicy=closed")
        out += [f"DeviceAllow={r.path} {r.access.replace('m', '') or 'r'}" for r in rules if r.path]
    return out


_UNSAFE = re.compile(r"[^a-z0-9_-]")
PREFIX = "gpulab-"  # every server's cgroup / unit name starts so (a hub's sweep looks for it)


def cgroup_name(user: str, server: str = "") -> str:
    """A server's cgroup / unit name: readable, [a-z0-9_-] only, unique per (user, server)
    through a hash of both (two names that clean to the same text stay apart)."""
    digest = hashlib.sha256(f"{user}\0{server}".encode()).hexdigest()[:8]
    readable = _UNSAFE.sub("-", user.lower())[:40]
    if server:
        readable += "--" + _UNSAFE.sub("-", server.lower())[:40]
    return f"{PREFIX}{readable}-{digest}"


def oom_kills(text: str) -> int:
    """The ``oom_kill`` count of a v1 ``memory.oom_control`` or a v2 ``memory.events`` file."""
    m = re.search(r"^oom_kill (\d+)$", text, re.M)
    return int(m.group(1)) if m else 0


def oom_message(limits: Limits | None) -> str:
    mem = f"its memory limit of {human_bytes(limits.mem_bytes)}" if limits and limits.mem_bytes else "its memory limit"
    return (f"The kernel stopped a process of this server: it used more than {mem}. "
            "Use less memory, or choose a profile with more.")


def char_majors(proc_devices: str) -> dict[str, int]:
    """Driver name -> character major, from ``/proc/devices``."""
    out: dict[str, int] = {}
    section = ""
    for line in proc_devices.splitlines():
        if line.endswith("devices:"):
            section = line
            continue
        parts = line.split()
        if section.startswith("Character") and len(parts) == 2 and parts[0].isdigit():
            out.setdefault(parts[1], int(parts[0]))
    return out


def nvidia_extra_rules(majors: dict[str, int]) -> tuple[DeviceRule, ...]:
    """Unified memory (CUDA needs it) and the MIG capability nodes, whose majors the driver picks."""
    out = []
    if "nvidia-uvm" in majors:
        out.append(DeviceRule("c", majors["nvidia-uvm"], None, "rw", "char-nvidia-uvm"))
    if "nvidia-caps" in majors:
        out.append(DeviceRule("c", majors["nvidia-caps"], None, "r", "char-nvidia-caps"))
    return tuple(out)
