"""Sentences people read when a request cannot be served (pure)."""

from __future__ import annotations

from ..gpu.devices import format_devices


def free_now(avail) -> str:
    """'1 A100-80GB GPU, 2 A100-80GB:1g.10gb MIG slices' or 'nothing'."""
    parts = [format_devices(a.gpu_type, a.free) for a in avail if a.free]
    return ", ".join(parts) if parts else "nothing"


def capacity_message(err, avail) -> str:
    """Refusal for a request that fits the quota but not the free capacity."""
    want = format_devices(err.gpu_type, err.count)
    mine = next((a for a in avail if a.gpu_type == err.gpu_type), None)
    if mine is not None and mine.free >= err.count and mine.largest < err.count:
        where = f"{mine.free} of {mine.total} are free, but at most {mine.largest} on one machine"
    else:
        where = f"{err.free} of {err.total} {'is' if err.free == 1 else 'are'} free"
    return (
        f"Not enough free GPUs for {want} right now: {where}. Free now: {free_now(avail)}. "
        "Ask for fewer GPUs or another type, or try again later."
    )
