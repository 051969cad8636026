"""Where a request goes: choose ``count`` free devices of one type (pure).

Policy, "fewest fragments first":

1. All devices of a server come from one host (a server runs on one machine).
2. Among hosts that fit, pick the one left with the fewest free devices of that type (best fit),
   so hosts with room for large requests stay whole.
3. Whole GPUs on a host: leave the free GPUs in as few contiguous runs ("fragments") as possible,
   so that later multi-GPU requests find neighbours (which usually share NVLink/PCIe switches);
   among equally good choices take GPUs that are contiguous themselves, then the lowest indices.
4. MIG slices: pack onto the parent GPU that already has the fewest free of that type left,
   keeping untouched GPUs whole.
5. GPU shares: all of a server's shares on one GPU (it holds k/N of that GPU), the GPU with the
   fewest free shares that still has room: a partly shared GPU fills up before another is opened.
   (Whole-GPU requests never meet shares: a shared GPU is offered only as shares, and an
   inventory refuses a GPU offered two ways, see ``devices.Inventory``.)

Deterministic: the same free set and request always give the same devices.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable

from .devices import Device

EXACT_LIMIT = 5000  # evaluate every combination up to this many (8 GPUs choose 4 is 70)


def runs(indices: Iterable[int]) -> list[list[int]]:
    """Contiguous runs of sorted distinct indices: [0,1,3,4,5,7] -> [[0,1],[3,4,5],[7]]."""
    out: list[list[int]] = []
    for i in sorted(set(indices)):
        if out and out[-1][-1] == i - 1:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def fragments(devices: Iterable[Device]) -> int:
    """How many contiguous runs the given devices form, summed over hosts."""
    per_host: dict[str, list[int]] = defaultdict(list)
    for d in devices:
        per_host[d.host].append(d.index)
    return sum(len(runs(ix)) for ix in per_host.values())


def _whole_gpus(devs: list[Device], count: int) -> list[Device]:
    by_index = {d.index: d for d in devs}
    free = sorted(by_index)
    if count == 1:
        # the most common request, in one pass: a GPU alone in its run leaves a fragment fewer,
        # any other at a run's end as many, one inside a run one more; lowest index first. What
        # the enumeration below chooses, without its n runs over n GPUs (a host of 200
        # simulated GPUs took milliseconds a spawn)
        alone = next((i for k, i in enumerate(free) if (k == 0 or free[k - 1] != i - 1)
                      and (k == len(free) - 1 or free[k + 1] != i + 1)), free[0])
        return [by_index[alone]]
    if math.comb(len(free), count) <= EXACT_LIMIT:
        best = min(
            itertools.combinations(free, count),
            key=lambda combo: (
                len(runs(set(free) - set(combo))),  # fragments left behind
                len(runs(combo)),  # then: the chosen GPUs as contiguous as possible
                combo,  # then: lowest indices
            ),
        )
        return [by_index[i] for i in best]
    # Large hosts: whole runs smallest-first (each removes a fragment), then the rest from the
    # end of a run (which never splits one). Same optimum, no enumeration.
    chosen: list[int] = []
    rs = sorted(runs(free), key=lambda r: (len(r), r[0]))
    for r in rs:
        if len(chosen) + len(r) <= count:
            chosen.extend(r)
    rest = [r for r in rs if r[0] not in chosen]
    for r in sorted(rest, key=lambda r: (len(r), r[0])):
        if len(chosen) == count:
            break
        chosen.extend(r[: count - len(chosen)])
    return [by_index[i] for i in chosen]


def _packed_slices(devs: list[Device], count: int) -> list[Device]:
    per_parent: dict[int, list[Device]] = defaultdict(list)
    for d in devs:
        per_parent[d.index].append(d)
    chosen: list[Device] = []
    for index in sorted(per_parent, key=lambda i: (len(per_parent[i]), i)):
        for d in sorted(per_parent[index], key=lambda d: d.key):
            chosen.append(d)
            if len(chosen) == count:
                return chosen
    return chosen


def _unit(d: Device) -> tuple:
    """Where all of one server's devices must be: one host, and for addressable shares one GPU
    (a cluster's scheduler places its own shares, so there only the node is known)."""
    if d.kind == "shared" and d.addressable:
        return (d.host, d.index)
    return (d.host,)


def place(free: Iterable[Device], count: int, gpu_type: str) -> tuple[Device, ...] | None:
    """Pick ``count`` devices of ``gpu_type`` from ``free``, or None if they do not fit."""
    if count <= 0:
        return ()
    per_unit: dict[tuple, list[Device]] = defaultdict(list)
    for d in free:
        if d.gpu_type == gpu_type:
            per_unit[_unit(d)].append(d)
    units = [u for u, ds in per_unit.items() if len(ds) >= count]
    if not units:
        return None
    # best fit: the host (or shared GPU) left with the fewest free devices of the type
    unit = min(units, key=lambda u: (len(per_unit[u]) - count, u))
    devs = per_unit[unit]
    pick = _whole_gpus if devs[0].kind == "gpu" else _packed_slices
    return tuple(sorted(pick(devs, count)))


def most_on_one_host(free: Iterable[Device], gpu_type: str) -> int:
    """The largest request of this type that would fit right now (what the form may offer):
    the most free devices on one host, or free shares on one GPU."""
    per_unit: dict[tuple, int] = defaultdict(int)
    for d in free:
        if d.gpu_type == gpu_type:
            per_unit[_unit(d)] += 1
    return max(per_unit.values(), default=0)
