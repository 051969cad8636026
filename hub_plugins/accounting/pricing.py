"""What a server's life costs (pure).

Rules (documented in the README):

- A server is charged from the moment its GPUs are reserved until it stops, per second: its
  duration is rounded *up* to a whole second, then raised to the minimum charge (default 60 s).
  A server that never became ready (a failed start) is not charged.
- GPU servers cost ``rate(type) x number of devices`` per hour. A MIG or shared type without a
  rate of its own costs its parent type's rate times its weight (an A100 1g.10gb slice: 1/7).
  CPU-only servers cost ``cpu_rate`` per hour.
- GPU-seconds are GPU-equivalent-seconds (a 1/7 slice for an hour is 514 GPU-seconds), the unit
  quotas and budgets use.
- Costs are kept unrounded and summed; only what is shown is rounded (to the currency's cents).

:func:`charged_seconds` is the one charging rule: budgets (``budgets.Usage``), the billing
reports and the queue's fair share all charge through it.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from fractions import Fraction

from ..gpu.devices import base_type, kind_of
from ..settings.defaults import section


@dataclass(frozen=True)
class Pricing:
    rates: dict[str, float]  # per device-hour, by GPU type
    default_rate: float  # a GPU type with no rate and no parent rate
    cpu_rate: float  # per server-hour, CPU-only servers
    minimum_seconds: int
    currency: str

    @classmethod
    def from_config(cls, data: dict) -> Pricing:
        """From the ``billing`` section (completed from DEFAULTS)."""
        data = section("billing", data)
        rates = dict(data["rates"])
        return cls(
            rates={k: float(v) for k, v in rates.items() if k != "*"},
            default_rate=float(rates.get("*", 0.0)),  # no '*' rate: types without a rate are free
            cpu_rate=float(data["cpu_rate"]),
            minimum_seconds=int(data["minimum_charge_seconds"]),
            currency=data["currency"],
        )

    def device_rate(self, gpu_type: str, weight: Fraction | float = 1) -> float:
        """Per device-hour for one device of ``gpu_type`` (weight: its GPU-equivalents)."""
        if gpu_type in self.rates:
            return self.rates[gpu_type]
        if kind_of(gpu_type) != "gpu" and base_type(gpu_type) in self.rates:
            return self.rates[base_type(gpu_type)] * float(weight)
        return self.default_rate * float(weight)

    def hourly(self, gpu_type: str, count: int, weight: Fraction | float = 1) -> float:
        """What one server costs per hour."""
        if not count:
            return self.cpu_rate
        return self.device_rate(gpu_type, weight) * count


@dataclass(frozen=True)
class Charge:
    seconds: int  # charged seconds (rounded up, minimum applied); 0 if not charged
    gpu_seconds: float  # GPU-equivalent-seconds
    cost: float


def charged_seconds(start: dt.datetime, end: dt.datetime, minimum: int) -> int:
    """The charging rule: the duration rounded up to a whole second, at least ``minimum``."""
    raw = max(0.0, (end - start).total_seconds())
    return max(minimum, math.ceil(raw))


def charge(*, started_at, ended_at, ready: bool, equivalents: Fraction | float, rate_per_hour: float,
           minimum_seconds: int) -> Charge:
    """Charge for one server over [started_at, ended_at] (ended_at = now while it runs)."""
    if not ready:
        return Charge(0, 0.0, 0.0)
    seconds = charged_seconds(started_at, ended_at, minimum_seconds)
    return Charge(seconds, float(equivalents) * seconds, rate_per_hour * seconds / 3600)


def money(value: float) -> float:
    """Rounded for display: half-up to cents."""
    return math.floor(value * 100 + 0.5) / 100
