"""Reconcile decisions, pure: what runs (the backend's answer), what gpulab holds (its tables) and
what the hub knows (its spawners) in; what to stop, free and close out.

The rules, in words:

- A server that runs but that no active spawner holds (by its spawn id), looked at twice, is an
  orphan: a hub died after starting it and before JupyterHub recorded it, or JupyterHub gave up
  on it. It is stopped, then its allocation freed. (Servers JupyterHub still lists at start-up are
  adopted before this runs: the spawner finds them while JupyterHub checks it, see the mixin.)
  Servers of an owner JupyterHub is still checking are left alone this round.
- An allocation is kept while its server runs, while a spawner holds it, or while its owner is
  busy without holding anything yet (a reservation in flight, a start-up check). Otherwise its
  server is gone: the allocation is freed and its usage record closed when it was last alive.
  Rows newer than the cut-off (taken before anything was read) are never touched.
- An open usage record with no allocation and nothing running is closed the same way.

"Looked at twice": the hub's spawners are read before and after the backend is listed, so a
spawn whose reservation lands in between is never mistaken for an orphan.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Found:
    """A server that really runs on the backend (a process tree, a container, a batch job)."""

    spawn_id: str
    user_name: str = ""
    server_name: str = ""
    handle: str = ""  # pid, container id or job id: what the adapter needs to stop it
    url: str = ""  # where it listens (for adoption)

    def describe(self) -> str:
        who = self.user_name + (f":{self.server_name}" if self.server_name else "")
        return f"{who or '?'} (spawn {self.spawn_id or '?'}, {self.handle})"


@dataclass(frozen=True)
class Row:
    """An allocation row (``gpulab_servers``)."""

    spawn_id: str
    user_id: int
    user_name: str
    server_name: str
    created_at: dt.datetime

    @property
    def owner(self) -> tuple[int, str]:
        return self.user_id, self.server_name


@dataclass(frozen=True)
class OpenRecord:
    """An open usage record (``gpulab_usage``, ``stopped_at`` NULL)."""

    spawn_id: str
    user_id: int
    user_name: str
    server_name: str
    started_at: dt.datetime

    @property
    def owner(self) -> tuple[int, str]:
        return self.user_id, self.server_name


@dataclass(frozen=True)
class Known:
    """What the hub's spawners say at one moment."""

    held: frozenset[str] = frozenset()  # spawn ids held by active spawners
    busy: frozenset[tuple[int, str]] = frozenset()  # owners active but holding nothing yet
    checking: frozenset[tuple[int, str]] = frozenset()  # owners JupyterHub is still checking
    checking_names: frozenset[tuple[str, str]] = frozenset()  # the same, by (user name, server)


@dataclass
class Plan:
    stop: list[Found] = field(default_factory=list)
    free: list[Row] = field(default_factory=list)  # allocations whose server is gone (or stopped here)
    close: list[OpenRecord] = field(default_factory=list)  # records with neither allocation nor server
    kept: int = 0

    @property
    def empty(self) -> bool:
        return not (self.stop or self.free or self.close)


def decide(found: list[Found], rows: list[Row], records: list[OpenRecord], before: Known, after: Known,
           cutoff: dt.datetime) -> Plan:
    plan = Plan()
    held = before.held | after.held
    busy = before.busy | after.busy | before.checking | after.checking
    row_of = {r.spawn_id: r for r in rows}
    checking_names = before.checking_names | after.checking_names

    stopping: set[str] = set()
    running: set[str] = set()
    for f in found:
        running.add(f.spawn_id)
        if f.spawn_id and f.spawn_id in held:
            continue
        row = row_of.get(f.spawn_id)
        if (row is not None and row.owner in (before.checking | after.checking)) or (
                (f.user_name, f.server_name) in checking_names):
            continue  # JupyterHub is checking (and maybe adopting) it right now
        if row is not None and row.created_at >= cutoff:
            continue  # reserved after we started looking: a spawn of this hub in flight
        plan.stop.append(f)
        stopping.add(f.spawn_id)

    for r in rows:
        if r.created_at >= cutoff:
            continue
        if r.spawn_id in stopping:
            plan.free.append(r)
        elif r.spawn_id in running or r.spawn_id in held or r.owner in busy:
            plan.kept += 1
        else:
            plan.free.append(r)

    for rec in records:
        if rec.spawn_id in row_of or rec.started_at >= cutoff:
            continue  # closed with its allocation, or too new to judge
        if rec.spawn_id in held or (rec.spawn_id in running and rec.spawn_id not in stopping):
            continue
        if rec.owner in busy and rec.spawn_id not in stopping:
            continue
        plan.close.append(rec)
    return plan
