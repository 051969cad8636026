"""The allocator: persistent, race-safe GPU allocations in gpulab's own tables.

One serialised transaction per decision: read what the user and everyone else holds, ask the
pure quota check and the pure placement, write the rows. Two spawns, in one process or in many,
can never receive the same device: the transaction is serialised (see ``db.py``) *and* each
device is a primary key.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..gpu.devices import Device, Inventory
from ..gpu.placement import place
from ..quota.decision import Decision, ServerUse
from .db import Database
from .models import DeviceAllocation, ServerRecord, utcnow

log = logging.getLogger("gpulab.allocator")


@dataclass(frozen=True)
class Owner:
    """Whose server: JupyterHub's user id (stable across renames), its name, the server name."""

    user_id: int
    user_name: str
    server_name: str = ""

    @property
    def label(self) -> str:
        return f"{self.user_name}:{self.server_name}" if self.server_name else self.user_name


@dataclass(frozen=True)
class Allocation:
    spawn_id: str
    owner: Owner
    profile: str
    gpu_type: str
    devices: tuple[Device, ...]
    equivalents: Fraction
    warnings: tuple[str, ...] = ()

    @property
    def visible_ids(self) -> list[str]:
        return [d.visible_id for d in self.devices]

    @property
    def host(self) -> str:
        return self.devices[0].host if self.devices else ""


class QuotaRefused(Exception):
    def __init__(self, decision: Decision):
        super().__init__(decision.message)
        self.decision = decision


class NoCapacity(Exception):
    def __init__(self, gpu_type: str, count: int, free: int, total: int):
        self.gpu_type, self.count, self.free, self.total = gpu_type, count, free, total
        super().__init__(f"{count} x {gpu_type} requested, {free} free of {total}")


@dataclass
class Snapshot:
    """Everything held right now (for availability, quotas and admin views)."""

    servers: list[ServerRecord] = field(default_factory=list)
    taken: dict[str, int] = field(default_factory=dict)  # device key -> server id

    def usage_of(self, user_id: int, exclude_server: str | None = None) -> list[ServerUse]:
        return [
            server_use(s) for s in self.servers if s.user_id == user_id and s.server_name != exclude_server
        ]


def server_use(s: ServerRecord) -> ServerUse:
    return ServerUse(s.server_name, s.profile, s.gpu_type, s.gpu_count, Fraction(s.equivalents))


class Allocator:
    def __init__(self, db: Database):
        self.db = db

    # -- decisions -------------------------------------------------------------------------
    def allocate(
        self,
        owner: Owner,
        profile: str,
        gpu_type: str,
        count: int,
        inventory: Inventory,
        quota_check: Callable[[list[ServerUse]], Decision] | None = None,
    ) -> Allocation:
        """Reserve ``count`` devices of ``gpu_type`` for ``owner`` (0 = a CPU-only server, which
        still counts as a server). Raises :class:`QuotaRefused` or :class:`NoCapacity`."""
        return self.db.retrying(
            lambda: self._allocate(owner, profile, gpu_type, count, inventory, quota_check)
        )

    def _allocate(self, owner, profile, gpu_type, count, inventory, quota_check) -> Allocation:
        with self.db.write(serial=True) as s:
            stale = s.scalars(
                sa.select(ServerRecord).where(
                    ServerRecord.user_id == owner.user_id, ServerRecord.server_name == owner.server_name
                )
            ).all()
            for row in stale:
                # JupyterHub never starts a server twice, so a row here is left over from a life
                # that ended without release (e.g. a hub killed mid-stop): reclaim it.
                log.warning("releasing stale allocation of %s (spawn %s)", owner.label, row.spawn_id)
                s.delete(row)  # its device rows go with it (ON DELETE CASCADE)
            s.flush()
            usage = [
                server_use(r)
                for r in s.scalars(sa.select(ServerRecord).where(ServerRecord.user_id == owner.user_id))
            ]
            decision = quota_check(usage) if quota_check else Decision(True)
            if not decision.allowed:
                raise QuotaRefused(decision)
            devices: tuple[Device, ...] = ()
            if count:
                taken = set(s.scalars(sa.select(DeviceAllocation.device_key)))
                free = inventory.free(taken)
                chosen = place(free, count, gpu_type)
                if chosen is None:
                    raise NoCapacity(
                        gpu_type, count, sum(1 for d in free if d.gpu_type == gpu_type),
                        len(inventory.of_type(gpu_type)),
                    )
                devices = chosen
            equivalents = sum((d.weight for d in devices), Fraction(0))
            row = ServerRecord(
                user_id=owner.user_id,
                user_name=owner.user_name,
                server_name=owner.server_name,
                spawn_id=uuid.uuid4().hex,
                profile=profile,
                gpu_type=gpu_type if count else "",
                gpu_count=count,
                equivalents=str(equivalents),
                host=devices[0].host if devices else "",
                created_at=utcnow(),
            )
            s.add(row)
            s.flush()
            for d in devices:
                s.add(
                    DeviceAllocation(
                        device_key=d.key,
                        server_id=row.id,
                        host=d.host,
                        gpu_type=d.gpu_type,
                        visible_id=d.visible_id,
                        weight=str(d.weight),
                    )
                )
            try:
                s.flush()
            except IntegrityError:  # pragma: no cover - the serial lock makes this unreachable
                log.error("device already allocated despite the lock; refusing %s", owner.label)
                raise NoCapacity(gpu_type, count, 0, len(inventory.of_type(gpu_type))) from None
            return Allocation(
                row.spawn_id, owner, profile, gpu_type if count else "", devices, equivalents,
                decision.warnings,
            )

    def release(self, owner: Owner, spawn_id: str | None = None) -> list[str]:
        """Free what ``owner`` holds (only ``spawn_id``'s if given). Idempotent. Returns the keys."""
        return self.db.retrying(lambda: self._release(owner, spawn_id))

    def _release(self, owner: Owner, spawn_id: str | None) -> list[str]:
        with self.db.write() as s:
            q = sa.select(ServerRecord).where(
                ServerRecord.user_id == owner.user_id, ServerRecord.server_name == owner.server_name
            )
            if spawn_id:
                q = q.where(ServerRecord.spawn_id == spawn_id)
            rows = s.scalars(q).all()
            return self._delete(s, rows)

    @staticmethod
    def _delete(s, rows: Iterable[ServerRecord]) -> list[str]:
        keys: list[str] = []
        for row in rows:
            keys += [d.device_key for d in row.devices]
            s.delete(row)  # cascades to its device rows
        return keys

    def reconcile(self, keep: Callable[[ServerRecord], bool], created_before) -> list[ServerRecord]:
        """Free every server row created before ``created_before`` that ``keep`` rejects.

        ``keep`` is decided by the caller (the hub knows which servers are alive); rows created
        after the caller's snapshot are never touched, so an in-flight spawn is safe.
        """

        def run():
            with self.db.write() as s:
                rows = s.scalars(sa.select(ServerRecord).where(ServerRecord.created_at < created_before)).all()
                gone = [r for r in rows if not keep(r)]
                for r in gone:
                    log.warning(
                        "reconcile: freeing %s:%s (spawn %s, %d GPUs): its server is gone",
                        r.user_name, r.server_name, r.spawn_id, r.gpu_count,
                    )
                self._delete(s, gone)
                return gone

        return self.db.retrying(run)

    # -- reads -----------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        def run():
            with self.db.read() as s:
                servers = s.scalars(sa.select(ServerRecord).order_by(ServerRecord.id)).all()
                taken = dict(s.execute(sa.select(DeviceAllocation.device_key, DeviceAllocation.server_id)).all())
                return Snapshot(list(servers), taken)

        return self.db.retrying(run)

    def holdings(self) -> dict[str, tuple[ServerRecord, list[DeviceAllocation]]]:
        """spawn_id -> (server row, its device rows); for admin views and services."""

        def run():
            with self.db.read() as s:
                out = {}
                for r in s.scalars(sa.select(ServerRecord).order_by(ServerRecord.id)):
                    out[r.spawn_id] = (r, list(r.devices))
                return out

        return self.db.retrying(run)
