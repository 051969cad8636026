"""What the culler writes each round (its only writes): GPU samples, the utilisation, energy and
idle-since of each running server's usage record, the last warning sent, and pruning old
samples. The decisions behind them are the culler's pure module's (``services/culler/decide``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa

from .db import Database
from .models import GPUSample, UsageRecord
from .usage import naive


@dataclass(frozen=True)
class Measured:
    """One round's measurement of one running server (its usage record ``record_id``)."""

    record_id: int
    util: float  # mean utilisation of its GPUs, percent
    idle_since: dt.datetime | None
    energy_wh: float


class SampleStore:
    def __init__(self, db: Database):
        self.db = db

    def record(self, samples: Mapping, measured: Iterable[Measured], now: dt.datetime) -> None:
        """Keep the devices' samples and add this round to the servers' usage records."""
        measured = list(measured)

        def run():
            with self.db.write() as s:
                for key, smp in samples.items():
                    if smp.util is not None:
                        s.add(GPUSample(device_key=key, at=naive(now), util=smp.util,
                                        memory_used_mib=smp.memory_used_mib or 0.0, power_w=smp.power_w))
                for m in measured:
                    # not a record settled meanwhile (closed between the round's look and now):
                    # its charge and energy are summed already (settled.py)
                    s.execute(sa.update(UsageRecord).where(UsageRecord.id == m.record_id,
                                                           UsageRecord.charged_until.is_(None)).values(
                        util_sum=UsageRecord.util_sum + m.util, util_samples=UsageRecord.util_samples + 1,
                        energy_wh=UsageRecord.energy_wh + m.energy_wh,
                        idle_since=naive(m.idle_since) if m.idle_since else None))

        self.db.retrying(run)

    def set_warned(self, user_name: str, server_name: str, tag: str) -> None:
        """The last warning a running server's user was sent (so it is sent once)."""

        def run():
            with self.db.write() as s:
                s.execute(sa.update(UsageRecord).where(
                    UsageRecord.user_name == user_name, UsageRecord.server_name == server_name,
                    UsageRecord.stopped_at.is_(None)).values(warned=tag))

        self.db.retrying(run)

    def prune(self, before: dt.datetime) -> None:
        def run():
            with self.db.write() as s:
                s.execute(sa.delete(GPUSample).where(GPUSample.at < naive(before)))

        self.db.retrying(run)
