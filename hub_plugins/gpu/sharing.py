"""Shared GPUs: which GPUs are split into shares, the shares themselves, and what one share
promises (pure).

A *shared* GPU is offered as N devices of type ``<type>:shared``, each weighing 1/N GPU in
quotas, prices and availability and promising 1/N of the GPU's memory; the servers holding them
run on the same physical GPU (time-sliced, or under MPS where a backend offers it). Both ways of
describing GPUs go through :func:`share_gpu`: a simulated inventory's ``+shared(N)``, and the
``gpus.sharing`` rules gpulab.yaml applies to whatever was found (NVML or simulated)::

    gpus:
      inventory: auto
      sharing:
        - {gpus: H200-141GB, shares: 4}      # every GPU of a type ('*': every GPU)
        - {gpus: [0, 1], shares: 2}          # GPU indices on this host
        - {gpus: [GPU-8f3c...], shares: 7}   # GPU UUIDs (as nvidia-smi -L lists them)

The first rule that names a GPU decides. MIG is left alone: a GPU in MIG mode is never shared
(its slices are already the unit), so one GPU never carries both slices and shares. Every GPU of
one type is shared into the same number of shares (a type name is what quotas, prices and the
form speak of); a rule that would break that leaves the GPU whole and says so.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

from .devices import Device, Inventory, base_type, kind_of

MIN_SHARES, MAX_SHARES = 2, 64
# What a CUDA context, cuBLAS/cuDNN workspaces and the allocator's slack take outside the memory
# a framework is told it may use: kept out of each sharer's cap so N caps fit on the GPU.
CONTEXT_RESERVE_MIB = 512
MIN_CAP_MIB = 256
_UUID = re.compile(r"^GPU-[0-9A-Fa-f-]+$")


@dataclass(frozen=True)
class SharingRule:
    """One ``gpus.sharing`` item: a type name ('*' = every GPU) or indices/UUIDs, and N."""

    shares: int
    gpu_type: str = ""
    indices: frozenset[int] = frozenset()
    uuids: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, item: dict) -> SharingRule:
        shares = int(item["shares"])
        if not MIN_SHARES <= shares <= MAX_SHARES:
            raise ValueError(f"shares must be from {MIN_SHARES} to {MAX_SHARES}, got {shares}")
        which = item["gpus"]
        if isinstance(which, str):
            if ":" in which:
                raise ValueError(f"'{which}' names MIG slices or shares; name the GPU type ('{base_type(which)}')")
            return cls(shares, gpu_type=which)
        indices, uuids = set(), set()
        for w in which:
            if isinstance(w, int) and not isinstance(w, bool) and w >= 0:
                indices.add(w)
            elif isinstance(w, str) and _UUID.match(w):
                uuids.add(w.upper())
            else:
                raise ValueError(f"{w!r} is neither a GPU index (0, 1, ...) nor a GPU UUID (GPU-...)")
        if not indices and not uuids:
            raise ValueError("'gpus' names no GPU")
        return cls(shares, indices=frozenset(indices), uuids=frozenset(uuids))

    def matches(self, d: Device) -> bool:
        if self.gpu_type:
            return self.gpu_type == "*" or base_type(d.gpu_type) == self.gpu_type
        return d.index in self.indices or d.uuid.upper() in self.uuids

    @property
    def explicit(self) -> bool:
        """Names GPUs one by one (so a GPU it cannot share deserves a note)."""
        return not self.gpu_type

    def describe(self) -> str:
        if self.gpu_type:
            return "every GPU" if self.gpu_type == "*" else f"GPUs of type {self.gpu_type}"
        names = [str(i) for i in sorted(self.indices)] + sorted(self.uuids)
        return "GPU " + ", ".join(names)


def rules_from_config(items) -> tuple[SharingRule, ...]:
    """``gpus.sharing`` as rules; a bad item raises ValueError naming its position."""
    out = []
    for n, item in enumerate(items or ()):
        try:
            out.append(SharingRule.from_config(dict(item)))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"gpus.sharing[{n}]: {e}") from None
    return tuple(out)


def share_gpu(gpu: Device, shares: int) -> tuple[Device, ...]:
    """The N shares of one whole GPU: same host, index and UUID (so every sharer is handed the
    same physical device), 1/N of its weight and memory each."""
    if gpu.kind != "gpu":
        raise ValueError(f"{gpu.key} is a {gpu.kind} device: only whole GPUs are shared")
    if not MIN_SHARES <= shares <= MAX_SHARES:
        raise ValueError(f"a GPU is shared into {MIN_SHARES} to {MAX_SHARES} shares, not {shares}")
    return tuple(
        replace(gpu, key=f"{gpu.key}/share{n}", gpu_type=f"{gpu.gpu_type}:shared",
                memory_mib=gpu.memory_mib // shares, weight=Fraction(1, shares))
        for n in range(shares)
    )


def shares_of(d: Device) -> int:
    """How many servers share the GPU a device is on (1 for a whole GPU or a MIG slice)."""
    return int(1 / d.weight) if d.kind == "shared" else 1


def apply_sharing(inv: Inventory, rules: tuple[SharingRule, ...]) -> Inventory:
    """``inv`` with the GPUs the rules name split into shares. Only addressable whole GPUs are
    split (a cluster's scheduler shares its own: SLURM shards, device-plugin replicas)."""
    if not rules:
        return inv
    devices: list[Device] = []
    notes: list[str] = []
    per_type: dict[str, tuple[int, int]] = {}  # type -> (shares, the GPU index that fixed it)
    noted_mig: set[tuple[str, int]] = set()
    for d in inv.devices:
        rule = next((r for r in rules if r.matches(d)), None)
        if rule is None or not d.addressable or d.kind == "shared":
            devices.append(d)
            continue
        if d.kind == "mig":
            if (d.host, d.index) not in noted_mig and (rule.explicit or rule.gpu_type != "*"):
                noted_mig.add((d.host, d.index))
                notes.append(f"GPU {d.index} is in MIG mode, so it is not shared ({rule.describe()}): "
                             "MIG slices and shares never mix on one GPU")
            devices.append(d)
            continue
        fixed = per_type.setdefault(d.gpu_type, (rule.shares, d.index))
        if fixed[0] != rule.shares:
            notes.append(f"GPU {d.index} ({d.gpu_type}) is not shared {rule.shares} ways: every "
                         f"{d.gpu_type} is shared into the same number of shares ({fixed[0]}, as GPU {fixed[1]})")
            devices.append(d)
            continue
        devices.extend(share_gpu(d, rule.shares))
    note = "; ".join(filter(None, [inv.note, *notes]))
    return replace(inv, devices=tuple(devices), note=note)


def check_uniform(devices) -> None:
    """Every share of one type splits its GPU the same number of ways (raises ValueError)."""
    seen: dict[str, Fraction] = {}
    for d in devices:
        if d.kind == "shared" and seen.setdefault(d.gpu_type, d.weight) != d.weight:
            raise ValueError(f"{base_type(d.gpu_type)} GPUs are shared in different numbers of shares "
                             f"({int(1 / seen[d.gpu_type])} and {int(1 / d.weight)}); use one number per type")


# -- what one share promises ---------------------------------------------------------------------
@dataclass(frozen=True)
class ShareCaps:
    """What a server holding ``held`` shares of a GPU shared ``shares`` ways may use: its memory
    cap (for frameworks that take one) and its part of the GPU's compute."""

    shares: int
    held: int
    gpu_memory_mib: int  # the whole GPU's

    @property
    def fraction(self) -> Fraction:
        return Fraction(self.held, self.shares)

    @property
    def memory_mib(self) -> int:
        """Its part of the memory less the context reserve: N sharers' caps fit on the GPU."""
        part = self.gpu_memory_mib * self.held // self.shares
        return max(MIN_CAP_MIB, part - CONTEXT_RESERVE_MIB) if part > MIN_CAP_MIB else part

    @property
    def memory_fraction(self) -> float:
        """``memory_mib`` as a fraction of the GPU (PyTorch's per-process memory fraction),
        rounded down so that it never allows more than the cap."""
        exact = Fraction(self.memory_mib, self.gpu_memory_mib) if self.gpu_memory_mib else self.fraction
        return math.floor(exact * 10_000) / 10_000

    @property
    def thread_percentage(self) -> int:
        """Its part of the GPU's threads (MPS' active thread percentage), at least 1."""
        return max(1, int(100 * self.held // self.shares))


def caps_for(gpu_type: str, count: int, devices, type_devices) -> ShareCaps | None:
    """The caps of an allocation: from its devices, or (a scheduler placed it: SLURM shards,
    device-plugin replicas) from what one device of its type is (``type_devices()``)."""
    if kind_of(gpu_type) != "shared" or count <= 0:
        return None
    if devices:
        return caps_of(devices)
    of_type = list(type_devices())
    if not of_type:
        return None
    n = shares_of(of_type[0])
    return ShareCaps(n, min(count, n), of_type[0].memory_mib * n)


def caps_of(devices) -> ShareCaps | None:
    """The caps of a server holding ``devices`` (None unless they are shares of one GPU)."""
    devices = list(devices)
    if not devices or any(d.kind != "shared" for d in devices):
        return None
    if len({(d.host, d.index) for d in devices}) != 1:
        return None  # shares of two GPUs: no single cap describes them (placement never does this)
    d = devices[0]
    n = shares_of(d)
    return ShareCaps(n, len(devices), d.memory_mib * n)


# The directory put first on PYTHONPATH of sharers: its sitecustomize applies the caps below to
# PyTorch and TensorFlow as they load (cooperative, see the file).
STARTUP_DIR = Path(__file__).resolve().with_name("startup")


def share_env(caps: ShareCaps) -> dict[str, str]:
    """The variables that tell a server (and the frameworks in it) its share of the GPU."""
    fraction = f"{caps.memory_fraction:.4f}"
    return {
        "GPULAB_GPU_SHARES": str(caps.shares),  # servers per GPU
        "GPULAB_GPU_SHARE": f"{caps.fraction.numerator}/{caps.fraction.denominator}",  # of the GPU held
        "GPULAB_GPU_MEMORY_LIMIT_MIB": str(caps.memory_mib),
        "GPULAB_GPU_MEMORY_FRACTION": fraction,
        "XLA_PYTHON_CLIENT_MEM_FRACTION": fraction,  # JAX reads it itself
    }


def prepend_path(current: str, entry: str) -> str:
    """``entry`` first on a PATH-like variable, once."""
    parts = [p for p in (current or "").split(os.pathsep) if p and p != entry]
    return os.pathsep.join([entry, *parts])


# -- words ---------------------------------------------------------------------------------------
_VOWEL_SOUND = re.compile(r"^([AEFHILMNORSX]|8|11|18)", re.IGNORECASE)


def _a(word: str) -> str:
    """'an H200', 'a T4', 'an A100' (letters said with a vowel sound take 'an')."""
    return f"{'an' if _VOWEL_SOUND.match(word) else 'a'} {word}"


def _family(gpu_type: str) -> str:
    """'H200-141GB:shared' -> 'H200' (the size is said separately)."""
    return re.sub(r"-\d+GB$", "", base_type(gpu_type), flags=re.IGNORECASE)


def _gb(mib: int) -> str:
    gib = mib / 1024
    return f"{int(gib)} GB" if gib >= 10 else f"{gib:.1f} GB"


def describe(gpu_type: str, weight: Fraction, memory_mib: int, kind: str) -> str:
    """What one device of a type gives, in the form's words: 'a whole H200 (141 GB)', 'a
    1g.10gb MIG slice of an A100 (10 GB, 1/7 of its compute)', '1/4 of an H200: up to 35 GB,
    compute shared with 3 others'."""
    family = _family(gpu_type)
    if kind == "shared":
        n = int(1 / weight)
        return (f"1/{n} of {_a(family)}: up to {_gb(memory_mib)}, compute shared with "
                f"{n - 1} other{'s' if n > 2 else ''}")
    if kind == "mig":
        profile = gpu_type.split(":", 1)[1]
        return f"a {profile} MIG slice of {_a(family)} ({_gb(memory_mib)}, {weight.numerator}/{weight.denominator} of its compute)"
    return f"a whole {family}" + (f" ({_gb(memory_mib)})" if memory_mib else "")
