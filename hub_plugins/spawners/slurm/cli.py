"""Running SLURM's commands (the I/O; everything they print is parsed in ``nodes``/``jobs``).

Argument lists, never a shell: job ids and names are passed as separate arguments. Commands
inherit the hub's environment (``SLURM_CONF`` included), so a hub pointed at a non-default
cluster configuration reaches that cluster.
"""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass

from .jobs import QUERY_FORMAT, JobRecord, JobView, parse_job_record, parse_squeue
from .keyvalue import parse_record, parse_records


class SlurmUnavailable(RuntimeError):
    """The controller did not answer (a transient state: keep the server, try again)."""


@dataclass(frozen=True)
class Result:
    rc: int
    out: str
    err: str


async def run(argv: list[str], input: str | None = None, env: dict | None = None, timeout: float = 30) -> Result:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(input.encode() if input is not None else None), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise SlurmUnavailable(f"{argv[0]} did not answer within {timeout:.0f} s") from None
    return Result(proc.returncode, out.decode(errors="replace").strip(), err.decode(errors="replace").strip())


def run_sync(argv: list[str], timeout: float = 30) -> Result:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(f"{argv[0]} did not answer within {timeout:.0f} s") from None
    except FileNotFoundError:
        raise SlurmUnavailable(f"{argv[0]} is not installed on the hub's machine") from None
    return Result(p.returncode, p.stdout.strip(), p.stderr.strip())


def _unavailable(res: Result, what: str) -> SlurmUnavailable:
    return SlurmUnavailable(f"{what} failed (exit {res.rc}): {res.err or res.out}")


def _job_not_known(res: Result) -> bool:
    return "Invalid job id" in res.err


async def squeue_job(job_id: str) -> JobView:
    """The job as squeue lists it; ``JobView('')`` when it has ended (or never existed)."""
    res = await run(["squeue", "-h", "-j", job_id, "-o", QUERY_FORMAT])
    if res.rc != 0:
        if _job_not_known(res):
            return JobView("")
        raise _unavailable(res, "squeue")
    return parse_squeue(res.out)


async def job_record(job_id: str) -> JobRecord | None:
    """``scontrol show job -d`` (None when SLURM has forgotten the job)."""
    res = await run(["scontrol", "show", "job", "-d", "-o", job_id])
    if res.rc != 0 or not res.out:
        return None
    return parse_job_record(parse_record(res.out))


async def pending_ids(partition: str) -> list[str]:
    """Pending job ids of a partition in scheduling order (highest priority first)."""
    argv = ["squeue", "-h", "-t", "PD", "--sort=-p,i", "-o", "%i"]
    if partition:
        argv += ["-p", partition]
    res = await run(argv)
    return res.out.split() if res.rc == 0 else []


async def default_partition() -> str:
    res = await run(["sinfo", "-h", "-o", "%P"])
    for name in res.out.split():
        if name.endswith("*"):
            return name[:-1]
    return ""


async def node_address(node: str) -> str:
    """Where the hub reaches a node: its NodeAddr (what SLURM itself uses), else its name."""
    res = await run(["scontrol", "show", "node", "-o", node])
    if res.rc == 0 and res.out:
        return parse_record(res.out).get("NodeAddr") or node
    return node


async def list_jobs(fmt: str = "%i|%k|%T") -> list[str]:
    res = await run(["squeue", "-h", "-o", fmt])
    if res.rc != 0:
        raise _unavailable(res, "squeue")
    return res.out.splitlines()


def nodes_sync() -> list[dict[str, str]]:
    res = run_sync(["scontrol", "show", "node", "-d", "-o"])
    if res.rc != 0:
        raise _unavailable(res, "scontrol show node")
    return parse_records(res.out)


def default_partition_sync() -> str:
    res = run_sync(["sinfo", "-h", "-o", "%P"])
    for name in res.out.split():
        if name.endswith("*"):
            return name[:-1]
    return ""


async def cancel(job_id: str, prefix: list[str] | None = None) -> Result:
    return await run([*(prefix or []), "scancel", job_id])


async def submit(script: str, prefix: list[str], env: dict) -> str:
    """``sbatch --parsable`` the script (as the job's user, through ``prefix``); the job id."""
    res = await run([*prefix, "sbatch", "--parsable"], input=script, env=env, timeout=60)
    if res.rc != 0:
        raise RuntimeError(res.err or res.out or f"sbatch exited with {res.rc}")
    job_id = res.out.splitlines()[-1].split(";")[0].strip() if res.out else ""
    if not job_id.isdigit():
        raise RuntimeError(f"sbatch printed no job id: {res.out!r} {res.err!r}")
    return job_id
