"""A throwaway PostgreSQL server (Debian's postgresql package), started and stopped by tests.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` system user
(created by the Debian package). It listens on 127.0.0.1 and a private Unix socket directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time

import sqlalchemy as sa

from .hubproc import free_port


def pg_bindir() -> str | None:
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(d, "initdb")):
            return d
    found = shutil.which("initdb")
    return os.path.dirname(found) if found else None


class PGServer:
    def __init__(self, fsync: bool = False):
        self.bindir = pg_bindir()
        if not self.bindir:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="gpulab-pg-")
        self.data = os.path.join(self.dir, "data")
        self.fsync = fsync
        self.as_root = os.geteuid() == 0
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str, **kw) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)

    def start(self) -> PGServer:
        self._run(os.path.join(self.bindir, "initdb"), "-D", self.data, "-A", "trust", "-U", "gpulab",
                  "--no-sync", "-E", "UTF8")
        self.resume()
        return self

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://gpulab@127.0.0.1:{self.port}/{db}"

    def create_db(self, name: str) -> str:
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)

    def restart(self) -> None:
        """Stop and start the server (fast shutdown): drops every open connection."""
        ctl = os.path.join(self.bindir, "pg_ctl")
        # -l: the new postmaster must not inherit our pipes, or run() waits for it forever
        self._run(ctl, "-D", self.data, "-m", "fast", "-l", os.path.join(self.dir, "server.log"), "-w", "restart")

    def pause(self) -> None:
        """Stop the server, keeping its data (a database outage); :meth:`resume` brings it back."""
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=300 "
                f"-c fsync={'on' if self.fsync else 'off'} -c shared_buffers=64MB")
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-o", opts,
                  "-l", os.path.join(self.dir, "server.log"), "-w", "start")

    def stop(self) -> None:
        try:
            self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def cpu_seconds(self) -> float:
        """CPU time the server has used so far: the postmaster, its live backends and the ones
        that have exited (reaped into the postmaster's children times). For benchmarks."""
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            master = int(f.readline())
        total = 0
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:  # exited while we looked
                continue
            if int(pid) == master:  # utime, stime, cutime, cstime
                total += sum(int(x) for x in fields[11:15])
            elif int(fields[1]) == master:
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def wait(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        engine = sa.create_engine(self.url())
        while True:
            try:
                with engine.connect():
                    break
            except sa.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        engine.dispose()
