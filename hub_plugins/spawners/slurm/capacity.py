"""``c.GPULab.capacity_reader`` for SLURM: the GPUs of the partition servers with GPUs go to,
read with ``scontrol show node -d`` every few seconds (see ``cluster/refresh.py``)."""

from __future__ import annotations

from ...cluster.refresh import PeriodicInventory
from ...gpu.devices import Inventory
from . import cli
from .nodes import inventory_from_nodes


class SlurmCapacity(PeriodicInventory):
    def __init__(self, partition: str = "", gres_types: dict[str, str] | None = None,
                 untyped: str = "GPU", interval: float = 10.0):
        self.partition = partition
        self.gres_types = dict(gres_types or {})
        self.untyped = untyped
        super().__init__(self._fetch, interval, "slurm")

    def _fetch(self) -> Inventory:
        # no partition configured: jobs go to the cluster's default partition, so count that one
        part = self.partition or cli.default_partition_sync()
        return inventory_from_nodes(cli.nodes_sync(), partitions={part} if part else None,
                                    gres_types=self.gres_types, untyped=self.untyped)
