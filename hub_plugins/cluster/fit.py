"""Could a request ever run? (pure)

With engine placement gpulab never refuses for lack of *free* GPUs: the scheduler queues the
server. But a request no single node can hold (5 GPUs where nodes have 4, or a type no node
has any more) would wait forever, so it is refused at once with what the cluster does have.
"""

from __future__ import annotations

from ..gpu.devices import Inventory, format_devices
from ..gpu.placement import most_on_one_host


def never_fits(inv: Inventory, gpu_type: str, count: int) -> str | None:
    """Why ``count`` devices of ``gpu_type`` can never be given to one server, or None."""
    if not count:
        return None
    most = most_on_one_host(inv.devices, gpu_type)
    if most >= count:
        return None
    have = ", ".join(format_devices(t, most_on_one_host(inv.devices, t)) for t in inv.types)
    if most == 0:
        return (f"The cluster has no {gpu_type} GPUs right now (no node that takes servers offers them). "
                f"Per node it has at most: {have or 'no GPUs'}. Ask for another type or 0 GPUs.")
    return (f"No node of the cluster has {format_devices(gpu_type, count)}: the most on one node is {most}. "
            f"Ask for {most} or fewer.")
