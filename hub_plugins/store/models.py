"""gpulab's own tables (never JupyterHub's). Every table name starts with ``gpulab_``.

Changing a model means adding a migration in ``migrations/versions`` (``make migration``).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, Integer, MetaData, String, UniqueConstraint
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
