"""Who on a shared GPU is using it: NVML's per-process readings attributed to the servers
holding its shares (pure; ``procs.py`` says which server a process belongs to, ``metrics.py``
reads NVML).

A GPU's utilisation says nothing about which of its sharers is busy, so one busy sharer would
keep every idle neighbour alive. Instead each sharer is measured by its own processes:

- a sharer with no process on the GPU (no CUDA context) is idle: 0 %;
- otherwise its processes' SM utilisation (NVML's per-process samples over the round), as a
  percent of the part of the GPU it holds (a quarter share busy on a quarter of the SMs is 100 %),
  at most 100;
- when some utilisation on the GPU belongs to no sharer's process while this sharer's processes
  show none (NVML attributes MPS clients' work to the MPS server; or a program outside gpulab),
  it cannot be told apart: unknown, never "idle";
- when NVML has no per-process samples at all, only a GPU at 0 % tells: everyone idle.

Memory is the sharer's processes' own; power (for energy) is the GPU's, split by the part held.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from .devices import Device


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    memory_mib: float | None = None  # None: NVML cannot say (e.g. without permission)
    sm_util: float | None = None  # mean SM utilisation over the round; None: no sample


@dataclass(frozen=True)
class GpuReading:
    """One physical GPU in one round."""

    util: float | None  # the whole GPU, percent
    power_w: float | None
    processes: tuple[GpuProcess, ...] = ()  # with a context on it, and any that had samples
    samples: bool = True  # NVML gave per-process utilisation (False: not supported)


@dataclass(frozen=True)
class Share:
    """What a sharer's devices on one GPU get this round."""

    util: float | None
    memory_used_mib: float
    power_w: float | None


def attribute(reading: GpuReading, owner: Mapping[int, str], held: Mapping[str, Fraction]) -> dict[str, Share]:
    """``owner``: pid -> spawn id (processes of no server are absent); ``held``: spawn id -> the
    part of this GPU it holds. Returns spawn id -> its :class:`Share` of the reading."""
    mine: dict[str, list[GpuProcess]] = defaultdict(list)
    unowned_util = 0.0
    for p in reading.processes:
        s = owner.get(p.pid)
        if s in held:
            mine[s].append(p)
        elif p.sm_util:
            unowned_util += p.sm_util
    out = {}
    for spawn, part in held.items():
        procs = mine.get(spawn, [])
        memory = sum(p.memory_mib or 0.0 for p in procs)
        power = reading.power_w * float(part) if reading.power_w is not None else None
        out[spawn] = Share(_util(reading, procs, part, unowned_util), memory, power)
    return out


def _util(reading: GpuReading, procs: list[GpuProcess], part: Fraction, unowned_util: float) -> float | None:
    if not procs:
        return 0.0
    if reading.util == 0:
        return 0.0  # the whole GPU did nothing
    if not reading.samples:
        return None
    busy = sum(p.sm_util or 0.0 for p in procs)
    if busy == 0 and unowned_util > 0:
        return None  # work this sharer may be doing shows under another process (MPS)
    return min(100.0, busy / float(part)) if part else None


def holders_by_gpu(devices: list[Device], holder: Mapping[str, str]) -> dict[tuple[str, int], dict[str, Fraction]]:
    """(host, GPU index) -> spawn id -> the part of that GPU it holds, for the shared devices
    among ``devices`` (``holder``: device key -> spawn id)."""
    out: dict[tuple[str, int], dict[str, Fraction]] = defaultdict(dict)
    for d in devices:
        s = holder.get(d.key)
        if d.kind == "shared" and s:
            gpu = out[(d.host, d.index)]
            gpu[s] = gpu.get(s, Fraction(0)) + d.weight
    return dict(out)
