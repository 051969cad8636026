"""Quota overrides managed by admins (through the quotas service), and the audit trail of every
change, in gpulab's own tables.

Overrides from gpulab.yaml (``quotas.overrides``) stay in the config; these are the ones admins add
and remove while the hub runs. ``GPULab.db_overrides`` reads them at every spawn and form, so a
change takes effect at the next spawn. Each change writes its audit row in the same transaction:
there is no override change without its record (who, when, before/after, why).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import JSON, Date, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..quota.limits import Override
from ..settings.errors import ConfigError
from ..settings.schema import LIMITS
from ..settings.validate import validate
from .db import Database
from .models import Base, utcnow

log = logging.getLogger("gpulab")


class OverrideRecord(Base):
    __tablename__ = "gpulab_quota_overrides"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_name: Mapped[str] = mapped_column(String(255), index=True)
    limits: Mapped[dict] = mapped_column(JSON)  # the limit keys it replaces, config form
    expires: Mapped[dt.date | None] = mapped_column(Date, nullable=True)  # until 00:00 UTC that day
    reason: Mapped[str] = mapped_column(Text)
    approved_by: Mapped[str] = mapped_column(String(255))
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class AuditRecord(Base):
    __tablename__ = "gpulab_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(255))  # who made the change
    action: Mapped[str] = mapped_column(String(64))  # e.g. override.create, override.remove
    target: Mapped[str] = mapped_column(String(255), index=True)  # the user it is about
    object_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")


def override_id(record_id: int) -> str:
    return f"db:{record_id}"


def record_id(ident: str) -> int | None:
    """'db:12' (or '12') -> 12; anything else (a config override's id, non-ASCII digits, a number
    past what the column holds) -> None."""
    text = ident.removeprefix("db:")
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        return None
    return int(text)


def as_dict(r: OverrideRecord) -> dict:
    problem = row_problem(r)
    out = {
        "id": override_id(r.id),
        "source": "admin",
        "user": r.user_name,
        "limits": {} if problem else dict(r.limits),  # never NaN in a JSON answer
        "expires": r.expires.isoformat() if r.expires else None,
        "reason": r.reason,
        "approved_by": r.approved_by,
        "created_by": r.created_by,
        "created_at": r.created_at.replace(tzinfo=dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if problem:
        out["invalid"] = f"not applied: {problem}; remove it and add a valid one"
    return out


def _finite(value):
    """An audit row's before/after as JSON can carry it (NaN from rows of older versions)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def audit_dict(a: AuditRecord) -> dict:
    return {
        "id": a.id,
        "at": a.at.replace(tzinfo=dt.timezone.utc).isoformat(timespec="seconds"),
        "actor": a.actor,
        "action": a.action,
        "target": a.target,
        "object_id": a.object_id,
        "before": _finite(a.before),
        "after": _finite(a.after),
        "reason": a.reason,
    }


def row_problem(r: OverrideRecord) -> str | None:
    """Why a stored override cannot be applied (None if it can). Rows written before the quotas
    service validated every number (a NaN or 1e308 limit) stay in databases: they are skipped, so
    that they never break the spawns and quota pages of their user, and listed for removal."""
    if not isinstance(r.limits, dict):
        return "its limits are not a mapping"
    try:
        validate(r.limits, LIMITS, "limits")
    except ConfigError as e:
        return str(e).replace("limits is not valid:\n  ", "").replace("\n  ", "; ")
    return None


def to_override(r: OverrideRecord) -> Override:
    return Override(r.user_name, dict(r.limits), r.expires, r.reason, r.approved_by, override_id(r.id))


@dataclass
class OverrideStore:
    db: Database

    # -- reads ---------------------------------------------------------------------------------
    def for_user(self, user_name: str, today: dt.date | None = None) -> tuple[Override, ...]:
        """The user's overrides that have not expired (what quota resolution needs)."""
        today = today or dt.datetime.now(dt.timezone.utc).date()

        def run():
            with self.db.read() as s:
                rows = s.scalars(
                    sa.select(OverrideRecord)
                    .where(OverrideRecord.user_name == user_name)
                    .where(sa.or_(OverrideRecord.expires.is_(None), OverrideRecord.expires > today))
                    .order_by(OverrideRecord.id)
                ).all()
                out = []
                for r in rows:
                    problem = row_problem(r)
                    if problem:
                        log.warning("gpulab: override %s of %s is ignored: %s", override_id(r.id), r.user_name, problem)
                    else:
                        out.append(to_override(r))
                return tuple(out)

        return self.db.retrying(run)

    def list(self, user: str | None = None, include_expired: bool = False, today: dt.date | None = None) -> list[dict]:
        today = today or dt.datetime.now(dt.timezone.utc).date()

        def run():
            q = sa.select(OverrideRecord).order_by(OverrideRecord.id)
            if user is not None:
                q = q.where(OverrideRecord.user_name == user)
            if not include_expired:
                q = q.where(sa.or_(OverrideRecord.expires.is_(None), OverrideRecord.expires > today))
            with self.db.read() as s:
                return [as_dict(r) for r in s.scalars(q)]

        return self.db.retrying(run)

    def get(self, ident: str) -> dict | None:
        rid = record_id(ident)
        if rid is None:
            return None

        def run():
            with self.db.read() as s:
                r = s.get(OverrideRecord, rid)
                return as_dict(r) if r else None

        return self.db.retrying(run)

    def audit(self, limit: int = 100, target: str | None = None) -> list[dict]:
        def run():
            q = sa.select(AuditRecord).order_by(AuditRecord.id.desc()).limit(limit)
            if target is not None:
                q = q.where(AuditRecord.target == target)
            with self.db.read() as s:
                return [audit_dict(a) for a in s.scalars(q)]

        return self.db.retrying(run)

    # -- changes (each with its audit row, in one transaction) ------------------------------------
    def create(self, *, user: str, limits: dict, expires: dt.date | None, reason: str, approved_by: str,
               actor: str) -> dict:
        def run():
            with self.db.write() as s:
                r = OverrideRecord(user_name=user, limits=dict(limits), expires=expires, reason=reason,
                                   approved_by=approved_by, created_by=actor, created_at=utcnow())
                s.add(r)
                s.flush()
                after = as_dict(r)
                s.add(AuditRecord(actor=actor, action="override.create", target=user, object_id=after["id"],
                                  before=None, after=after, reason=reason, at=utcnow()))
                return after

        return self.db.retrying(run)

    def remove(self, ident: str, *, actor: str, reason: str = "") -> dict | None:
        """Delete an override; returns what it was, or None if there is no such override."""
        rid = record_id(ident)
        if rid is None:
            return None

        def run():
            with self.db.write() as s:
                r = s.get(OverrideRecord, rid)
                if r is None:
                    return None
                before = as_dict(r)
                s.delete(r)
                s.add(AuditRecord(actor=actor, action="override.remove", target=r.user_name,
                                  object_id=before["id"], before=before, after=None, reason=reason, at=utcnow()))
                return before

        return self.db.retrying(run)
