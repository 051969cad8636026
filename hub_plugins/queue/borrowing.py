"""Who may borrow GPUs beyond their quota, and on what terms (pure).

A *borrowed* server (REST ``"preemptible": true``, the form's box) starts beyond its user's
quota on GPUs nobody within quota waits for, and is taken back when someone within quota waits
(:mod:`hub_plugins.queue.borrow` chooses which; the culler warns and stops them). This module
holds the ``queue.borrowing`` settings and the decisions that need no database:

- whether a user may borrow at all (:meth:`Borrowing.refusal`, a message that says what to do);
- which quota limits a borrowed request skips (:func:`relaxed`): the GPU total and the server
  count, since those are what borrowing lends. The rest still holds: profiles, GPU types, GPUs
  per server, CPU and memory caps, the runtime limit and **budgets** (borrowing lends idle
  hardware, not money; a discount is ``rate_factor``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..settings.defaults import section

class BorrowRefused(Exception):
    """A request with ``preemptible`` from someone who may not borrow (403; the message says why)."""


# what a borrowed server's progress page and the form say about it
BORROWED_NOTE = ("Borrowed beyond your quota: this server may be stopped, after a warning, when someone "
                 "within their quota needs its GPUs. Save your work often.")

# the quota limits a borrowed request is not held to (see the module docstring)
SKIPPED_LIMITS = ("max_gpus", "max_servers")


@dataclass(frozen=True)
class Borrowing:
    enabled: bool = False
    groups: frozenset[str] = frozenset()  # hub groups whose members may borrow; empty: nobody
    rate_factor: float = 1.0  # a borrowed server's price: the usual rate times this
    grace: dt.timedelta = dt.timedelta(minutes=5)  # from the warning to the stop
    reclaim_after: dt.timedelta = dt.timedelta(minutes=10)  # a within-quota wait before reclaiming

    @classmethod
    def from_config(cls, queue: Mapping | None) -> Borrowing:
        """From the ``queue`` section (``queue.borrowing``), completed from DEFAULTS."""
        b = section("queue", queue)["borrowing"]
        return cls(bool(b["enabled"]), frozenset(b["groups"]), float(b["rate_factor"]),
                   dt.timedelta(minutes=float(b["grace_minutes"])),
                   dt.timedelta(minutes=float(b["reclaim_after_minutes"])))

    def allows(self, groups: Iterable[str]) -> bool:
        """Whether the groups may borrow, as far as this setting goes (see :meth:`refusal`)."""
        return self.enabled and bool(self.groups & set(groups))

    def refusal(self, groups: Iterable[str], placed_here: bool = True, queue_on: bool = True) -> str | None:
        """Why this user may not borrow (None: they may). ``placed_here``: gpulab places the
        GPUs (local, docker); on SLURM and Kubernetes the scheduler does, and has its own
        preemption. ``queue_on``: without gpulab's queue nobody within quota ever waits, so
        nothing borrowed could be taken back: borrowing would be a way round quotas."""
        if not self.enabled:
            return ("Borrowing GPUs beyond your quota ('preemptible') is switched off on this hub. "
                    "Leave 'preemptible' out to start within your quota, or ask an admin.")
        if not placed_here:
            return ("Borrowing GPUs ('preemptible') works only where gpulab places the GPUs (local and "
                    "docker backends); here the cluster's scheduler does. Leave 'preemptible' out.")
        if not queue_on:
            return ("Borrowing GPUs ('preemptible') needs the queue, which is switched off on this hub "
                    "(queue.enabled). Leave 'preemptible' out to start within your quota.")
        if not self.groups & set(groups):
            allowed = ", ".join(f"'{g}'" for g in sorted(self.groups)) or "no group"
            return (f"Only members of {allowed} may borrow GPUs beyond their quota ('preemptible'), and "
                    "you are not one. Leave 'preemptible' out to start within your quota, or ask an admin "
                    "to add you.")
        return None


def relaxed(limits):
    """``limits`` (a ``quota.Limits``) without the limits a borrowed request skips."""
    return dataclasses.replace(limits, **{name: None for name in SKIPPED_LIMITS})
