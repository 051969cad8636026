"""May this user start this server? A pure decision with a message a person can act on."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from ..gpu.devices import format_devices, format_equivalents
from .limits import Effective


@dataclass(frozen=True)
class ServerUse:
    """One of the user's servers that currently holds resources."""

    name: str  # "" for the default server
    profile: str = ""
    gpu_type: str = ""
    count: int = 0
    equivalents: Fraction = Fraction(0)


@dataclass(frozen=True)
class Ask:
    server_name: str
    profile: str
    gpu_type: str
    count: int
    equivalents: Fraction


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""  # machine-readable: profile, gpu_type, servers, per_server, gpus
    message: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)  # soft enforcement: over quota

    @property
    def over_quota(self) -> bool:
        return bool(self.warnings)


def sentence(text: str) -> str:
    """``text`` to begin a sentence (first letter only: names keep their case)."""
    return text[:1].upper() + text[1:]


def server_label(name: str) -> str:
    return f"'{name}'" if name else "'default'"


def _ask_text(ask: Ask) -> str:
    if ask.gpu_type and ":" in ask.gpu_type:
        return f"{format_devices(ask.gpu_type, ask.count)} ({format_equivalents(ask.equivalents)})"
    return format_equivalents(ask.equivalents)


def _in_use(usage: list[ServerUse]) -> str:
    gpu = [s for s in usage if s.equivalents]
    if not gpu:
        return "you use none"
    total = sum((s.equivalents for s in gpu), Fraction(0))
    where = ", ".join(server_label(s.name) for s in gpu)
    noun = "server" if len(gpu) == 1 else "servers"
    return f"you use {format_equivalents(total).removesuffix(' GPU').removesuffix(' GPUs')} ({noun} {where})"


def check(ask: Ask, eff: Effective, usage: list[ServerUse], enforcement: str = "hard") -> Decision:
    """Check ``ask`` against the effective limits, given what the user already holds.

    ``usage`` excludes the server being started. Profile and GPU-type rules are always hard:
    soft enforcement only relaxes amounts (servers, GPUs), which is what labs over-subscribe.
    """
    lim = eff.limits
    if lim.profiles is not None and ask.profile not in lim.profiles:
        allowed = ", ".join(sorted(lim.profiles)) or "none"
        return Decision(
            False,
            "profile",
            f"Profile '{ask.profile}' is not available to you ({eff.source('profiles')} allows: "
            f"{allowed}). Pick another profile or ask an admin for access.",
        )
    if ask.count and lim.gpu_types is not None and ask.gpu_type not in lim.gpu_types:
        allowed = ", ".join(sorted(lim.gpu_types)) or "no GPUs"
        return Decision(
            False,
            "gpu_type",
            f"GPU type '{ask.gpu_type}' is not available to you ({eff.source('gpu_types')} allows: "
            f"{allowed}). Pick another type or ask an admin for an override.",
        )

    problems: list[tuple[str, str]] = []
    if lim.max_servers is not None and len(usage) + 1 > lim.max_servers:
        names = ", ".join(server_label(s.name) for s in usage)
        problems.append(
            (
                "servers",
                (f"You already run {len(usage)} server{'s' if len(usage) != 1 else ''} ({names}); "
                 f"{eff.source('max_servers')} allows {lim.max_servers} at a time. "
                 "Stop a server or ask an admin for an override.") if usage else
                (f"{sentence(eff.source('max_servers'))} allows no servers. Ask an admin for an override."),
            )
        )
    if lim.max_gpus_per_server is not None and ask.equivalents > lim.max_gpus_per_server:
        problems.append(
            (
                "per_server",
                f"You asked for {_ask_text(ask)} for one server; {eff.source('max_gpus_per_server')} "
                f"allows {format_equivalents(lim.max_gpus_per_server)} per server. "
                "Ask for fewer GPUs or ask an admin for an override.",
            )
        )
    used = sum((s.equivalents for s in usage), Fraction(0))
    if lim.max_gpus is not None and ask.equivalents and used + ask.equivalents > lim.max_gpus:
        problems.append(
            (
                "gpus",
                f"You asked for {_ask_text(ask)}; {eff.source('max_gpus')} allows "
                f"{format_equivalents(lim.max_gpus)} at a time and {_in_use(usage)}. "
                + ("Stop a server or ask an admin for an override." if used else
                   "Ask for fewer GPUs or ask an admin for an override."),
            )
        )
    if not problems:
        return Decision(True)
    if enforcement == "soft":
        return Decision(True, warnings=tuple(f"Over quota (soft limit): {m}" for _, m in problems))
    reason, message = problems[0]
    return Decision(False, reason, message)


def headroom(eff: Effective, usage: list[ServerUse]) -> Fraction | None:
    """GPU-equivalents the user may still add in one server (None: unlimited)."""
    lim = eff.limits
    left = None
    if lim.max_gpus is not None:
        used = sum((s.equivalents for s in usage), Fraction(0))
        left = max(Fraction(0), lim.max_gpus - used)
    if lim.max_gpus_per_server is not None:
        left = lim.max_gpus_per_server if left is None else min(left, lim.max_gpus_per_server)
    return left
