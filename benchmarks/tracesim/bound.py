"""The offline upper bound on useful GPU-hours, solved as a maximum flow.

Relaxation: each session's work (GPUs x active time) may run anywhere in its window [arrival,
arrival + max wait + active time], split over time at will (preempted, resumed, on fewer GPUs for
longer) but never on more GPUs at once than it asked for, and the cluster never runs more than its
capacity at once. No policy can serve more work than this (it also ignores hosts, quotas and idle
tails), so a policy's useful GPU-hours as a share of it says how much it leaves on the table.

Network: source -> session (its work) -> each time slot its window overlaps (GPUs x the overlap)
-> sink (capacity x the slot length). Slots are ``slot`` seconds long; a session may use a slot
for the part of it inside its window, so coarser slots only loosen the bound, never tighten it.
Capacities are whole GPU-seconds; scipy's Dinic solves it in well under a second for the trace.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_flow


def upper_bound(sessions, capacity: int, max_wait: float, slot: float = 3600.0) -> float:
    """Most useful GPU-seconds any schedule could serve (see the module docstring)."""
    n = len(sessions)
    end = max(s.arrival + max_wait + s.active for s in sessions)
    slots = int(math.ceil(end / slot)) + 1
    source, sink = 0, n + slots + 1
    rows, cols, caps = [], [], []
    for i, s in enumerate(sessions, start=1):
        rows.append(source), cols.append(i), caps.append(int(s.gpus * s.active))
        lo, hi = s.arrival, s.arrival + max_wait + s.active
        for k in range(int(lo // slot), int(math.ceil(hi / slot))):
            overlap = min(hi, (k + 1) * slot) - max(lo, k * slot)
            if overlap > 0:
                rows.append(i), cols.append(n + 1 + k), caps.append(int(math.ceil(s.gpus * overlap)))
    for k in range(slots):
        rows.append(n + 1 + k), cols.append(sink), caps.append(int(capacity * slot))
    size = sink + 1
    graph = csr_matrix((np.array(caps, dtype=np.int32), (np.array(rows), np.array(cols))), shape=(size, size))
    return float(maximum_flow(graph, source, sink, method="dinic").flow_value)
