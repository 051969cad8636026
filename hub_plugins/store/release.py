"""Releases: what stopped servers held freed and their usage records closed, several in one
transaction.

A stop's release is one write transaction. At 50 stops at once that transaction was the whole of
gpulab's extra CPU on a stop, measured on the overhead benchmark's hub: a trip to a worker thread
that ran nothing left the hub's CPU over a round's 200 stops at stock's (2.6-2.8 s against
2.5-2.7 s), the transaction in it made it 3.1 s. Its SQL takes 0.3 ms alone, but in a worker
thread each of its statements gave the GIL up and waited to get it back from the busy loop: the
trip took ~110 ms (p50) and ~2 ms of the hub's CPU.

So the hub writes a stop's release on its loop, at once, where SQLite's write lock is free this
moment (``Database.write_now``; its statements on SQLite's own cursor, ``driver.py``: 0.36 ms of
CPU a stop on the benchmark's busy hub, 0.68 ms through SQLAlchemy's execution); else in a worker
thread, and the releases that arrive meanwhile go together in the next transaction
(``hub_plugins/batching.py``). Here each
statement serves all of a group: one SELECT of their servers, one of their open usage records,
one UPDATE (executemany) and one DELETE each for their devices and servers.

:func:`release_in` is the transaction's body; the requests are decided in order, each on what
the ones before it left (two for one owner: the second finds nothing left).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .driver import DriverStatements
from .models import DeviceAllocation, ServerRecord, UsageRecord, utcnow
from .usage import STOP_REASONS

if TYPE_CHECKING:
    from .allocator import Owner

_S, _A, _U = ServerRecord.__table__, DeviceAllocation.__table__, UsageRecord.__table__
# Built once: constructing SQLAlchemy statements costs more than SQLite executing them.
_SERVERS_OF = sa.select(_S.c.id, _S.c.spawn_id, _S.c.user_id, _S.c.server_name).where(
    _S.c.user_id.in_(sa.bindparam("uids", expanding=True))).order_by(_S.c.id)
_OPEN_USAGE_OF = sa.select(_U.c.id, _U.c.spawn_id, _U.c.user_id, _U.c.server_name, _U.c.last_seen_at,
                           _U.c.ready_at, _U.c.pending_reason).where(
    _U.c.user_id.in_(sa.bindparam("uids", expanding=True)), _U.c.stopped_at.is_(None)).order_by(_U.c.id)
# only an open record is closed: a record is closed exactly once, whoever races
CLOSE_USAGE = sa.update(_U).where(_U.c.id == sa.bindparam("rid"), _U.c.stopped_at.is_(None)).values(
    stopped_at=sa.bindparam("end"), stop_reason=sa.bindparam("why"), stopped_by=sa.bindparam("by"))
DROP_DEVICES = sa.delete(_A).where(_A.c.server_id.in_(sa.bindparam("ids", expanding=True))).returning(
    _A.c.device_key, _A.c.server_id)
DROP_SERVERS = sa.delete(_S).where(_S.c.id.in_(sa.bindparam("ids", expanding=True)))


@dataclass(frozen=True)
class ReleaseRequest:
    """One release: everything ``owner`` holds (only ``spawn_id``'s if given). ``alive_for(spawn
    ids it holds)`` gives when they were last seen alive (a moment, or spawn id -> moment, or
    None), or False to keep them all and change nothing. ``reason``: what the hub saw (user,
    crashed, failed); ``stopped_by``: who asked, where the hub said."""

    owner: Owner
    alive_for: Callable[[list[str]], Any]
    reason: str = "user"
    stopped_by: str = ""
    spawn_id: str | None = None


# (the owner's spawn ids, the device keys freed; None when kept and nothing changed), or the
# exception its alive_for raised (nothing of it changed)
Released = tuple[list[str], "list[str] | None"]


def stop_reason(pending: str, fallback: str) -> str:
    """A service's pending reason ('culled: GPU idle 30 min') wins over what the hub saw."""
    head = pending.split(":", 1)[0].strip()
    return head if head in STOP_REASONS else fallback


def release_in(conn, requests: Sequence[ReleaseRequest]) -> list[Released | Exception]:
    """The requests' releases, inside a write transaction the caller holds; one result each, in
    order. A request whose ``alive_for`` raised gets that exception and changes nothing."""
    run = _Statements(conn)
    uids = sorted({r.owner.user_id for r in requests})
    servers = run.all(_SERVERS_OF, {"uids": uids})
    records = run.all(_OPEN_USAGE_OF, {"uids": uids})
    now = utcnow()
    dropped: set[int] = set()
    closed: set[int] = set()
    closes: list[dict] = []
    outcome: list[tuple[list[str], list[int]] | None | Exception] = []
    for req in requests:
        where = (req.owner.user_id, req.owner.server_name)
        mine = [s for s in servers if (s.user_id, s.server_name) == where and s.id not in dropped]
        spawns = [s.spawn_id for s in mine]
        try:
            seen_alive_at = req.alive_for(spawns)
        except Exception as e:  # this request's own failure: the others go ahead
            outcome.append(e)
            continue
        if seen_alive_at is False:
            outcome.append((spawns, None))
            continue
        for rec in records:
            if (rec.user_id, rec.server_name) != where or rec.id in closed:
                continue
            if req.spawn_id and rec.spawn_id != req.spawn_id:
                continue
            closed.add(rec.id)
            closes.append(_closing(rec, now, req, seen_alive_at))
        ids = [s.id for s in mine if not req.spawn_id or s.spawn_id == req.spawn_id]
        dropped.update(ids)
        outcome.append((spawns, ids))
    if closes:
        run.many(CLOSE_USAGE, closes)
    keys: dict[int, list[str]] = {}
    if dropped:
        for key, server_id in run.all(DROP_DEVICES, {"ids": sorted(dropped)}):
            keys.setdefault(server_id, []).append(key)
        run.all(DROP_SERVERS, {"ids": sorted(dropped)})
    return [o if isinstance(o, Exception) or o[1] is None
            else (o[0], sorted(k for server_id in o[1] for k in keys.get(server_id, ())))
            for o in outcome]


_DRIVERS: dict[str, DriverStatements] = {}  # by dialect name: every SQLite engine compiles alike


class _Statements:
    """The release's statements on ``conn``: on SQLite on its driver's cursor (``driver.py``:
    the usual release runs on the hub's loop, where SQLAlchemy's execution cost 3x SQLite's),
    elsewhere through SQLAlchemy."""

    def __init__(self, conn):
        self.conn = conn
        self.driver = None
        if conn.dialect.name == "sqlite":
            self.driver = _DRIVERS.get("sqlite") or _DRIVERS.setdefault("sqlite", DriverStatements(conn.dialect))

    def all(self, stmt, params: dict) -> list:
        if self.driver is not None:
            return self.driver.all(self.conn, stmt, params)
        result = self.conn.execute(stmt, params)
        return result.all() if result.returns_rows else []

    def many(self, stmt, params: list[dict]) -> None:
        if self.driver is not None:
            self.driver.many(self.conn, stmt, params)
        else:
            self.conn.execute(stmt, params)


def _closing(rec, now, req: ReleaseRequest, seen_alive_at) -> dict:
    """The UPDATE's parameters that close one usage record: at ``now``, or for a crashed server
    at the last moment it was seen alive; one that never came up as 'failed' (not charged)."""
    end = now
    why = stop_reason(rec.pending_reason, req.reason)
    if why == "crashed":
        seen = seen_alive_at.get(rec.spawn_id) if isinstance(seen_alive_at, dict) else seen_alive_at
        alive = [t for t in (rec.last_seen_at, seen) if t is not None]
        end = min(now, max(alive)) if alive else now
    return dict(rid=rec.id, end=end, by=req.stopped_by[:255],
                why=why if rec.ready_at or why != "crashed" else "failed")
