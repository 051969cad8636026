"""The trace as notebook sessions, and its time scale (see the benchmark's docstring for why).

Pure data preparation: read the openb pod list, turn each GPU task into a session with a synthetic
idle tail, and scale arrival times so that the busiest 24 hours offer a chosen load.
"""

from __future__ import annotations

import csv
import math
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path

H = 3600.0
DAY = 86400.0
TIME_COLUMNS = ("creation_time", "deletion_time")
NEEDED = ("name", "num_gpu", "gpu_milli") + TIME_COLUMNS


class TraceError(Exception):
    """A trace file this benchmark cannot read; the message says what to do."""


@dataclass
class Session:
    id: int
    user: str
    arrival: float  # seconds (trace time, then the scaled time)
    gpus: int  # whole GPUs asked for (a fractional task asks for 1)
    milli: int  # the trace's gpu_milli: share of one GPU for a fractional task, 1000 otherwise
    active: float  # seconds of real GPU work
    tail: float  # seconds open and idle after it (0: stopped at once)
    browser_open: bool
    extra: dict = field(default_factory=dict)  # per-run state of a replay

    @property
    def fractional(self) -> bool:
        return self.gpus == 1 and self.milli < 1000

    @property
    def demand(self) -> float:
        """The GPU-equivalents the task really uses (a fraction for a fractional task)."""
        return self.milli / 1000 if self.fractional else float(self.gpus)


def check_columns(path: Path, header: list[str] | None) -> None:
    missing = [c for c in NEEDED if c not in (header or [])]
    if not missing:
        return
    if any(c in missing for c in TIME_COLUMNS):
        raise TraceError(
            f"{path} has no time columns ({', '.join(c for c in TIME_COLUMNS if c in missing)} missing): "
            "this benchmark replays arrivals and durations, so it needs the openb pod list with its "
            "timestamps (alibaba/clusterdata cluster-trace-gpu-v2023/csv/openb_pod_list_default.csv, "
            "columns name, num_gpu, gpu_milli, creation_time, deletion_time, scheduled_time). "
            "Pass it with --trace PATH.")
    raise TraceError(f"{path} lacks the columns {', '.join(missing)}: pass the openb pod list with --trace PATH.")


def load_sessions(path: Path, max_gpus: int, seed: int, users: int) -> list[Session]:
    """Every task with GPUs that one host can hold, in arrival order."""
    rng = random.Random(seed)
    out = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        check_columns(path, reader.fieldnames)
        for row in reader:
            gpus, milli = int(row["num_gpu"] or 0), int(row["gpu_milli"] or 0)
            if gpus == 0 and milli == 0:
                continue
            gpus = max(1, gpus)
            if gpus > max_gpus:
                continue
            start = int(row.get("scheduled_time") or row["creation_time"])
            active = min(24 * H, max(60.0, int(row["deletion_time"]) - start))
            tail = min(24 * H, rng.lognormvariate(math.log(2 * H), 1.0)) if rng.random() < 0.6 else 0.0
            user = f"u{zlib.crc32(row['name'].encode()) % users:02d}"  # the trace has no users
            milli = milli if gpus == 1 and 0 < milli < 1000 else 1000
            out.append(Session(len(out), user, float(row["creation_time"]), gpus, milli, active, tail,
                               rng.random() < 0.5))
    if not out:
        raise TraceError(f"{path} has no task with GPUs that a host of {max_gpus} GPUs could hold.")
    out.sort(key=lambda s: (s.arrival, s.id))
    return out


def _busiest(arrivals: list[float], work: list[float], window: float) -> float:
    """The most work arriving within any ``window`` seconds (two pointers over sorted arrivals)."""
    best = acc = 0.0
    lo = 0
    for hi, t in enumerate(arrivals):
        acc += work[hi]
        while arrivals[lo] <= t - window:
            acc -= work[lo]
            lo += 1
        best = max(best, acc)
    return best


def scale_to_busiest_day(sessions: list[Session], capacity: float, load: float) -> tuple[float, float]:
    """Scale arrival times (keeping their order and relative spacing) so that the busiest 24 h
    offer ``load`` x what ``capacity`` GPUs serve in 24 h. Offered work = GPUs x active time (the
    idle tails are not work). Returns (factor, the busiest-day load reached); the load is reached
    from above, since the work is a sum of whole sessions."""
    t0 = sessions[0].arrival
    arrivals = [s.arrival - t0 for s in sessions]
    work = [s.gpus * s.active for s in sessions]
    target = load * capacity * DAY
    span = max(arrivals[-1], 1.0)
    if _busiest(arrivals, work, span + 1) < target:
        raise TraceError(f"the whole trace offers less than load {load:g} in one day on {capacity:g} GPUs: "
                         "ask for a lower --load or a smaller cluster")
    lo, hi = 1e-3, span + 1  # window lengths in trace time: hi reaches the target, lo does not
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if _busiest(arrivals, work, mid) >= target:
            hi = mid
        else:
            lo = mid
    factor = DAY / hi
    for s, a in zip(sessions, arrivals):
        s.arrival = a * factor
    return factor, _busiest([s.arrival for s in sessions], work, DAY) / (capacity * DAY)


def load_per_day(sessions: list[Session], capacity: float, tails: bool = False) -> list[float]:
    """Offered load of each calendar day of the scaled time (work arriving that day / capacity)."""
    days = int(sessions[-1].arrival // DAY) + 1
    out = [0.0] * days
    for s in sessions:
        out[int(s.arrival // DAY)] += s.gpus * (s.active + (s.tail if tails else 0.0))
    return [w / (capacity * DAY) for w in out]
