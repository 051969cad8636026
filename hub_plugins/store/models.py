"""gpulab's own tables (never JupyterHub's). Every table name starts with ``gpulab_``.

Changing a model means adding a migration in ``migrations/versions`` (``make migration``).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (Boolean, Date, DateTime, Float, ForeignKey, Index, Integer, MetaData, String,
                        Text, UniqueConstraint, false)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """Naive UTC: what both SQLite and PostgreSQL ``timestamp`` columns store unambiguously."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ServerRecord(Base):
    """A server that holds resources: one row per running (or starting) server.

    ``(user_id, server_name)`` is unique: a server cannot hold two allocations at once.
    """

    __tablename__ = "gpulab_servers"
    __table_args__ = (UniqueConstraint("user_id", "server_name", name="uq_gpulab_servers_owner"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    user_name: Mapped[str] = mapped_column(String(255))
    server_name: Mapped[str] = mapped_column(String(255), default="")
    spawn_id: Mapped[str] = mapped_column(String(64), unique=True)
    profile: Mapped[str] = mapped_column(String(64), default="")
    gpu_type: Mapped[str] = mapped_column(String(128), default="")
    gpu_count: Mapped[int] = mapped_column(Integer, default=0)
    # GPU-equivalents as an exact fraction ("2/7"): sums of sevenths must not drift.
    equivalents: Mapped[str] = mapped_column(String(32), default="0")
    host: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # started beyond its user's quota ('preemptible'): counts against no quota, may be reclaimed
    borrowed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    devices: Mapped[list[DeviceAllocation]] = relationship(
        back_populates="server", cascade="all, delete-orphan", passive_deletes=True
    )


class DeviceAllocation(Base):
    """One allocated device. The primary key *is* the device: the database itself refuses to
    hand one device to two servers, whatever the application does."""

    __tablename__ = "gpulab_allocations"

    device_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    server_id: Mapped[int] = mapped_column(
        ForeignKey("gpulab_servers.id", ondelete="CASCADE"), index=True
    )
    host: Mapped[str] = mapped_column(String(255))
    gpu_type: Mapped[str] = mapped_column(String(128))
    visible_id: Mapped[str] = mapped_column(String(128))
    weight: Mapped[str] = mapped_column(String(32))
    allocated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    server: Mapped[ServerRecord] = relationship(back_populates="devices")


class UsageRecord(Base):
    """One server's life, for accounting. Opened when its GPUs are reserved, closed when it
    stops; ``last_seen_at`` is refreshed while it runs, so a record left open by a crash is closed
    at the last moment the server was known alive, never later."""

    __tablename__ = "gpulab_usage"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    spawn_id: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    user_name: Mapped[str] = mapped_column(String(255), index=True)
    server_name: Mapped[str] = mapped_column(String(255), default="")
    profile: Mapped[str] = mapped_column(String(64), default="")
    project: Mapped[str] = mapped_column(String(64), default="")
    gpu_type: Mapped[str] = mapped_column(String(128), default="")
    gpu_count: Mapped[int] = mapped_column(Integer, default=0)
    equivalents: Mapped[str] = mapped_column(String(32), default="0")
    devices: Mapped[str] = mapped_column(String(2048), default="")  # comma-separated visible ids
    device_keys: Mapped[str] = mapped_column(String(4096), default="")
    host: Mapped[str] = mapped_column(String(255), default="")
    rate_per_hour: Mapped[float] = mapped_column(Float, default=0.0)  # frozen at start
    minimum_seconds: Mapped[int] = mapped_column(Integer, default=60)
    runtime_limit_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    queued_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime)  # indexed with id: see below
    ready_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    last_seen_at: Mapped[dt.datetime] = mapped_column(DateTime)
    stopped_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    stop_reason: Mapped[str] = mapped_column(String(32), default="")
    # set by a service (culler, budgets, admin) just before it stops the server, so the record
    # says why it ended even though JupyterHub does not tell a spawner who stopped it
    pending_reason: Mapped[str] = mapped_column(String(255), default="")
    # who asked for the stop, where the hub said ('user:ann', 'admin:ada', 'service:idle-culler')
    stopped_by: Mapped[str] = mapped_column(String(255), default="")
    # GPU utilisation while allocated (efficiency) and energy, accumulated by the sampler
    util_sum: Mapped[float] = mapped_column(Float, default=0.0)
    util_samples: Mapped[int] = mapped_column(Integer, default=0)
    energy_wh: Mapped[float] = mapped_column(Float, default=0.0)
    idle_since: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    warned: Mapped[str] = mapped_column(String(255), default="")  # latest cull/budget warning
    # a closed record's whole charge, computed once by the charging rule after it closed
    # (UsageStore.settle), so that the database can sum a year of history; null while it runs
    # and until settled (readers then apply the same rule themselves)
    charged_until: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    charged_gpu_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    charged_cost: Mapped[float | None] = mapped_column(Float, nullable=True)
    # settled with the charge: the CSV text of the record's report line up to its energy, which
    # a year's export writes as it is ('' for a line no report shows; accounting/lines.py)
    report_head: Mapped[str | None] = mapped_column(Text, nullable=True)
    # a borrowed server (priced at queue.borrowing.rate_factor) and, once the culler chose to
    # take it back, when it stops (its warning went out; pending_reason says 'reclaimed')
    borrowed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    reclaim_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)

    __table_args__ = (
        Index("ix_gpulab_usage_user_started", "user_name", "started_at"),
        # the export's keyset order (UsageStore.page); by start alone, its first column
        Index("ix_gpulab_usage_started_id", "started_at", "id"),
        # sums over a range read settled records by where their charge ends, checking the start
        # in the index itself
        Index("ix_gpulab_usage_charged", "charged_until", "started_at"),
        Index("ix_gpulab_usage_stop_reason", "stop_reason"),
    )


class UsageDaily(Base):
    """Settled charges summed per day a server started, per user, GPU type and kind (written by
    ``settled.settle`` in the transaction that settles the records): the admin page's sums over
    a range read a row per user and day instead of every record."""

    __tablename__ = "gpulab_usage_daily"

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    user_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    gpu_type: Mapped[str] = mapped_column(String(128), primary_key=True)
    has_gpu: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    measured: Mapped[bool] = mapped_column(Boolean, primary_key=True)  # power measured, not nominal
    n: Mapped[int] = mapped_column(Integer, default=0)  # charged records
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    energy_wh: Mapped[float] = mapped_column(Float, default=0.0)
    eff_gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)  # efficiency x GPU-seconds
    eff_weight: Mapped[float] = mapped_column(Float, default=0.0)  # GPU-seconds of records with one


class UsageTotal(Base):
    """Each user's settled charges since the beginning (the metrics' counters)."""

    __tablename__ = "gpulab_usage_totals"

    user_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)


class Event(Base):
    """Things worth counting and showing: refusals, culls, warnings, accounting fail-opens."""

    __tablename__ = "gpulab_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)  # refused | culled | warned | fail_open | queued | dequeued | budget_low
    reason: Mapped[str] = mapped_column(String(64), default="")
    user_name: Mapped[str] = mapped_column(String(255), default="")
    server_name: Mapped[str] = mapped_column(String(255), default="")
    detail: Mapped[str] = mapped_column(String(2048), default="")
    value: Mapped[float] = mapped_column(Float, default=0.0)

    # the webhook notifier reads each person's events after their own place
    __table_args__ = (Index("ix_gpulab_events_user_name_id", "user_name", "id"),)


class LedgerEntry(Base):
    """Audit ledger: every change to a budget, a credit balance or an override (who, why,
    before and after)."""

    __tablename__ = "gpulab_ledger"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str] = mapped_column(String(255), index=True)  # user:ann, project:x, group:y, config
    action: Mapped[str] = mapped_column(String(64))
    before: Mapped[str] = mapped_column(String(4096), default="")
    after: Mapped[str] = mapped_column(String(4096), default="")
    reason: Mapped[str] = mapped_column(String(1024), default="")
    amount: Mapped[float] = mapped_column(Float, default=0.0)  # credits granted (budget unit)


class GPUSample(Base):
    """Recent utilisation samples per device (pruned after a few hours; aggregates live on the
    usage records)."""

    __tablename__ = "gpulab_gpu_samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_key: Mapped[str] = mapped_column(String(255), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    util: Mapped[float] = mapped_column(Float)
    memory_used_mib: Mapped[float] = mapped_column(Float, default=0.0)
    power_w: Mapped[float | None] = mapped_column(Float, nullable=True)


class QueueEntry(Base):
    """A request waiting for GPUs. Survives hub restarts; holds no GPU."""

    __tablename__ = "gpulab_queue"
    __table_args__ = (UniqueConstraint("user_id", "server_name", name="uq_gpulab_queue_owner"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    user_name: Mapped[str] = mapped_column(String(255))
    server_name: Mapped[str] = mapped_column(String(255), default="")
    options: Mapped[str] = mapped_column(String(4096), default="{}")  # the request, JSON
    gpu_types: Mapped[str] = mapped_column(String(1024), default="")  # candidates, comma-separated
    gpu_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    state: Mapped[str] = mapped_column(String(16), default="waiting")  # waiting | cancelled
    heartbeat_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)  # a spawner is waiting on it


class NotifyPrefs(Base):
    """How a person wants to be told (their own choice, on their usage page): one row per user."""

    __tablename__ = "gpulab_notify_prefs"

    user_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), default="")  # "" = no email
    events: Mapped[str] = mapped_column(String(255), default="")  # comma-separated notify.compose.EVENTS
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    webhook: Mapped[str] = mapped_column(String(2000), default="")  # "" = none
    # the last event this person's webhook was told or skipped: each person's own place, so that
    # one chat server that is down holds back only its owner's messages (docs/notifications.md)
    webhook_last_id: Mapped[int] = mapped_column(Integer, default=0)


class NotifyCursor(Base):
    """The last ``gpulab_events`` row the notifier has handled (one row): events are told once,
    and a notifier that starts for the first time does not tell the whole history."""

    __tablename__ = "gpulab_notify_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer, default=0)
