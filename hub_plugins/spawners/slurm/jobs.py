"""What a SLURM job is doing, in words a person reads (pure).

``squeue -h -j ID -o '%T|%r|%S|%N'`` gives state, pending reason, (estimated) start and nodes.
A job that has ended is no longer listed by squeue; ``scontrol show job -d -o ID`` still knows
it for ``MinJobAge`` seconds and says how it ended (``JobState=CANCELLED``, ``PREEMPTED``,
``TIMEOUT``, ``NODE_FAIL``, ``ExitCode=1:0``).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

QUERY_FORMAT = "%T|%r|%S|%N"
PENDING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
RUNNING_STATES = {"RUNNING", "COMPLETING"}
# A suspended job keeps its allocation and resumes: its server is alive, only paused.
PAUSED_STATES = {"SUSPENDED", "STOPPED"}

# reason -> (what it means for the user, hopeless: the job can never start as submitted)
REASONS: dict[str, tuple[str, bool]] = {
    "Resources": ("waiting for GPUs, CPUs or memory to be freed by other jobs", False),
    "Priority": ("jobs with a higher priority are ahead of yours", False),
    "None": ("submitted, waiting for the scheduler's first look", False),
    "BeginTime": ("waiting for its start time", False),
    "Dependency": ("waiting for another job", False),
    "ReqNodeNotAvail": ("the nodes it needs are unavailable (maintenance or down)", False),
    "NodeDown": ("a node it needs is down", False),
    "PartitionDown": ("the partition is down", False),
    "PartitionInactive": ("the partition is inactive", False),
    "Reservation": ("waiting for a reservation", False),
    "Licenses": ("waiting for licenses", False),
    "JobHeldUser": ("held", False),
    "JobHeldAdmin": ("held by an administrator", True),
    "QOSMaxGRESPerUser": ("your SLURM QOS limit on GPUs per user is reached", False),
    "QOSGrpGRES": ("your SLURM QOS group GPU limit is reached", False),
    "QOSMaxJobsPerUserLimit": ("your SLURM QOS limit on running jobs is reached", False),
    "AssocGrpGRES": ("your SLURM account's GPU limit is reached", False),
    "AssocMaxJobsLimit": ("your SLURM account's job limit is reached", False),
    "AssocGrpCpuLimit": ("your SLURM account's CPU limit is reached", False),
    "PartitionNodeLimit": ("it asks for more nodes than the partition allows", True),
    "PartitionTimeLimit": ("its time limit is longer than the partition allows", True),
    "BadConstraints": ("no node matches what it asks for", True),
    "InvalidAccount": ("the SLURM account is invalid", True),
    "InvalidQOS": ("the SLURM QOS is invalid", True),
    "QOSJobLimit": ("the SLURM QOS does not allow this job", True),
    "AccountNotAllowed": ("the SLURM account may not use this partition", True),
    "DependencyNeverSatisfied": ("it depends on a job that failed", True),
}


@dataclass(frozen=True)
class JobView:
    state: str  # "" when squeue no longer lists the job
    reason: str = ""
    start: dt.datetime | None = None  # actual start (running) or SLURM's estimate (pending)
    nodes: str = ""

    @property
    def pending(self) -> bool:
        return self.state in PENDING_STATES

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def paused(self) -> bool:
        return self.state in PAUSED_STATES

    @property
    def gone(self) -> bool:
        return not (self.pending or self.running or self.paused)


def parse_time(text: str) -> dt.datetime | None:
    """SLURM's local-time ISO stamps ('2026-11-22T23:04:54'); 'N/A', 'Unknown', 'None' -> None."""
    try:
        return dt.datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        return None


def parse_squeue(line: str) -> JobView:
    """One line of ``squeue -h -o '%T|%r|%S|%N'`` (empty: the job is not listed)."""
    line = (line or "").strip().splitlines()[0] if (line or "").strip() else ""
    if not line or "|" not in line:
        return JobView("")
    state, reason, start, nodes = (line.split("|") + ["", "", "", ""])[:4]
    return JobView(state.strip(), reason.strip(), parse_time(start), nodes.strip())


def explain(reason: str) -> tuple[str, bool]:
    """(sentence, hopeless) for a pending reason; unknown reasons are shown as SLURM names them."""
    key = reason.split(",")[0].strip()
    if key in REASONS:
        return REASONS[key]
    return (f"SLURM says: {reason}" if reason else "waiting in the queue", False)


def when(start: dt.datetime | None, now: dt.datetime) -> str:
    """'Estimated start 14:05 (in about 12 min)' or '' when SLURM has no estimate."""
    if start is None or start.year < 2000:
        return ""
    delta = (start - now).total_seconds()
    if delta <= 60:
        return "SLURM expects to start it within a minute"
    minutes = round(delta / 60)
    span = f"{minutes} min" if minutes < 120 else f"{minutes / 60:.1f} h"
    day = "" if start.date() == now.date() else start.strftime("%a %d %b ")
    return f"estimated start {day}{start:%H:%M} (in about {span})"


def pending_message(job_id: str, view: JobView, now: dt.datetime, position: int | None = None,
                    queued: int | None = None) -> str:
    """The progress-page line for a pending job."""
    sentence, _ = explain(view.reason)
    tag = f" [{view.reason}]" if view.reason and view.reason != "None" else ""
    parts = [f"Waiting in the SLURM queue (job {job_id}): {sentence}{tag}"]
    if position is not None and queued:
        parts.append(f"position {position} of {queued} waiting in partition")
    estimate = when(view.start, now)
    if estimate:
        parts.append(estimate)
    return "; ".join(parts) + "."


def queue_position(job_id: str, pending_ids: list[str]) -> tuple[int | None, int]:
    """Position (1-based) of ``job_id`` among the pending jobs of its partition, listed in
    SLURM's scheduling order (``squeue --sort=-p,i``)."""
    ids = [i.strip() for i in pending_ids if i.strip()]
    return (ids.index(job_id) + 1 if job_id in ids else None), len(ids)


_GRES_IDX = re.compile(r"\(IDX:([^)]*)\)")


@dataclass(frozen=True)
class JobRecord:
    """How a job is or was (``scontrol show job -d -o``), for state, messages and usage."""

    job_id: str
    state: str = ""
    reason: str = ""
    exit_code: str = ""
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    nodes: str = ""
    partition: str = ""
    gpu_ids: str = ""  # SLURM's device indices on the node, e.g. "0-1"

    def as_state(self) -> dict:
        return {k: (v.isoformat() if isinstance(v, dt.datetime) else v)
                for k, v in self.__dict__.items() if v not in ("", None)}


def parse_job_record(rec: dict[str, str]) -> JobRecord:
    m = _GRES_IDX.search(rec.get("GRES", ""))
    return JobRecord(
        job_id=rec.get("JobId", ""),
        state=rec.get("JobState", ""),
        reason=rec.get("Reason", "") if rec.get("Reason") not in ("None", "(null)") else "",
        exit_code=rec.get("ExitCode", ""),
        start=parse_time(rec.get("StartTime", "")),
        end=parse_time(rec.get("EndTime", "")),
        nodes=rec.get("NodeList", "") if rec.get("NodeList") not in ("(null)",) else "",
        partition=rec.get("Partition", ""),
        gpu_ids=m.group(1) if m else "",
    )


ENDINGS = {
    "CANCELLED": "was cancelled",
    "PREEMPTED": "was preempted by a higher-priority job",
    "TIMEOUT": "reached its time limit",
    "NODE_FAIL": "lost its node (node failure)",
    "FAILED": "failed",
    "OUT_OF_MEMORY": "ran out of memory",
    "COMPLETED": "ended",
    "BOOT_FAIL": "could not boot its node",
    "DEADLINE": "missed its deadline",
}


def ended_message(job_id: str, rec: JobRecord | None, log_path: str = "", stage: str = "") -> str:
    """Why a job is gone, for the spawn error or the log (``stage``: ' before the server started')."""
    if rec is None or not rec.state:
        what = f"SLURM job {job_id} is gone (SLURM no longer lists it)"
    else:
        what = f"SLURM job {job_id} {ENDINGS.get(rec.state.split()[0], rec.state.lower())}"
        if rec.exit_code and rec.exit_code != "0:0":
            what += f" (exit code {rec.exit_code})"
    what += stage
    if log_path:
        what += f". Its output is in {log_path}"
    return what


def job_comment(hub_tag: str, spawn_id: str) -> str:
    """What gpulab writes into ``--comment``: which hub and which allocation a job serves."""
    return f"gpulab:{hub_tag}:{spawn_id}"


def orphans(lines: list[str], hub_tag: str, held: set[str]) -> list[str]:
    """Job ids (from ``squeue -o '%i|%k|%T'`` lines) of this hub's jobs whose allocation is gone,
    e.g. a job submitted by a hub that died before it could record the job: nothing would ever
    stop it, and it would hold GPUs until its time limit."""
    out = []
    prefix = f"gpulab:{hub_tag}:"
    for line in lines:
        job_id, _, rest = line.partition("|")
        comment, _, state = rest.rpartition("|")
        if comment.startswith(prefix) and comment[len(prefix):] not in held and state.strip() in (
                PENDING_STATES | RUNNING_STATES | PAUSED_STATES):
            out.append(job_id.strip())
    return out


def hub_jobs(lines: list[str], hub_tag: str) -> list[tuple[str, str]]:
    """(job id, spawn id) of this hub's live jobs, from ``squeue -o '%i|%k|%T'`` lines."""
    out = []
    prefix = f"gpulab:{hub_tag}:"
    for line in lines:
        job_id, _, rest = line.partition("|")
        comment, _, state = rest.rpartition("|")
        if comment.startswith(prefix) and state.strip() in (PENDING_STATES | RUNNING_STATES | PAUSED_STATES):
            out.append((job_id.strip(), comment[len(prefix):]))
    return out
