"""A user's quota as every page shows it (pure): the spawn form, the billing service's quota API
and the quotas service's "Your quota" page all read this one view, so they cannot disagree on
what is in use, what is left or where a limit comes from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ..gpu.devices import format_equivalents
from .decision import ServerUse, headroom, server_label
from .limits import FIELDS, Effective, limits_as_dict


def amount_text(value) -> str:
    return "unlimited" if value is None else format_equivalents(value)


@dataclass(frozen=True)
class QuotaView:
    eff: Effective
    usage: tuple[ServerUse, ...]  # the servers that count (the one being started excluded)
    enforcement: str  # hard | soft

    @classmethod
    def of(cls, eff: Effective, usage: Sequence[ServerUse], enforcement: str) -> QuotaView:
        return cls(eff, tuple(usage), enforcement)

    @property
    def limits(self) -> dict[str, Any]:
        return limits_as_dict(self.eff.limits)

    @property
    def in_use(self) -> Fraction:
        return sum((u.equivalents for u in self.usage), Fraction(0))

    @property
    def left(self) -> Fraction | None:
        return headroom(self.eff, list(self.usage))

    def sources(self, names: Sequence[str] = FIELDS) -> dict[str, str]:
        """Where each limit comes from ("group 'student'", "your override until ...")."""
        return {n: self.eff.source(n) for n in names}

    def amounts(self) -> dict[str, Any]:
        """In use and left, as numbers and as a person reads them."""
        left = self.left
        return {"in_use": float(self.in_use), "in_use_text": format_equivalents(self.in_use),
                "left": None if left is None else float(left), "left_text": amount_text(left)}

    def servers(self) -> list[dict]:
        return server_rows(self.usage)

    def overrides(self) -> list[dict]:
        return [{"id": o.id, "limits": dict(o.limits), "expires": o.expires.isoformat() if o.expires else None,
                 "reason": o.reason, "approved_by": o.approved_by} for o in self.eff.overrides]


def server_rows(usage) -> list[dict]:
    """Servers as every quota page lists them: those within quota (``QuotaView.servers``) and,
    apart, the borrowed ones (beyond quota, counted in no amount, may be reclaimed)."""
    return [{"name": server_label(u.name), "profile": u.profile, "gpu_type": u.gpu_type, "count": u.count,
             "gpus": float(u.equivalents)} for u in usage]
