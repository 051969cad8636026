"""Discover this machine's GPUs through NVML (``nvidia-ml-py``, imported as ``pynvml``).

The only module that talks to the driver. Everything it returns is a plain :class:`Inventory`.
No driver, no library or no GPU gives an empty inventory whose ``note`` says why, so the hub
still starts (CPU profiles only).
"""

from __future__ import annotations

import logging
import math
import re
from fractions import Fraction

from .devices import Device, Inventory, mig_slices

log = logging.getLogger("gpulab.nvml")

# Nominal memory sizes: NVML reports slightly less than the marketing size (an H100 80GB shows
# 79.6 GiB, an L4 22.5 GiB), and admins write the marketing size in quotas.
_SIZES_GB = (4, 6, 8, 10, 11, 12, 16, 20, 24, 32, 40, 48, 64, 80, 94, 96, 141, 144, 180, 192, 288)
_DROP_WORDS = {"NVIDIA", "Tesla", "GeForce", "Quadro"}


def nominal_gb(memory_mib: int) -> int:
    gib = memory_mib / 1024
    for size in _SIZES_GB:
        if size >= gib * 0.999 and size - gib < max(2.0, gib * 0.08):
            return size
    return math.ceil(gib)


def short_type(model: str, memory_mib: int) -> str:
    """'NVIDIA A100-SXM4-80GB', 81920 MiB -> 'A100-80GB'; 'NVIDIA H100 80GB HBM3' -> 'H100-80GB'."""
    words = [w for w in model.replace("_", " ").split() if w not in _DROP_WORDS]
    if not words:
        words = ["GPU"]
    family = words[0].split("-")[0]
    if family.upper() in {"RTX", "TITAN"} and len(words) > 1:
        family = f"{family}-{words[1].split('-')[0]}"
    family = re.sub(r"[^A-Za-z0-9.-]", "", family) or "GPU"
    return f"{family}-{nominal_gb(memory_mib)}GB" if memory_mib else family


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def discover(nvml=None, host: str = "localhost") -> Inventory:
    """Scan GPUs (and their MIG instances when MIG mode is on)."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:  # pragma: no cover - nvidia-ml-py is a dependency
            return Inventory(source="nvml", note="nvidia-ml-py is not installed")
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as e:
        return Inventory(
            source="nvml",
            note=f"NVML unavailable ({e}): no NVIDIA driver on this host, serving CPU profiles only",
        )
    try:
        return Inventory(tuple(_scan(nvml, host)), source="nvml")
    except nvml.NVMLError as e:
        log.exception("NVML scan failed")
        return Inventory(source="nvml", note=f"NVML scan failed ({e}): serving CPU profiles only")
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass


def _scan(nvml, host: str):
    count = nvml.nvmlDeviceGetCount()
    for index in range(count):
        h = nvml.nvmlDeviceGetHandleByIndex(index)
        model = _text(nvml.nvmlDeviceGetName(h))
        uuid = _text(nvml.nvmlDeviceGetUUID(h))
        memory_mib = nvml.nvmlDeviceGetMemoryInfo(h).total // (1024 * 1024)
        gpu_type = short_type(model, memory_mib)
        if _mig_enabled(nvml, h):
            yield from _scan_mig(nvml, h, host, index, gpu_type, model)
            continue
        yield Device(
            host=host,
            index=index,
            key=f"{host}/gpu{index}",
            gpu_type=gpu_type,
            uuid=uuid,
            model=model,
            memory_mib=memory_mib,
        )


def _mig_enabled(nvml, handle) -> bool:
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    except nvml.NVMLError:  # not MIG-capable
        return False
    return current == getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1)


def _scan_mig(nvml, handle, host, index, gpu_type, model):
    slots = nvml.nvmlDeviceGetMaxMigDeviceCount(handle)
    found = 0
    for slot in range(slots):
        try:
            mh = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except nvml.NVMLError:  # empty slot
            continue
        name = _text(nvml.nvmlDeviceGetName(mh))
        profile = name.rsplit("MIG", 1)[-1].strip() if "MIG" in name else ""
        try:
            slices = mig_slices(profile)
        except ValueError:
            log.warning("GPU %s: cannot read MIG profile from %r, skipping it", index, name)
            continue
        found += 1
        yield Device(
            host=host,
            index=index,
            key=f"{host}/gpu{index}/mig{slot}",
            gpu_type=f"{gpu_type}:{profile}",
            uuid=_text(nvml.nvmlDeviceGetUUID(mh)),
            model=model,
            memory_mib=nvml.nvmlDeviceGetMemoryInfo(mh).total // (1024 * 1024),
            weight=Fraction(slices, slots or 7),
            mig_profile=profile,
        )
    if not found:
        log.warning("GPU %s has MIG mode on but no MIG instances: nothing to allocate on it", index)
