"""The allocator: persistent, race-safe GPU allocations in gpulab's own tables.

One serialised transaction per decision: read what the user and everyone else holds, ask the
pure quota check and the pure placement, write the rows. Two spawns, in one process or in many,
can never receive the same device: the transaction is serialised (see ``db.py``) *and* each
device is a primary key.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import sqlalchemy as sa

from ..gpu.devices import Device, Inventory
from ..gpu.choice import pick_type
from ..gpu.placement import place
from ..quota.decision import Decision, ServerUse
from .db import Database
from .models import DeviceAllocation, ServerRecord, UsageRecord, utcnow
from .release import DROP_DEVICES, DROP_SERVERS, Released, ReleaseRequest, release_in

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
    count: int = -1  # GPUs granted; equals len(devices) unless the engine places them
    borrowed: bool = False  # beyond quota ('preemptible'): may be reclaimed

    def __post_init__(self):
        if self.count < 0:
            object.__setattr__(self, "count", len(self.devices))

    @property
    def visible_ids(self) -> list[str]:
        """Device ids for CUDA_VISIBLE_DEVICES, each once: k shares of one GPU are that GPU."""
        return list(dict.fromkeys(d.visible_id for d in self.devices))

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


@dataclass(frozen=True)
class UsageTerms:
    """What the usage record opened with an allocation needs (its price is fixed at start)."""

    pricing: object  # accounting.pricing.Pricing
    project: str = ""
    runtime_limit_s: int | None = None
    queued_seconds: float = 0.0
    rate_factor: float = 1.0  # the price's multiplier (queue.borrowing.rate_factor for borrowed servers)


@dataclass(frozen=True)
class ReservationPlan:
    """Everything one reservation needs, decided before the serialised transaction (the type
    candidates, the quota rule, the usage terms): built by the core, taken whole by
    :meth:`Allocator.reserve` and by the queue, which reserves inside its own transaction."""

    profile: str
    types: tuple[str, ...]  # candidates, in order of preference
    count: int  # GPUs asked for (0: a CPU-only server)
    inventory: Inventory
    quota_check: Callable[[list[ServerUse], str], Decision] | None = None
    reserve: bool = True  # False: engine placement (the scheduler picks the devices)
    terms: UsageTerms | None = None
    borrowed: bool = False  # beyond quota ('preemptible'): the quota rule given skips the totals


@dataclass
class Snapshot:
    """Everything held right now (for availability, quotas and admin views)."""

    servers: list[ServerRecord] = field(default_factory=list)
    taken: dict[str, int] = field(default_factory=dict)  # device key -> server id

    def usage_of(self, user_id: int, exclude_server: str | None = None) -> list[ServerUse]:
        """What counts against the user's quota: borrowed servers do not (they are beyond it)."""
        return [
            server_use(s) for s in self.servers
            if s.user_id == user_id and s.server_name != exclude_server and not s.borrowed
        ]

    def borrowed_of(self, user_id: int) -> list[ServerUse]:
        return [server_use(s) for s in self.servers if s.user_id == user_id and s.borrowed]


def _quota_usage(mine, owner: Owner) -> list[ServerUse]:
    """What counts against the owner's quota of their rows (``_MINE``): their other servers, but
    borrowed ones, which never block spawns within the quota (they are reclaimed first)."""
    return [ServerUse(r.server_name, r.profile, r.gpu_type, r.gpu_count, Fraction(r.equivalents))
            for r in mine if r.server_name != owner.server_name and not r.borrowed]


def server_use(s: ServerRecord) -> ServerUse:
    """One server as quotas count it (callers leave borrowed servers out: see ``allocate_in``)."""
    return ServerUse(s.server_name, s.profile, s.gpu_type, s.gpu_count, Fraction(s.equivalents))


_S, _A = ServerRecord.__table__, DeviceAllocation.__table__
# Built once: constructing SQLAlchemy statements costs more than SQLite executing them.
_MINE = sa.select(_S.c.id, _S.c.server_name, _S.c.spawn_id, _S.c.profile, _S.c.gpu_type, _S.c.gpu_count,
                  _S.c.equivalents, _S.c.borrowed).where(_S.c.user_id == sa.bindparam("uid"))
_TAKEN = sa.select(_A.c.device_key)
_ADD_SERVER = sa.insert(_S).returning(_S.c.id)
_ADD_DEVICE = sa.insert(_A)
_ADD_USAGE = sa.insert(UsageRecord.__table__)


class Allocator:
    def __init__(self, db: Database):
        self.db = db

    # -- decisions -------------------------------------------------------------------------
    def allocate(
        self,
        owner: Owner,
        profile: str,
        gpu_types: str | Sequence[str],
        count: int,
        inventory: Inventory,
        quota_check: Callable[[list[ServerUse], str], Decision] | None = None,
        reserve: bool = True,
        usage: UsageTerms | None = None,
    ) -> Allocation:
        """Reserve ``count`` devices for ``owner`` (0 = a CPU-only server, which still counts as a
        server), of the first of ``gpu_types`` that fits. ``quota_check(usage, gpu_type)`` sees
        the user's other servers. Raises :class:`QuotaRefused` or :class:`NoCapacity`.

        ``reserve=False`` (engine placement: SLURM, Kubernetes) records the count for quotas and
        accounting but reserves no device and never refuses for capacity: the engine's scheduler
        places the job and queues it when the cluster is full."""
        types = (gpu_types,) if isinstance(gpu_types, str) else tuple(gpu_types)
        return self.reserve(owner, ReservationPlan(profile, types, count, inventory, quota_check, reserve, usage))

    def reserve(self, owner: Owner, plan: ReservationPlan) -> Allocation:
        """:meth:`allocate` for a :class:`ReservationPlan`, in its own serialised transaction."""
        if plan.count and not plan.types:
            raise ValueError("a GPU request needs at least one candidate type")

        def run():
            with self.db.write_conn(serial=True) as conn:
                return self.allocate_in(conn, owner, plan)

        return self.db.retrying(run)

    def refusal_in(self, conn, owner: Owner, plan: ReservationPlan) -> Decision | None:
        """The quota's refusal of ``plan`` whichever of its types it would get (the first type's
        reason), or None where one of them is allowed. Inside the caller's transaction: the queue
        asks before it decides whose turn it is, so that a request over quota is refused at
        once, as when nobody waits, instead of waiting its turn to be refused."""
        if not plan.quota_check or not plan.count:
            return None
        usage = _quota_usage(conn.execute(_MINE, {"uid": owner.user_id}).all(), owner)
        decisions = [plan.quota_check(usage, t) for t in plan.types]
        return None if not decisions or any(d.allowed for d in decisions) else decisions[0]

    def allocate_in(self, conn, owner: Owner, plan: ReservationPlan,
                    chosen: tuple[str, tuple[Device, ...]] | None = None) -> Allocation:
        """:meth:`reserve` inside a serialised transaction the caller holds (the queue decides
        and allocates in one transaction). ``chosen``: the type and devices the queue's
        discipline picked on this transaction's state, taken as they are."""
        profile, types, count, inventory = plan.profile, list(plan.types), plan.count, plan.inventory
        quota_check, reserve, terms = plan.quota_check, plan.reserve, plan.terms
        # Core statements on a bare connection: this runs for every spawn and every queue
        # decision, and the ORM's unit of work costs more than the SQL itself.
        mine = conn.execute(_MINE, {"uid": owner.user_id}).all()
        stale = [r for r in mine if r.server_name == owner.server_name]
        if stale:
            # JupyterHub never starts a server twice, so a row here is left over from a life
            # that ended without release (e.g. a hub killed mid-stop): reclaim it.
            log.warning("releasing stale allocation of %s (spawn %s)", owner.label, stale[0].spawn_id)
            ids = [r.id for r in stale]
            conn.execute(DROP_DEVICES, {"ids": ids}).all()
            conn.execute(DROP_SERVERS, {"ids": ids})
        usage = _quota_usage(mine, owner)
        gpu_type, free = "", []
        if count and chosen is not None:
            gpu_type, free = chosen[0], list(chosen[1])
        elif count:
            # the type is chosen on the same snapshot the devices are placed on
            free = inventory.free(set(conn.execute(_TAKEN).scalars()))
            gpu_type, _fits = pick_type(types, free, count)
        decision = quota_check(usage, gpu_type) if quota_check else Decision(True)
        if not decision.allowed:
            raise QuotaRefused(decision)
        devices: tuple[Device, ...] = ()
        if count and reserve:
            chosen = place(free, count, gpu_type)
            if chosen is None:
                raise NoCapacity(
                    gpu_type, count, sum(1 for d in free if d.gpu_type == gpu_type),
                    len(inventory.of_type(gpu_type)),
                )
            devices = chosen
        if reserve:
            equivalents = sum((d.weight for d in devices), Fraction(0))
        else:
            same = inventory.of_type(gpu_type) if count else []
            equivalents = (same[0].weight if same else Fraction(1)) * count
        spawn_id = uuid.uuid4().hex
        now = utcnow()
        server_id = conn.execute(
            _ADD_SERVER,
            dict(user_id=owner.user_id, user_name=owner.user_name, server_name=owner.server_name,
                 spawn_id=spawn_id, profile=profile, gpu_type=gpu_type if count else "",
                 gpu_count=count, equivalents=str(equivalents),
                 host=devices[0].host if devices else "", created_at=now, borrowed=plan.borrowed),
        ).scalar_one()
        if devices:
            # the device key is the primary key: a second holder is impossible
            conn.execute(_ADD_DEVICE, [
                dict(device_key=d.key, server_id=server_id, host=d.host, gpu_type=d.gpu_type,
                     visible_id=d.visible_id, weight=str(d.weight), allocated_at=now)
                for d in devices
            ])
        if terms is not None:
            # opened in the same transaction: no reservation ever lacks its usage record
            same = inventory.of_type(gpu_type) if count else []
            weight = same[0].weight if same else Fraction(1)
            conn.execute(_ADD_USAGE, dict(
                spawn_id=spawn_id, user_id=owner.user_id, user_name=owner.user_name,
                server_name=owner.server_name, profile=profile, project=terms.project,
                gpu_type=gpu_type if count else "", gpu_count=count, equivalents=str(equivalents),
                devices=",".join(d.visible_id for d in devices), device_keys=",".join(d.key for d in devices),
                host=devices[0].host if devices else "",
                rate_per_hour=terms.pricing.hourly(gpu_type, count, weight) * terms.rate_factor,
                borrowed=plan.borrowed,
                minimum_seconds=terms.pricing.minimum_seconds, runtime_limit_s=terms.runtime_limit_s,
                queued_seconds=terms.queued_seconds, started_at=now, last_seen_at=now,
                stop_reason="", pending_reason="", stopped_by="", util_sum=0.0, util_samples=0, energy_wh=0.0,
                warned="",
            ))
        return Allocation(spawn_id, owner, profile, gpu_type if count else "", devices, equivalents,
                          decision.warnings, count, plan.borrowed)

    def release(self, owner: Owner, spawn_id: str | None = None, reason: str = "user",
                seen_alive_at: dt.datetime | dict[str, dt.datetime] | None = None, stopped_by: str = "") -> list[str]:
        """Free what ``owner`` holds (only ``spawn_id``'s if given) and close its usage record in
        the same transaction. Idempotent. Returns the device keys.

        ``reason`` is what the hub saw (user, crashed, failed); a reason a service noted before
        stopping the server wins. A crashed server's record closes at the last moment it was seen
        alive (``seen_alive_at``, or per spawn id when a dict, or its last heartbeat), not when
        the crash was noticed. ``stopped_by`` is who asked for the stop, where the hub said."""
        return self._one(ReleaseRequest(owner, lambda _spawns: seen_alive_at, reason, stopped_by, spawn_id))[1]

    def release_checked(self, owner: Owner, alive_for: Callable, reason: str = "user",
                        stopped_by: str = "") -> tuple[list[str], list[str] | None]:
        """``release`` of all ``owner`` holds, asked first: ``alive_for(spawn ids it holds)`` gives
        ``seen_alive_at`` for them, or False to keep them (something of them may still run: the
        caller stops it and releases then). Returns (those spawn ids, the device keys, or None when
        kept and nothing changed). The look and the release are one transaction, so what is freed
        is what was looked at: a stop's one trip (``spawners/recovery.py``)."""
        return self._one(ReleaseRequest(owner, alive_for, reason, stopped_by))

    def release_many(self, requests: Sequence[ReleaseRequest]) -> list[Released | Exception]:
        """Several releases in one transaction (``release.py``: the stops that arrive together);
        one result per request, or the exception that failed it. Where the group's transaction
        fails as a whole, each request is tried again in one of its own, so that one request
        never fails the others."""
        try:
            return self.db.retrying(lambda: self._release(requests))
        except Exception as e:
            if len(requests) == 1:
                return [e]
            log.warning("%d releases in one transaction failed (%s); each in its own", len(requests), e)
        out: list[Released | Exception] = []
        for req in requests:
            try:
                out += self.db.retrying(lambda req=req: self._release([req]))
            except Exception as e:
                out.append(e)
        return out

    def release_many_now(self, requests: Sequence[ReleaseRequest]) -> list[Released | Exception] | None:
        """:meth:`release_many` on the caller's thread without waiting (``Database.write_now``),
        or None where it cannot be written this moment (SQLite's write lock is taken, the
        database failed, PostgreSQL): then the caller writes them in a worker thread."""
        try:
            with self.db.write_now() as conn:
                return None if conn is None else release_in(conn, requests)
        except sa.exc.DBAPIError as e:
            log.debug("releases not written at once (%s): in a worker thread", e)
            return None

    def _one(self, request: ReleaseRequest) -> Released:
        (result,) = self.db.retrying(lambda: self._release([request]))
        if isinstance(result, Exception):
            raise result
        return result

    def _release(self, requests: Sequence[ReleaseRequest]) -> list[Released | Exception]:
        with self.db.write_conn() as conn:
            return release_in(conn, requests)

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
    def spawns_of(self, owner: Owner) -> list[str]:
        """Spawn ids of the allocations ``owner`` holds (one, unless a stale row is left)."""

        def run():
            with self.db.read() as s:
                return list(s.scalars(sa.select(ServerRecord.spawn_id).where(
                    ServerRecord.user_id == owner.user_id, ServerRecord.server_name == owner.server_name)))

        return self.db.retrying(run)

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
