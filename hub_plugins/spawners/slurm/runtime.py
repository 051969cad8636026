"""What really runs on SLURM, for the reconcile (``reconcile/runtime.py``): this hub's jobs, told
apart by their ``--comment`` (``gpulab:<hub tag>:<spawn id>``), cancelled with ``scancel``.

A job a dying hub submitted but never recorded is an orphan: nothing else would ever stop it,
and it would hold its GPUs until its time limit.
"""

from __future__ import annotations

import logging

from ...reconcile.decide import Found
from ...reconcile.runtime import Runtime
from . import cli
from .jobs import hub_jobs

log = logging.getLogger("gpulab.slurm")


class SlurmRuntime(Runtime):
    name = "slurm"

    def __init__(self, hub_tag: str):
        self.hub_tag = hub_tag

    async def list(self) -> list[Found]:
        lines = await cli.list_jobs()  # SlurmUnavailable: the supervisor retries next round
        return [Found(spawn_id, handle=f"job {job_id}") for job_id, spawn_id in hub_jobs(lines, self.hub_tag)]

    async def find(self, user_name: str, server_name: str) -> list[Found]:
        return []  # jobs carry no owner; a job the hub lost is cancelled, not adopted

    async def stop(self, found: Found) -> bool:
        job_id = found.handle.split()[-1]
        log.warning("cancelling orphaned SLURM job %s (its server is gone)", job_id)
        res = await cli.cancel(job_id)
        return res.rc == 0
