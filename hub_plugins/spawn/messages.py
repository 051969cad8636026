"""Sentences people read when a request cannot be served (pure)."""

from __future__ import annotations

from ..gpu.devices import base_type, format_devices, kind_of


def free_now(avail) -> str:
    """'1 A100-80GB GPU, 2 A100-80GB:1g.10gb MIG slices' or 'nothing'."""
    parts = [format_devices(a.gpu_type, a.free) for a in avail if a.free]
    return ", ".join(parts) if parts else "nothing"


def reclaim_hint(borrowed: int, after_minutes: float | None) -> str:
    """What a request within quota may do when GPUs it wants are lent to borrowers: wait, and
    they are taken back (``after_minutes``: queue.borrowing.reclaim_after_minutes; None: no
    borrowing, no hint)."""
    if not borrowed or after_minutes is None:
        return ""
    return (f" {borrowed} of the busy ones {'is' if borrowed == 1 else 'are'} borrowed beyond quota: wait in "
            f"the queue (REST: \"queue\": true) and borrowed GPUs are taken back for you after {after_minutes:g} min.")


def capacity_message(err, avail, hint: str = "") -> str:
    """Refusal for a request that fits the quota but not the free capacity. ``hint``: a
    sentence to add, such as :func:`reclaim_hint`'s."""
    want = format_devices(err.gpu_type, err.count)
    ahead = getattr(err, "waiting", None)  # queue.store.QueueAhead: others wait before it
    if ahead is not None:
        held = " (the free ones are held for the request at the head of the queue)" if err.free else ""
        return (
            f"{ahead} request(s) are waiting for GPUs before yours{held}, and requests start in "
            f"the queue's order. Tick 'Wait in the queue' (REST: \"queue\": true) to wait your "
            f"turn for {want} without holding a GPU, or ask for another type."
        )
    mine = next((a for a in avail if a.gpu_type == err.gpu_type), None)
    if mine is not None and mine.free >= err.count and mine.largest < err.count:
        where = f"{mine.free} of {mine.total} are free, but at most {mine.largest} on one machine"
    else:
        where = f"{err.free} of {err.total} {'is' if err.free == 1 else 'are'} free"
    if kind_of(err.gpu_type) == "shared":
        # name the sharing: "all shares taken" is not "no GPUs", and a whole GPU may be free
        n = int(1 / mine.weight) if mine is not None else 0
        each = f" (each {base_type(err.gpu_type)} is shared by {n} servers)" if n else ""
        return (
            f"Not enough free GPU shares for {want} right now: {err.free} of {err.total} shares "
            f"{'is' if err.free == 1 else 'are'} free{each}. Free now: {free_now(avail)}. "
            "Wait in the queue, ask for another type (or a whole GPU), or try again later."
        )
    return (
        f"Not enough free GPUs for {want} right now: {where}. Free now: {free_now(avail)}. "
        f"Ask for fewer GPUs or another type, or try again later.{hint}"
    )
