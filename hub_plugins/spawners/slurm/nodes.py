"""SLURM nodes -> a gpulab :class:`Inventory` (pure).

Input: the records of ``scontrol show node -d -o`` (``Gres=gpu:a100:4(S:0-1)``,
``GresUsed=gpu:a100:2(IDX:0-1)``, ``State=MIXED+DRAIN``, ``Partitions=gpu,main``). Every GPU a
node offers becomes a non-addressable device (SLURM picks the physical GPU); GPUs allocated to
any job, ours or not, are ``external_busy``, so the form shows what is really free. Nodes that
cannot take new jobs (down, drained, failing, reserved, not responding) are left out, as a
cordoned Kubernetes node is.

GPU type names: a SLURM gres type (``a100``) is named by ``gres_types`` (``{a100: A100-80GB}``),
else used as it is; MIG gres types that end in a profile (``a100_1g.10gb``) become
``a100:1g.10gb``; untyped GPUs (``gpu:4``) are named ``untyped``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from ...gpu.devices import MIG_SLICES, Device, Inventory, family_of, mig_memory_mib, mig_slices, valid_type_name
from .keyvalue import split_top

UNUSABLE = {"DOWN", "DRAIN", "DRAINED", "DRAINING", "FAIL", "FAILING", "INVAL", "MAINT", "RESERVED",
            "FUTURE", "NOT_RESPONDING", "UNKNOWN", "REBOOT_ISSUED", "REBOOT_REQUESTED", "POWER_DOWN",
            "POWERING_DOWN"}
_GRES = re.compile(r"^(?P<name>[A-Za-z0-9_]+)(?::(?P<type>[A-Za-z0-9_.\-]+))?:(?P<count>\d+)(?:\((?P<extra>[^)]*)\))?$")
_MIG_SUFFIX = re.compile(r"^(?P<base>.+?)[_-](?P<mig>\d+g\.\d+gb)$", re.IGNORECASE)
_MEMORY = re.compile(r"-(\d+)GB$", re.IGNORECASE)


@dataclass(frozen=True)
class Gres:
    name: str  # "gpu"
    type: str  # "a100" or "" (untyped)
    count: int


def parse_gres(text: str, name: str = "gpu") -> list[Gres]:
    """'gpu:a100:4(S:0-1),gpu:2,shard:8' -> [Gres(gpu, a100, 4), Gres(gpu, '', 2)]."""
    out = []
    if not text or text in ("(null)", "N/A"):
        return out
    for item in split_top(text):
        m = _GRES.match(item)
        if not m or m.group("name") != name:
            continue
        out.append(Gres(name, m.group("type") or "", int(m.group("count"))))
    return out


def usable(state: str) -> bool:
    """'IDLE', 'MIXED', 'ALLOCATED' yes; 'IDLE+DRAIN', 'DOWN*', 'MIXED+MAINT' no."""
    if not state or state.endswith("*"):  # '*': not responding
        return False
    return not (set(state.upper().split("+")) & UNUSABLE)


def type_name(gres_type: str, gres_types: dict[str, str], untyped: str) -> str:
    """The gpulab type name of a SLURM gres type."""
    if gres_type in gres_types:
        return gres_types[gres_type]
    if not gres_type:
        return untyped
    m = _MIG_SUFFIX.match(gres_type)
    if m:
        return f"{m.group('base')}:{m.group('mig').lower()}"
    return gres_type


def _device_facts(gpu_type: str) -> tuple[Fraction, int, str]:
    """(weight, memory MiB, MIG profile) of a gpulab type name."""
    base, _, sub = gpu_type.partition(":")
    if sub and sub != "shared":
        slices = MIG_SLICES.get(family_of(base).upper(), 7)
        return Fraction(mig_slices(sub), slices), mig_memory_mib(sub), sub
    m = _MEMORY.search(base)
    return Fraction(1), int(m.group(1)) * 1024 if m else 0, ""


def inventory_from_nodes(records: list[dict[str, str]], *, partitions: set[str] | None = None,
                         gres_types: dict[str, str] | None = None, untyped: str = "GPU") -> Inventory:
    """The GPUs of the usable nodes in ``partitions`` (None: every partition)."""
    gres_types = gres_types or {}
    devices: list[Device] = []
    busy: set[str] = set()
    skipped: list[str] = []
    for rec in records:
        node = rec.get("NodeName", "")
        if not node:
            continue
        if partitions is not None:
            parts = set(filter(None, rec.get("Partitions", "").split(",")))
            if not parts & partitions:
                continue
        offered = parse_gres(rec.get("Gres", ""))
        if not offered:
            continue
        if not usable(rec.get("State", "")):
            skipped.append(f"{node} ({rec.get('State', '?')})")
            continue
        used = {g.type: g.count for g in parse_gres(rec.get("GresUsed", ""))}
        index = 0
        for g in offered:
            gpu_type = type_name(g.type, gres_types, untyped)
            if not valid_type_name(gpu_type):
                skipped.append(f"{node} gres type {g.type!r} (name it in slurm.gres_types)")
                continue
            weight, memory, mig = _device_facts(gpu_type)
            for i in range(g.count):
                key = f"slurm/{node}/{g.type or 'gpu'}/{i}"
                devices.append(Device(host=node, index=index, key=key, gpu_type=gpu_type, model=g.type,
                                      memory_mib=memory, weight=weight, mig_profile=mig, addressable=False))
                if i < used.get(g.type, 0):
                    busy.add(key)
                index += 1
    note = ""
    if not devices:
        note = "no usable SLURM node with GPUs" + (f" in partition {', '.join(sorted(partitions))}" if partitions else "")
    if skipped:
        note = (note + "; " if note else "") + "left out: " + ", ".join(skipped)
    return Inventory(tuple(devices), source="slurm", note=note, external_busy=frozenset(busy))



def gres_type_for(gpu_type: str, inv: Inventory, gres_types: dict[str, str], untyped: str) -> str:
    """The SLURM gres type to request for a gpulab type ('' = untyped ``gpu:N``): as the
    cluster's nodes name it, else by inverting ``gres_types`` (a simulated inventory)."""
    if inv.source == "slurm":
        for d in inv.of_type(gpu_type):
            return d.model
    for gres, name in gres_types.items():
        if name == gpu_type:
            return gres
    return "" if gpu_type == untyped else gpu_type
