"""A private Docker engine (dockerd) for tests, benchmarks and CI image builds.

It runs beside any system Docker with its own data-root, exec-root, socket and pid file under
one directory, no iptables, no bridge (containers use host networking, so hub<->server traffic
stays on 127.0.0.1). A stub ``nvidia-container-runtime-hook`` on dockerd's PATH makes dockerd 20.10
register its NVIDIA device driver, so containers with GPU device requests start on a machine
without GPUs; the stub logs the devices each container asked for to ``<root>/logs/nvidia-hook.log``.

Usage: ``python images/engine.py start|stop|status ROOT`` (prints ``DOCKER_HOST=...``), or
``DockerEngine(root).start()`` from Python.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HOOK = r"""#!/bin/sh
# Stub of nvidia-container-runtime-hook (no GPU here): record what the container asked for.
# Plain sh/sed/grep (no Python): it runs on every GPU container's start.
bundle=$(sed -n 's/.*"bundle": *"\([^"]*\)".*/\1/p')
env=$(grep -o '"NVIDIA_[A-Z_]*=[^"]*"' "$bundle/config.json" | tr -d '"' | tr '\n' ' ')
echo "$(date -u +%FT%TZ) args=[$*] $env" >> "{log}"
exit 0
"""


class EngineError(RuntimeError):
    pass


class DockerEngine:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.sock = self.root / "docker.sock"
        self.pidfile = self.root / "docker.pid"
        self.log = self.root / "logs" / "dockerd.log"
        self.hook_log = self.root / "logs" / "nvidia-hook.log"
        self.owned = False  # True when this object started dockerd (and so stops it)

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def ping(self) -> bool:
        import docker

        try:
            client = docker.DockerClient(base_url=self.host, timeout=5)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False

    def start(self, timeout: float = 60) -> DockerEngine:
        """Start dockerd, or reuse the one already running on this root."""
        if self.pid() and self.ping():
            return self
        dockerd = shutil.which("dockerd")
        if not dockerd:
            raise EngineError("dockerd is not installed (Debian: apt-get install docker.io)")
        for d in ("data", "exec", "logs", "bin"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        hook = self.root / "bin" / "nvidia-container-runtime-hook"
        hook.write_text(HOOK.replace("{log}", str(self.hook_log)))
        hook.chmod(0o755)
        env = dict(os.environ, PATH=f"{self.root / 'bin'}{os.pathsep}{os.environ.get('PATH', os.defpath)}")
        cmd = [
            dockerd, "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
            "-H", self.host, "--pidfile", str(self.pidfile), "--storage-driver", "overlay2",
            "--iptables=false", "--ip-masq=false", "--bridge=none",
        ]
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.owned = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise EngineError(f"dockerd exited with {proc.returncode}:\n{self.log_tail()}")
            if self.ping():
                return self
            time.sleep(0.25)
        raise EngineError(f"dockerd did not answer in {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> None:
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.pid():
                time.sleep(0.2)
            if self.pid():
                os.kill(pid, signal.SIGKILL)
        # dockerd leaves its network-namespace mount behind; without this the directory
        # cannot be removed
        subprocess.run(["umount", str(self.root / "exec" / "netns" / "default")], capture_output=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def hook_lines(self) -> list[str]:
        try:
            return self.hook_log.read_text().splitlines()
        except OSError:
            return []


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop", "status"):
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    engine = DockerEngine(argv[1])
    if argv[0] == "start":
        engine.start()
        print(f"DOCKER_HOST={engine.host}")
    elif argv[0] == "stop":
        engine.stop()
    else:
        up = engine.ping()
        print(f"DOCKER_HOST={engine.host} {'up' if up else 'down'}")
        return 0 if up else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
