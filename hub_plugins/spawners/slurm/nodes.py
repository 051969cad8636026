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

Shared GPUs: a node's ``gres/shard`` (``Gres=gpu:a100:4,shard:a100:16``, SLURM's GPU sharing)
becomes shares of type ``<type>:shared``, each weighing 1/(shards per GPU). SLURM gives a GPU
either whole or in shards, never both at once, so GPUs with shards in use (``GresUsed``'s shard
``IDX``) are busy as whole GPUs. ``GresUsed`` counts GPUs for shards, not shards (SLURM 22.05), so
the shards in use come from the running jobs' requests (``squeue``, :func:`shards_by_node`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
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
    name: str  # "gpu" or "shard"
    type: str  # "a100" or "" (untyped)
    count: int
    idx: frozenset[int] = field(default=frozenset(), compare=False)  # GresUsed's (IDX:...) GPUs


def _indices(extra: str) -> frozenset[int]:
    """'IDX:0-2,5' -> {0, 1, 2, 5}; anything else (S:0-1, IDX:N/A) -> {}."""
    if not extra or not extra.startswith("IDX:"):
        return frozenset()
    out: set[int] = set()
    for part in extra[4:].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            out.update(range(int(lo), int(hi or lo) + 1))
    return frozenset(out)


def parse_gres(text: str, name: str = "gpu") -> list[Gres]:
    """'gpu:a100:4(S:0-1),gpu:2,shard:8' -> [Gres(gpu, a100, 4), Gres(gpu, '', 2)]."""
    out = []
    if not text or text in ("(null)", "N/A"):
        return out
    for item in split_top(text):
        m = _GRES.match(item)
        if not m or m.group("name") != name:
            continue
        out.append(Gres(name, m.group("type") or "", int(m.group("count")), _indices(m.group("extra") or "")))
    return out


def shards_by_node(lines) -> dict[str, int]:
    """Shards held per node, from ``squeue -o '%N|%b'`` lines of running jobs
    ('vm|gres:shard:a100:3' -> {'vm': 3}); multi-node node lists are skipped."""
    out: dict[str, int] = {}
    for line in lines:
        node, _, tres = line.strip().partition("|")
        if not node or any(c in node for c in "[],"):
            continue
        for item in tres.split(","):
            g = parse_gres(item.strip().removeprefix("gres:"), "shard")
            if g:
                out[node] = out.get(node, 0) + g[0].count
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
                         gres_types: dict[str, str] | None = None, untyped: str = "GPU",
                         shards_in_use: dict[str, int] | None = None) -> Inventory:
    """The GPUs (and GPU shards) of the usable nodes in ``partitions`` (None: every partition);
    ``shards_in_use``: node -> shards held by running jobs (:func:`shards_by_node`)."""
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
        whole = dict(used)  # GPUs used whole: none of their shards is free
        for g in parse_gres(rec.get("GresUsed", ""), "shard"):  # GPUs lent out in shards
            used[g.type] = used.get(g.type, 0) + len(g.idx)
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
        index = _shards(node, rec, offered, whole, gres_types, untyped, (shards_in_use or {}).get(node, 0),
                        devices, busy, skipped, index)
    note = ""
    if not devices:
        note = "no usable SLURM node with GPUs" + (f" in partition {', '.join(sorted(partitions))}" if partitions else "")
    if skipped:
        note = (note + "; " if note else "") + "left out: " + ", ".join(skipped)
    return Inventory(tuple(devices), source="slurm", note=note, external_busy=frozenset(busy))



def _shards(node, rec, offered, whole, gres_types, untyped, in_use, devices, busy, skipped, index) -> int:
    """The node's gres/shard as shares of its GPUs (appended to ``devices``); the next index.
    Busy: the shards jobs hold, and every shard of a GPU used whole."""
    gpus: dict[str, int] = {}
    for g in offered:
        gpus[g.type] = gpus.get(g.type, 0) + g.count
    for s in parse_gres(rec.get("Gres", ""), "shard"):
        stype = s.type or (next(iter(gpus)) if len(gpus) == 1 else "")
        n_gpus = gpus.get(stype, 0)
        if not n_gpus or s.count % n_gpus or s.count // n_gpus < 2:
            skipped.append(f"{node} shard:{s.type or '?'}:{s.count} (gpulab needs the same number of shards, "
                           "at least 2, on every GPU of a type)")
            continue
        per = s.count // n_gpus
        gpu_type = f"{type_name(stype, gres_types, untyped)}:shared"
        if not valid_type_name(gpu_type):
            skipped.append(f"{node} shard type {stype!r} (name it in slurm.gres_types)")
            continue
        _, memory, _ = _device_facts(type_name(stype, gres_types, untyped))
        held = min(s.count, in_use + per * whole.get(stype, 0))
        for i in range(s.count):
            key = f"slurm/{node}/shard/{stype or 'gpu'}/{i}"
            devices.append(Device(host=node, index=index, key=key, gpu_type=gpu_type, model=stype,
                                  memory_mib=memory // per, weight=Fraction(1, per), addressable=False))
            if i < held:
                busy.add(key)
            index += 1
        in_use = max(0, in_use - s.count)
    return index


def gres_type_for(gpu_type: str, inv: Inventory, gres_types: dict[str, str], untyped: str) -> str:
    """The SLURM gres type to request for a gpulab type ('' = untyped ``gpu:N``): as the
    cluster's nodes name it, else by inverting ``gres_types`` (a simulated inventory)."""
    if inv.source == "slurm":
        for d in inv.of_type(gpu_type):
            return d.model
    if gpu_type.endswith(":shared"):  # shards are typed as their GPUs are
        gpu_type = gpu_type.removesuffix(":shared")
    for gres, name in gres_types.items():
        if name == gpu_type:
            return gres
    return "" if gpu_type == untyped else gpu_type
