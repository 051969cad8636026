"""A server's spec, resolved once before anything is reserved (pure): the profile, the user's
effective limits, CPU and memory capped by the quota (guarantees never above the limits) and
whether the request could ever fit. Backends apply it as it is and do no quota work of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..quota.limits import Limits
from .profiles import Profile


def cap(value, limit):
    """``value`` capped by ``limit`` (None: no limit on that side)."""
    values = [v for v in (value, limit) if v is not None]
    return min(values) if values else None


def _under(guarantee, limit):
    """A guarantee never above its limit; none stays none."""
    return None if guarantee is None else cap(guarantee, limit)


@dataclass(frozen=True)
class ServerSpec:
    profile: Profile
    limits: Limits  # the user's effective limits when the server was asked for
    cpu_limit: float | None
    mem_limit: int | None  # bytes
    cpu_guarantee: float | None
    mem_guarantee: int | None

    @classmethod
    def resolve(cls, profile: Profile, limits: Limits) -> ServerSpec:
        cpu, mem = cap(profile.cpu_limit, limits.cpu_limit), cap(profile.mem_limit, limits.mem_limit)
        return cls(profile, limits, cpu, mem, _under(profile.cpu_guarantee, cpu), _under(profile.mem_guarantee, mem))

    # what backends read of the profile, through the spec
    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def display_name(self) -> str:
        return self.profile.display_name

    @property
    def image(self) -> str:
        return self.profile.image

    @property
    def default_url(self) -> str:
        return self.profile.default_url

    @property
    def local_prefix(self) -> str:
        return self.profile.local_prefix

    @property
    def local_args(self) -> tuple[str, ...]:
        return self.profile.local_args

    @property
    def env(self) -> dict[str, str]:
        return self.profile.env
