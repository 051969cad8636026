"""A real single-node SLURM cluster with 4 fake GPUs, for the SLURM backend's tests.

Debian's ``munge slurmctld slurmd slurm-client`` (installed by ``.ci/run``), started by hand (no
systemd), as root. Nothing is written under /etc/slurm: the cluster's ``slurm.conf`` and
``gres.conf`` live in a throwaway directory that ``SLURM_CONF`` points at (every SLURM command
and daemon honours it, and jobs inherit it), on ports of their own, so a cluster the machine
may already run is untouched. The fake GPUs are character devices (``mknod``, major 195 as
NVIDIA's): SLURM then sets ``CUDA_VISIBLE_DEVICES`` in jobs as on real hardware.

munged may be shared with others on the machine: it is started only when none runs, and then
stopped by its pid file on teardown. Our slurmctld/slurmd are stopped by their pid files.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.ports import free_port

MUNGE_PID = Path("/run/munge/munged.pid")
GPUS = 4


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def missing() -> str | None:
    """What this machine lacks to run the cluster (None: all there)."""
    if os.geteuid() != 0:
        return "root (SLURM daemons and per-user jobs)"
    for exe in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sudo"):
        if not shutil.which(exe) and not os.path.exists(f"/usr/sbin/{exe}"):
            return f"{exe} (Debian packages munge slurmctld slurmd slurm-client sudo)"
    return None


class SlurmCluster:
    def __init__(self, cpus: int = 16, memory_mb: int = 64000, gres_type: str = "a100", shards_per_gpu: int = 0):
        """``shards_per_gpu``: also offer every GPU as that many gres/shard (SLURM's GPU sharing)."""
        self.dir = Path(tempfile.mkdtemp(prefix="gpulab-slurm-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.conf = self.dir / "etc" / "slurm.conf"
        self.node = socket.gethostname().split(".")[0]
        self.cpus, self.memory_mb, self.gres_type = cpus, memory_mb, gres_type
        self.shards = shards_per_gpu
        self.started_munge = False
        self._old_conf = os.environ.get("SLURM_CONF")

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 30) -> SlurmCluster:
        for sub in ("etc", "state", "spool", "log", "run", "dev"):
            (self.dir / sub).mkdir(exist_ok=True)
        self._start_munge()
        self._fake_gpus()
        self._write_conf()
        os.environ["SLURM_CONF"] = str(self.conf)
        subprocess.run(["slurmctld", "-c", "-f", str(self.conf)], check=True, capture_output=True)
        subprocess.run(["slurmd", "-f", str(self.conf)], check=True, capture_output=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.sinfo_state()
            if state == "idle":
                return self
            time.sleep(0.3)
        raise RuntimeError(f"SLURM node not idle after {timeout}s (state {self.sinfo_state()!r}):\n{self.logs()}")

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "--state=PENDING,RUNNING,SUSPENDED"] + self._all_users(),
                       capture_output=True)
        for name in ("slurmd", "slurmctld"):
            pid = _alive(self.dir / "run" / f"{name}.pid")
            if pid:
                os.kill(pid, signal.SIGTERM)
        for name in ("slurmd", "slurmctld"):
            for _ in range(50):
                if not _alive(self.dir / "run" / f"{name}.pid"):
                    break
                time.sleep(0.1)
        if self.started_munge:
            pid = _alive(MUNGE_PID)
            if pid:
                os.kill(pid, signal.SIGTERM)
        if self._old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self._old_conf
        shutil.rmtree(self.dir, ignore_errors=True)

    def _all_users(self) -> list[str]:
        out = self.run("squeue", "-h", "-o", "%u").stdout.split()
        return [f"--user={u}" for u in sorted(set(out))] or ["--user=root"]

    # -- pieces ------------------------------------------------------------------------------
    def _start_munge(self) -> None:
        if _alive(MUNGE_PID) or subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode == 0:
            return  # someone's munged runs: share it (same key, /etc/munge/munge.key)
        key = Path("/etc/munge/munge.key")
        if not key.exists() or key.stat().st_size == 0:
            subprocess.run(["mungekey", "--create", "--force"], check=True, capture_output=True)
        for d in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
            os.makedirs(d, exist_ok=True)
            shutil.chown(d, "munge", "munge")
        shutil.chown(key, "munge", "munge")
        os.chmod(key, 0o400)
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True, capture_output=True)
        self.started_munge = True
        for _ in range(50):
            if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("munged does not answer")

    def _fake_gpus(self) -> None:
        for i in range(GPUS):
            dev = self.dir / "dev" / f"nvidia{i}"
            try:
                os.mknod(dev, 0o666 | 0o020000, os.makedev(195, i))  # S_IFCHR
            except OSError:
                os.symlink("/dev/null", dev)  # where mknod is not allowed (SLURM still counts it)

    def _write_conf(self) -> None:
        d = self.dir
        self.conf.write_text(f"""\
ClusterName=gpulabtest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
AuthType=auth/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,batch_sched_delay=0,sched_min_interval=100000
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=3
MinJobAge=300
GresTypes={"gpu,shard" if self.shards else "gpu"}
SlurmdParameters=config_overrides
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} Gres={self._gres()} State=UNKNOWN
PartitionName=main Nodes={self.node} Default=YES DefaultTime=01:00:00 MaxTime=INFINITE State=UP
""")
        gres = [f"Name=gpu Type={self.gres_type} File={d}/dev/nvidia[0-{GPUS - 1}]"]
        # sharding: each GPU's device file offered as that many shards (SLURM keeps a GPU
        # either whole or sharded, never both at once)
        gres += [f"Name=shard Count={self.shards} File={d}/dev/nvidia{i}" for i in range(GPUS) if self.shards]
        (d / "etc" / "gres.conf").write_text("\n".join(gres) + "\n")
        os.chmod(d / "etc", 0o755)

    def _gres(self) -> str:
        out = f"gpu:{self.gres_type}:{GPUS}"
        return f"{out},shard:{self.shards * GPUS}" if self.shards else out

    # -- queries -----------------------------------------------------------------------------
    def run(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, SLURM_CONF=str(self.conf)))

    def sinfo_state(self) -> str:
        return self.run("sinfo", "-h", "-o", "%T").stdout.strip()

    def jobs(self, user: str | None = None) -> list[dict]:
        argv = ["squeue", "-h", "-o", "%i|%u|%T|%r|%k"]
        if user:
            argv += ["-u", user]
        out = []
        for line in self.run(*argv).stdout.splitlines():
            i, u, t, r, k = line.split("|")
            out.append({"id": i, "user": u, "state": t, "reason": r, "comment": k})
        return out

    def scancel(self, job_id: str) -> None:
        self.run("scancel", job_id)

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld", "slurmd"):
            p = self.dir / "log" / f"{name}.log"
            if p.exists():
                parts.append(f"--- {name}.log\n" + "\n".join(p.read_text(errors="replace").splitlines()[-20:]))
        return "\n".join(parts)
