"""batchspawner's SlurmSpawner, made safe and robust for a shared GPU platform.

What it keeps from batchspawner: the job id in the spawner state, the hub API endpoint and the
``batchspawner-singleuser`` wrapper through which the job reports the port it listens on.

What it changes, and why:

- **The script is gpulab's** (``sbatch.py``): batchspawner merges ``user_options`` into its
  template's variables, so a crafted request could choose its own gres, partition or prologue.
  Here ``user_options`` never reach the script.
- **Commands are argument lists**, never a shell; the job is submitted as the user's system
  account (``sudo -E -u``), so SLURM accounts, limits and file ownership are the user's.
- **Queue in words**: while the job waits, the progress page says SLURM's pending reason, the
  position in the partition's queue and SLURM's estimated start; a job that can never start
  (held by an admin, invalid account...) fails at once instead of at ``start_timeout``.
- **Death is noticed at every stage**: a job that ends while pending, before reporting its port
  (batchspawner would wait for the port until ``start_timeout``) or while the server runs
  (``poll``) ends the server, so its quota and GPUs are released. A running job that SLURM
  requeued (preemption with requeue) is cancelled: its server is gone.
- **Usage**: ``slurm_job`` in the spawner state holds the job id, partition, node, SLURM's GPU
  indices, submit/start times and, once it ended, the end time and how it ended.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import pwd
import time

from batchspawner import SlurmSpawner
from traitlets import Bool, Float, List, Unicode, default

from ..local.sysusers import ensure_user, system_username
from . import cli
from .jobs import JobView, ended_message, explain, pending_message, queue_position
from ..errors import SpawnException


def _now_iso() -> str:
    return dt.datetime.now().replace(microsecond=0).isoformat()


class SlurmBatchSpawner(SlurmSpawner):
    """A JupyterHub server as a SLURM batch job (GPU decisions come from the gpulab mixin)."""

    listen_ip = Unicode(
        "0.0.0.0",
        config=True,
        help="""Address the server listens on, on its compute node. 0.0.0.0 lets the hub reach it
        across the cluster network; 127.0.0.1 only suits a single-node cluster.""",
    )
    submit_prefix = List(
        ["sudo", "-E", "-u", "{user}"],
        config=True,
        help="""Command prefix that runs sbatch as the user's system account ({user}). The hub must
        be root, or allowed by sudoers to run sbatch as users. [] submits as the hub's own user.""",
    )
    system_user_prefix = Unicode(
        "", config=True,
        help="""Hub user -> cluster account: prefix + the sanitised hub name ('' for a cluster whose
        accounts are the hub's user names, e.g. from LDAP).""",
    )
    create_users = Bool(
        False, config=True,
        help="""Create missing accounts on the hub's machine (single-node clusters, CI). On a real
        cluster accounts come from the directory service and must exist on every node.""",
    )
    home_root = Unicode("/home", config=True, help="Where created accounts' home directories go.")
    queue_poll_interval = Float(
        2.0, config=True, help="Seconds between checks of a job while it waits in the queue or starts."
    )
    poll_cache_seconds = Float(
        1.0, config=True,
        help="""poll() answers from its last squeue for this long: the start watcher and JupyterHub
        may poll often, and every squeue is a request to slurmctld.""",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.slurm_job: dict = {}

    @default("env_keep")
    def _default_env_keep(self):
        # SLURM_CONF: a hub pointed at a non-default slurm.conf submits to, and the job's srun
        # talks to, that cluster
        return ["JUPYTERHUB_SINGLEUSER_APP", "SLURM_CONF", "LANG"]

    @default("req_keepvars_extra")
    def _default_keepvars_extra(self):
        return "PATH"

    # -- the job's account ---------------------------------------------------------------------
    @property
    def system_user(self) -> str:
        return system_username(self.user.name, self.system_user_prefix)

    async def gpulab_account(self) -> pwd.struct_passwd:
        """The user's system account (created when ``create_users``); a spawn error if missing."""
        name = self.system_user
        try:
            return pwd.getpwnam(name)
        except KeyError:
            if not self.create_users:
                raise SpawnException(
                    f"There is no cluster account '{name}' for hub user '{self.user.name}' on the hub's "
                    "machine, so no SLURM job can run as you. Ask an admin to create it (or to set "
                    "slurm.system_user_prefix to match your cluster's account names).",
                    reason="no_account", status_code=403,
                ) from None
        return await asyncio.to_thread(ensure_user, name, self.home_root)

    @default("req_username")
    def _default_req_username(self):
        return self.system_user

    @default("req_homedir")
    def _default_req_homedir(self):
        try:
            return pwd.getpwnam(self.system_user).pw_dir
        except KeyError:
            return os.path.join(self.home_root, self.system_user)

    def user_env(self, env):
        # batchspawner uses the hub user's name; the job runs as the system account
        try:
            pw = pwd.getpwnam(self.system_user)
        except KeyError:
            return env
        env.update(USER=pw.pw_name, HOME=pw.pw_dir, SHELL=pw.pw_shell or "/bin/bash")
        return env

    # -- the script ----------------------------------------------------------------------------
    def gpulab_batch_script(self) -> tuple[str, str]:
        """Override in the GPU spawner: (the rendered script, its partition ('' = default)),
        built from validated values only, never from user_options."""
        raise NotImplementedError

    async def submit_batch_script(self):
        """Submit gpulab's own script. (batchspawner's version renders its template with
        ``user_options`` merged in; this one never reads them.)"""
        pw = await self.gpulab_account()
        script, partition = self.gpulab_batch_script()
        prefix = [p.format(user=pw.pw_name) for p in self.submit_prefix]
        env = self.get_env()
        env.setdefault("PATH", os.environ.get("PATH", os.defpath))
        self.log.debug("SLURM script for %s:\n%s", self._log_name, script)
        try:
            self.job_id = await cli.submit(script, prefix, env)
        except (RuntimeError, cli.SlurmUnavailable) as e:
            raise SpawnException(
                f"SLURM refused the job: {e}. Ask an admin to check the slurm settings of gpulab.",
                reason="sbatch", status_code=500,
            ) from None
        self.slurm_job = {"job_id": self.job_id, "submitted": _now_iso(), "user": pw.pw_name,
                          "partition": partition}
        self.log.info("[gpulab] %s: submitted SLURM job %s", self._log_name, self.job_id)
        return self.job_id

    # -- following the job ---------------------------------------------------------------------
    async def query_job_status(self):
        """batchspawner's contract (JobStatus), from one squeue."""
        from batchspawner.batchspawner import JobStatus

        view = await self._view()
        if view is None:
            return JobStatus.UNKNOWN
        if view.running or view.paused:
            return JobStatus.RUNNING
        if view.pending:
            return JobStatus.PENDING
        return JobStatus.NOTFOUND

    async def _view(self, fresh: bool = False) -> JobView | None:
        """The job now (None: the controller does not answer). Cached briefly."""
        if not self.job_id:
            return JobView("")
        cached = getattr(self, "_view_cache", None)
        if not fresh and cached and time.monotonic() - cached[0] < self.poll_cache_seconds and cached[1] == self.job_id:
            return cached[2]
        try:
            view = await cli.squeue_job(self.job_id)
        except cli.SlurmUnavailable as e:
            self.log.warning("[gpulab] %s: SLURM does not answer: %s", self._log_name, e)
            return None
        self._view_cache = (time.monotonic(), self.job_id, view)
        self.job_status = f"{view.state} {view.reason} {view.nodes}".strip()
        return view

    async def start(self):
        self.port = 0
        self.ip = self.listen_ip
        if self.server:
            self.server.port = 0
        self._slurm_starting = True
        try:
            await self.submit_batch_script()
            view = await self._wait_running()
            await self._record_running(view)
            await self._wait_port()
        except BaseException:
            if self.job_id:  # a job we gave up on must not start later without a hub behind it
                await cli.cancel(self.job_id, self._cancel_prefix())
                await self._record_end()
            raise
        finally:
            self._slurm_starting = False
        return self.ip, self.port

    async def _wait_running(self) -> JobView:
        began = time.monotonic()
        shown = None
        positions_at = 0.0
        position = queued = None
        partition = ""
        while True:
            view = await self._view(fresh=True)
            if view is None:
                key = ("unavailable",)
                if key != shown:
                    shown = key
                    self.gpulab_event("The SLURM controller does not answer; trying again ...")
            elif view.running or view.paused:
                return view
            elif view.pending:
                sentence, hopeless = explain(view.reason)
                if hopeless:
                    raise SpawnException(
                        f"SLURM cannot start your server: {sentence} [{view.reason}]. "
                        "Ask an admin to check gpulab's slurm settings or your SLURM account.",
                        reason="slurm_" + view.reason, status_code=409,
                    )
                if time.monotonic() - positions_at > 10:
                    positions_at = time.monotonic()
                    if not partition:
                        partition = self.slurm_job.get("partition") or await cli.default_partition()
                        self.slurm_job["partition"] = partition
                    position, queued = queue_position(self.job_id, await cli.pending_ids(partition))
                start_min = view.start.replace(second=0) if view.start else None
                key = (view.reason, position, start_min)
                if key != shown:
                    shown = key
                    self.gpulab_event(pending_message(self.job_id, view, dt.datetime.now(), position, queued),
                                      progress=30)
            else:
                rec = await cli.job_record(self.job_id)
                raise SpawnException(
                    ended_message(self.job_id, rec, self._log_path(), " before the server started") + ".",
                    reason="job_ended", status_code=500,
                )
            # a job on a free cluster starts within a second: look often at first, then calmly
            await asyncio.sleep(0.5 if time.monotonic() - began < 10 else self.queue_poll_interval)

    async def _record_running(self, view: JobView) -> None:
        rec = await cli.job_record(self.job_id)
        node = (rec.nodes if rec else "") or view.nodes
        self.slurm_job.update(
            started=(rec.start.isoformat() if rec and rec.start else _now_iso()), node=node,
            partition=(rec.partition if rec else "") or self.slurm_job.get("partition", ""),
        )
        if rec and rec.gpu_ids:
            self.slurm_job["gpu_ids"] = rec.gpu_ids
        # where the hub reaches the server: loopback on a single-node cluster, else the node's
        # NodeAddr (the address SLURM itself uses for it)
        self.ip = "127.0.0.1" if self.listen_ip.startswith("127.") else await cli.node_address(node)
        gpus = f" with GPUs {rec.gpu_ids}" if rec and rec.gpu_ids else ""
        self.gpulab_event(f"SLURM job {self.job_id} is running on {node}{gpus}; waiting for JupyterLab ...",
                          progress=50)

    async def _wait_port(self) -> None:
        """batchspawner-singleuser reports its port through the hub API; until it does, check
        that the job is still alive (batchspawner alone would wait for start_timeout)."""
        checked = time.monotonic()
        while self.port == 0:
            await asyncio.sleep(0.2)
            if time.monotonic() - checked >= self.queue_poll_interval:
                checked = time.monotonic()
                view = await self._view(fresh=True)
                if view is not None and not (view.running or view.paused):
                    rec = await cli.job_record(self.job_id)
                    raise SpawnException(
                        ended_message(self.job_id, rec, self._log_path(), " before the server answered") + ".",
                        reason="job_ended", status_code=500,
                    )

    async def poll(self):
        if not self.job_id:
            return 0
        view = await self._view()
        if view is None or view.running or view.paused:
            return None  # an unreachable controller is not a dead server
        if view.pending and getattr(self, "_slurm_starting", False):
            return None
        if view.pending:  # it ran, and SLURM requeued it (preemption): the server is gone
            self.log.warning("[gpulab] %s: SLURM job %s was requeued; cancelling it", self._log_name, self.job_id)
            await cli.cancel(self.job_id, self._cancel_prefix())
        rec = await self._record_end()
        self.log.warning("[gpulab] %s: %s", self._log_name, ended_message(self.job_id, rec))
        return 1

    async def stop(self, now=False):
        if not self.job_id:
            return
        self.log.info("[gpulab] %s: cancelling SLURM job %s", self._log_name, self.job_id)
        await cli.cancel(self.job_id, self._cancel_prefix())
        if not now:
            # done once SLURM stops the job: COMPLETING only cleans up, and SLURM gives its
            # GPUs to no one else before it is finished
            for _ in range(20):
                view = await self._view(fresh=True)
                if view is not None and view.state not in ("RUNNING", "PENDING", "CONFIGURING", "SUSPENDED"):
                    break
                await asyncio.sleep(0.5)
        await self._record_end()

    async def _record_end(self):
        """How the job ended, into ``slurm_job`` (read by usage/billing hooks before the state is
        cleared)."""
        rec = await cli.job_record(self.job_id) if self.job_id else None
        job = getattr(self, "slurm_job", None)
        if job is None or job.get("ended"):
            return rec
        job["ended"] = (rec.end.isoformat() if rec and rec.end and rec.state not in ("RUNNING", "PENDING")
                        else _now_iso())
        job["end_state"] = rec.state if rec else "GONE"
        if rec and rec.exit_code:
            job["exit_code"] = rec.exit_code
        self.log.info("[gpulab] %s: usage %s", self._log_name, job)
        return rec

    def _cancel_prefix(self) -> list[str]:
        # root (or a SLURM operator) cancels any job; otherwise cancel as the job's user
        if os.geteuid() == 0:
            return []
        return [p.format(user=self.system_user) for p in self.submit_prefix]

    def _log_path(self) -> str:
        return os.path.join(self.req_homedir, f"jupyterhub_slurmspawner_{self.job_id}.log") if self.job_id else ""

    async def progress(self):
        # gpulab_event lines already say what the job does; batchspawner's own generator would
        # repeat "Pending in queue..." every second
        return
        yield  # pragma: no cover

    # -- state ---------------------------------------------------------------------------------
    def get_state(self):
        state = super().get_state()
        job = getattr(self, "slurm_job", None)
        if job and self.job_id:
            state["slurm_job"] = dict(job)
        return state

    def load_state(self, state):
        super().load_state(state)
        if state.get("slurm_job"):
            self.slurm_job = dict(state["slurm_job"])

    def clear_state(self):
        super().clear_state()
        self._view_cache = None
