"""What a GPU inventory is made of: allocatable devices and their types (pure data).

An *allocatable device* is the unit a server receives: a whole GPU, one MIG instance, or one
share of a time-sliced ("shared") GPU. Every device has a ``weight`` in GPU-equivalents so that
whole GPUs and slices count against one quota: a whole GPU weighs 1, a MIG instance its share of
the parent's compute slices (an A100 ``1g.10gb`` weighs 1/7), a share of a GPU shared by N weighs 1/N.

Type names are what users and admins write (``gpu_type`` in the REST body, ``gpu_types`` in
quotas): ``A100-80GB`` for whole GPUs, ``A100-80GB:1g.10gb`` for MIG instances and
``A100-80GB:shared`` for shares.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction

# Compute slices of a MIG-capable GPU, used when NVML cannot tell us (simulated inventories).
MIG_SLICES = {"A100": 7, "H100": 7, "H200": 7, "H800": 7, "A800": 7, "B200": 7, "GB200": 7, "A30": 4}

_MIG_PROFILE = re.compile(r"^(\d+)g\.(\d+)gb(\+me)?$")
_TYPE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(:([0-9]+g\.[0-9]+gb(\+me)?|shared))?$")


def valid_type_name(name: str) -> bool:
    return bool(_TYPE_NAME.match(name))


def mig_slices(profile: str) -> int:
    """Compute slices of a MIG profile name such as ``3g.40gb`` (the ``3``)."""
    m = _MIG_PROFILE.match(profile)
    if not m:
        raise ValueError(f"'{profile}' is not a MIG profile name like '1g.10gb' or '3g.40gb'")
    return int(m.group(1))


def mig_memory_mib(profile: str) -> int:
    """Memory of a MIG profile in MiB (``3g.40gb`` -> 40960)."""
    m = _MIG_PROFILE.match(profile)
    if not m:
        raise ValueError(f"'{profile}' is not a MIG profile name like '1g.10gb' or '3g.40gb'")
    return int(m.group(2)) * 1024


def family_of(gpu_type: str) -> str:
    """``A100-80GB`` -> ``A100`` (used to look up MIG slice counts)."""
    return gpu_type.split(":")[0].split("-")[0]


def base_type(gpu_type: str) -> str:
    """``A100-80GB:1g.10gb`` -> ``A100-80GB``."""
    return gpu_type.split(":")[0]


def kind_of(gpu_type: str) -> str:
    """``gpu``, ``mig`` or ``shared``: what kind of device a type name describes."""
    if ":" not in gpu_type:
        return "gpu"
    return "shared" if gpu_type.endswith(":shared") else "mig"


@dataclass(frozen=True, order=True)
class Device:
    """One allocatable device. Frozen: inventories are values, compared and cached freely."""

    host: str
    index: int  # index of the physical GPU on its host (NVML index)
    key: str  # unique across the inventory; the allocator's primary key
    gpu_type: str
    uuid: str = ""  # GPU-... or MIG-... (NVML); what NVIDIA_VISIBLE_DEVICES takes for MIG
    model: str = ""  # as NVML names it, e.g. "NVIDIA A100-SXM4-80GB"
    memory_mib: int = 0
    weight: Fraction = Fraction(1)
    mig_profile: str = ""
    # addressable=False: the engine (SLURM, Kubernetes) picks the physical device; we only count.
    addressable: bool = True

    @property
    def kind(self) -> str:
        return kind_of(self.gpu_type)

    @property
    def visible_id(self) -> str:
        """What CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES take for this device.

        Whole GPUs and shares: the index. MIG instances can only be named by UUID.
        """
        if self.kind == "mig":
            return self.uuid
        return str(self.index)


@dataclass(frozen=True)
class Inventory:
    """Every allocatable device of a hub, plus why it is empty when it is."""

    devices: tuple[Device, ...] = ()
    source: str = "none"  # "nvml", "simulated:<spec>", "slurm", "kubernetes", "none"
    note: str = ""  # e.g. why NVML found nothing; shown in logs and to admins
    # Devices in use by something gpulab does not manage (other SLURM jobs, other pods):
    # keys of `devices` that are not free even though we hold no allocation for them.
    external_busy: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self):
        keys = [d.key for d in self.devices]
        if len(keys) != len(set(keys)):
            raise ValueError("inventory has duplicate device keys")
        # One physical GPU is offered one way: whole, as MIG slices or as shares, never two at
        # once (a whole-GPU server must never land on a GPU with sharers, nor shares on MIG).
        kinds: dict[tuple[str, int], str] = {}
        for d in self.devices:
            if not d.addressable:
                continue  # a cluster's scheduler keeps its own GPUs apart
            gpu = (d.host, d.index)
            if gpu in kinds and (kinds[gpu] != d.kind or d.kind == "gpu"):
                raise ValueError(f"GPU {d.index} on {d.host} is offered both as {kinds[gpu]} and as "
                                 f"{d.kind}: one GPU is offered whole, as MIG slices or as shares")
            kinds[gpu] = d.kind

    @property
    def types(self) -> list[str]:
        seen: dict[str, None] = {}
        for d in sorted(self.devices):
            seen.setdefault(d.gpu_type, None)
        return list(seen)

    def by_key(self) -> dict[str, Device]:
        return {d.key: d for d in self.devices}

    def of_type(self, gpu_type: str) -> list[Device]:
        return [d for d in self.devices if d.gpu_type == gpu_type]

    def free(self, taken: set[str] | frozenset[str]) -> list[Device]:
        """Devices neither allocated by gpulab (``taken``) nor busy outside it."""
        return sorted(
            d for d in self.devices if d.key not in taken and d.key not in self.external_busy
        )

    def summary(self) -> dict[str, int]:
        """{type: count}, in type order."""
        out: dict[str, int] = {}
        for t in self.types:
            out[t] = len(self.of_type(t))
        return out

    def gpu_equivalents(self) -> Fraction:
        return sum((d.weight for d in self.devices), Fraction(0))


def format_equivalents(value: Fraction | float | int) -> str:
    """1 -> '1 GPU', 2 -> '2 GPUs', 2/7 -> '0.29 GPU'. For messages people read."""
    v = Fraction(value).limit_denominator(1000)
    if v.denominator == 1:
        n = v.numerator
        return f"{n} GPU" if n == 1 else f"{n} GPUs"
    return f"{float(v):.2f} GPU"


def format_devices(gpu_type: str, count: int) -> str:
    """'2 A100-80GB GPUs', '1 A100-80GB:1g.10gb MIG slice', '1 share of a shared A100-80GB'."""
    kind = kind_of(gpu_type)
    if kind == "mig":
        noun = "MIG slice" if count == 1 else "MIG slices"
    elif kind == "shared":
        return f"{count} share{'' if count == 1 else 's'} of a shared {base_type(gpu_type)}"
    else:
        noun = "GPU" if count == 1 else "GPUs"
    return f"{count} {gpu_type} {noun}"
