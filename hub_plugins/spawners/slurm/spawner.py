"""SLURM backend: each server is a batch job; SLURM places it on a node and picks its GPUs.

Applying an allocation = the job's ``#SBATCH`` options: ``--gres=gpu[:type]:N`` from the GPU type
and count gpulab granted, the partition, time limit, account and QOS from the admin's ``slurm``
settings, CPUs and memory from the profile capped by the user's quota. SLURM sets
``CUDA_VISIBLE_DEVICES`` in the job. The profile's ``local.prefix`` environment must exist on the
compute nodes (a shared filesystem) and contain ``batchspawner-singleuser``.
"""

from __future__ import annotations

import os

from traitlets import Bool, Dict, List, Unicode

from ...envs.status import Environments
from ...gpu.devices import kind_of
from .batch import SlurmBatchSpawner
from .jobs import job_comment
from .nodes import gres_type_for
from .runtime import SlurmRuntime
from .sbatch import (
    JobRequest, SbatchError, SlurmSettings, job_name, render_script, sbatch_options, step_options,
)
from ..mixin import GPUSpawnerMixin
from ..errors import SpawnException


class SlurmGPUSpawner(GPUSpawnerMixin, SlurmBatchSpawner):
    """GPU-aware SLURM jobs."""

    partition = Unicode("", config=True, help="Partition for servers ('' = the cluster's default).")
    gpu_partition = Unicode("", config=True, help="Partition for servers with GPUs ('' = partition).")
    account = Unicode("", config=True, help="SLURM account to charge ('' = the user's default).")
    qos = Unicode("", config=True, help="SLURM QOS ('' = the default).")
    time_limit = Unicode(
        "08:00:00", config=True,
        help="""--time of every server job (SLURM ends the server then). A limit also lets the
        backfill scheduler start small servers past big waiting requests.""",
    )
    extra_options = List(
        Unicode(), config=True,
        help="Further #SBATCH options written by the admin, e.g. ['--constraint=ib'] (validated).",
    )
    prologue = Unicode("", config=True, help="Shell lines the job runs before the server (e.g. module load).")
    gres_types = Dict(
        config=True, help="SLURM gres type -> gpulab GPU type name (the capacity reader's naming)."
    )
    untyped_gpu_type = Unicode("GPU", config=True, help="gpulab type name of GPUs declared without a gres type.")
    check_environments = Bool(
        True, config=True,
        help="""Check on the hub's machine that a profile's environment has jupyterhub-singleuser and
        batchspawner-singleuser (true where compute nodes share the filesystem).""",
    )

    @property
    def settings(self) -> SlurmSettings:
        return SlurmSettings(self.partition, self.gpu_partition, self.account, self.qos, self.time_limit,
                             tuple(self.extra_options), self.prologue)

    # -- the seam --------------------------------------------------------------------------
    def _bin(self, profile) -> str:
        return os.path.join(Environments.instance(config=self.config).prefix(profile), "bin")

    def gpulab_profile_available(self, profile):
        if not profile.local_prefix:
            return False, "it has no environment for SLURM jobs (no 'local.prefix' in the profile)"
        if self.check_environments:
            for exe in ("jupyterhub-singleuser", "batchspawner-singleuser"):
                path = os.path.join(self._bin(profile), exe)
                if not os.access(path, os.X_OK):
                    return False, f"its environment is not installed for SLURM jobs ({path} is missing)"
        return True, ""

    def gpulab_device_env(self, allocation):
        return {}  # SLURM sets CUDA_VISIBLE_DEVICES in the job, to the GPUs it chose

    async def gpulab_apply(self, allocation, spec):
        profile = spec.profile
        inv = self.gpulab.inventory()
        gres_type = gres_type_for(allocation.gpu_type, inv, self.gres_types, self.untyped_gpu_type) if allocation.count else ""
        bindir = self._bin(profile)
        self.cmd = [os.path.join(bindir, "batchspawner-singleuser"), os.path.join(bindir, "jupyterhub-singleuser"),
                    *profile.local_args]
        self.default_url = profile.default_url
        self._gpulab_job = dict(
            gpus=allocation.count, gres_type=gres_type,
            # a share of a shared GPU is a SLURM shard (the GPU stays SLURM's to pick)
            gres_name="shard" if kind_of(allocation.gpu_type) == "shared" else "gpu",
            cpus=spec.cpu_limit, mem_bytes=spec.mem_limit,
            bindir=bindir, comment=job_comment(self.hub_tag, allocation.spawn_id),
        )
        try:  # fail now, with the reason, rather than in sbatch
            sbatch_options(JobRequest(self.settings, allocation.count, self._gpulab_job["gres_type"],
                                      gres_name=self._gpulab_job["gres_name"]))
        except SbatchError as e:
            raise SpawnException(f"gpulab's slurm settings are invalid: {e}", reason="config", status_code=500) from None
        await self.gpulab_account()

    def gpulab_batch_script(self):
        job = self._gpulab_job
        home = self.req_homedir
        export = [*self.get_env().keys(), *filter(None, self.req_keepvars_extra.split(","))]
        req = JobRequest(
            self.settings, job["gpus"], job["gres_type"], job["cpus"], job["mem_bytes"],
            name=job_name(self.user.name, self.name or ""), comment=job["comment"],
            output=os.path.join(home, "jupyterhub_slurmspawner_%j.log"), workdir=home,
            export=tuple(dict.fromkeys(export)), gres_name=job["gres_name"],
        )
        try:
            options = sbatch_options(req)
        except SbatchError as e:
            raise SpawnException(f"Cannot build the SLURM job: {e}", reason="config", status_code=500) from None
        hook = self.gpulab_share_hook_dir() if self.gpulab_share_caps() else ""
        script = render_script(options, [*self.cmd, *self.get_args()], job["bindir"], self.prologue,
                               step_options(req), hook or "")
        return script, self.settings.partition_for(job["gpus"])

    # -- jobs nobody owns (slurm/runtime.py; the loop is reconcile/supervisor.py) ------------
    @property
    def hub_tag(self) -> str:
        """Tells this hub's jobs from another hub's on the same cluster."""
        return self.tag_of(self.gpulab)

    @staticmethod
    def tag_of(core) -> str:
        return core.hub_id[:8]  # the hub's id (core.py), as comments of jobs running now spell it

    @classmethod
    def gpulab_make_runtime(cls, core, config):
        return SlurmRuntime(cls.tag_of(core))
