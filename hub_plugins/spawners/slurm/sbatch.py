"""The batch script of a user's server, built by gpulab from validated values only (pure).

batchspawner renders its script template with ``user_options`` merged into the template's
variables, so a crafted request could set ``gres``, ``partition``, ``options`` or ``prologue``
itself. gpulab renders its own script instead: every ``#SBATCH`` option comes from the
allocation (GPU type and count, checked against the quota), the profile (CPUs, memory, capped
by the quota) and the admin's ``slurm`` settings, and each value is checked to be one plain
word, so nothing a user sends can add a line or an option.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field

SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.,:=/@%+\-]+$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
TIME = re.compile(r"^(\d+|\d+:\d{2}|\d+:\d{2}:\d{2}|\d+-\d+|\d+-\d+:\d{2}|\d+-\d+:\d{2}:\d{2})$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
EXTRA_OPTION = re.compile(r"^--[a-z][a-z0-9-]*(=[A-Za-z0-9_.,:=/@%+\-]+)?$")
# Options gpulab sets itself; an admin's extra_options may not change them.
OWN_OPTIONS = {"gres", "gpus", "gpus-per-node", "gpus-per-task", "partition", "time", "mem", "mem-per-cpu",
               "mem-per-gpu", "cpus-per-task", "output", "error", "export", "chdir", "job-name", "comment",
               "account", "qos", "uid", "gid", "wrap", "array", "nodes", "ntasks"}


class SbatchError(ValueError):
    """A value that cannot go into a batch script (names what and why)."""


@dataclass(frozen=True)
class SlurmSettings:
    """The admin's ``slurm`` section of gpulab.yaml."""

    partition: str = ""  # "" = the cluster's default partition
    gpu_partition: str = ""  # for servers with GPUs ("" = partition)
    account: str = ""
    qos: str = ""
    time_limit: str = "08:00:00"
    extra_options: tuple[str, ...] = ()
    prologue: str = ""  # shell lines run in the job before the server (module load ...)

    def partition_for(self, gpus: int) -> str:
        return (self.gpu_partition or self.partition) if gpus else self.partition


def check_extra_option(opt: str) -> None:
    if not EXTRA_OPTION.match(opt):
        raise SbatchError(f"slurm.extra_options: {opt!r} must look like '--constraint=ib' (one word, no quotes or spaces)")
    name = opt[2:].split("=", 1)[0]
    if name in OWN_OPTIONS:
        raise SbatchError(f"slurm.extra_options: {opt!r}: gpulab sets --{name} itself (use the slurm settings)")


def _word(what: str, value: str, pattern: re.Pattern = SAFE_VALUE) -> str:
    if not pattern.match(value or ""):
        raise SbatchError(f"{what}: {value!r} cannot go into a batch script")
    return value


def gres(gres_type: str, count: int) -> str:
    """'gpu:a100:2', or 'gpu:2' for untyped GPUs."""
    if count < 1:
        raise SbatchError("gres: a GPU count must be at least 1")
    if gres_type:
        return f"gpu:{_word('gres type', gres_type, NAME)}:{count}"
    return f"gpu:{count}"


def mem_megabytes(mem_bytes: int) -> int:
    return max(1, math.ceil(mem_bytes / 2**20))


def job_name(user: str, server: str) -> str:
    """A readable job name for squeue: 'jupyter-alice' / 'jupyter-alice-exp1' (plain words only)."""
    raw = f"jupyter-{user}" + (f"-{server}" if server else "")
    return re.sub(r"[^A-Za-z0-9_.\-]", "-", raw)[:64]


@dataclass(frozen=True)
class JobRequest:
    """Everything one server's job asks SLURM for."""

    settings: SlurmSettings
    gpus: int = 0
    gres_type: str = ""  # SLURM gres type ("" = untyped)
    cpus: float | None = None
    mem_bytes: int | None = None
    name: str = "jupyter"
    comment: str = ""
    output: str = ""
    workdir: str = ""
    export: tuple[str, ...] = field(default_factory=tuple)


def sbatch_options(req: JobRequest) -> list[str]:
    """The ``#SBATCH`` options, each one validated word."""
    s = req.settings
    opts = [f"--job-name={_word('job name', req.name, NAME)}"]
    if req.output:
        opts.append(f"--output={_word('output path', req.output)}")
    if req.workdir:
        opts.append(f"--chdir={_word('working directory', req.workdir)}")
    if req.export:
        names = [_word("environment variable", n, ENV_NAME) for n in req.export]
        opts.append(f"--export={','.join(names)}")
    part = s.partition_for(req.gpus)
    if part:
        opts.append(f"--partition={_word('slurm.partition', part, NAME)}")
    if s.account:
        opts.append(f"--account={_word('slurm.account', s.account, NAME)}")
    if s.qos:
        opts.append(f"--qos={_word('slurm.qos', s.qos, NAME)}")
    if s.time_limit:
        opts.append(f"--time={_word('slurm.time_limit', s.time_limit, TIME)}")
    if req.gpus:
        opts.append(f"--gres={gres(req.gres_type, req.gpus)}")
    if req.cpus:
        opts.append(f"--cpus-per-task={max(1, math.ceil(req.cpus))}")
    if req.mem_bytes:
        opts.append(f"--mem={mem_megabytes(req.mem_bytes)}M")
    if req.comment:
        opts.append(f"--comment={_word('comment', req.comment)}")
    for extra in s.extra_options:
        check_extra_option(extra)
        opts.append(extra)
    return opts


def render_script(options: list[str], command: list[str], path_prefix: str = "", prologue: str = "") -> str:
    """The batch script: options, then the server started as a job step (``srun``), so SLURM
    binds it to the job's GPUs and signals it on cancellation."""
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH {o}" for o in options]
    lines += [
        "",
        "set -euo pipefail",
        "trap 'echo \"gpulab: job received SIGTERM\"' TERM",
    ]
    if path_prefix:
        lines.append(f"export PATH={shlex.quote(path_prefix)}:\"$PATH\"")
    # SLURM chose the devices; tell the server which (gpulab's own variable, for kernels/UIs)
    lines.append('export GPULAB_GPUS="${CUDA_VISIBLE_DEVICES:-}"')
    lines.append('echo "gpulab: job $SLURM_JOB_ID on $(hostname) GPUs=${CUDA_VISIBLE_DEVICES:-none}"')
    if prologue:
        lines.append(prologue.rstrip("\n"))
    lines.append("srun " + " ".join(shlex.quote(c) for c in command))
    lines.append('echo "gpulab: server ended"')
    return "\n".join(lines) + "\n"
