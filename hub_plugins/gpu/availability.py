"""What is free right now, per GPU type (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from .devices import Inventory, kind_of
from .placement import most_on_one_host
from .sharing import describe


@dataclass(frozen=True)
class TypeAvailability:
    gpu_type: str
    kind: str  # gpu | mig | shared
    total: int
    free: int
    largest: int  # the most one server can get right now (devices on one host)
    weight: Fraction
    memory_mib: int
    # the most one server could ever get (devices of this type on one host, busy or not): a
    # request up to this size can wait in a queue (gpulab's, or the scheduler's)
    host_max: int = 0

    @property
    def description(self) -> str:
        """What one device gives ('1/4 of an H200: up to 35 GB, compute shared with 3 others')."""
        return describe(self.gpu_type, self.weight, self.memory_mib, self.kind)

    def as_dict(self) -> dict:
        return {
            "gpu_type": self.gpu_type,
            "kind": self.kind,
            "total": self.total,
            "free": self.free,
            "largest": self.largest,
            "host_max": self.host_max,
            "gpu_equivalents_each": float(self.weight),
            "memory_gb": round(self.memory_mib / 1024, 1),
            "description": self.description,
        }


def availability(inv: Inventory, taken) -> list[TypeAvailability]:
    free = inv.free(set(taken))
    out = []
    for t in inv.types:
        devs = inv.of_type(t)
        out.append(TypeAvailability(
            gpu_type=t, kind=kind_of(t), total=len(devs),
            free=sum(1 for d in free if d.gpu_type == t), largest=most_on_one_host(free, t),
            weight=devs[0].weight, memory_mib=devs[0].memory_mib,
            host_max=most_on_one_host(devs, t),
        ))
    return out
