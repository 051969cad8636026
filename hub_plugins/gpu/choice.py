"""Which GPU type a request gets when it names none (pure; the form and the allocator agree).

"gpus: 2" means two whole GPUs wherever the hub has whole GPUs a user may use; MIG slices and
GPU shares are chosen without being named only on hubs that have nothing else (largest first).
"""

from __future__ import annotations

from .devices import kind_of
from .placement import most_on_one_host


def auto_candidates(types, weights, allows_type, allowed_types) -> list[str]:
    """The types an unnamed request may land on, in order of preference.

    ``types``: the hub's types; ``weights``: type -> GPU-equivalents of one device;
    ``allows_type``: the profile's rule; ``allowed_types``: the user's quota rule (None = any)."""
    usable = [t for t in types if allows_type(t) and (allowed_types is None or t in allowed_types)]
    whole = [t for t in usable if kind_of(t) == "gpu"]
    return whole or sorted(usable, key=lambda t: -weights[t])


def pick_type(candidates, free, count: int) -> tuple[str, bool]:
    """(type, fits): the first candidate with ``count`` free on one host, else the one with the
    most free (so that a refusal names the type the user would most likely get)."""
    room = {t: most_on_one_host(free, t) for t in candidates}
    for t in candidates:
        if room[t] >= count:
            return t, True
    return max(candidates, key=lambda t: room[t]), False
