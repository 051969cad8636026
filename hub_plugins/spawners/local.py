"""Local-process backend (the embedded default): servers are processes on the hub's machine.

Applying an allocation = environment variables: ``CUDA_VISIBLE_DEVICES`` and
``NVIDIA_VISIBLE_DEVICES`` list the allocated devices (indices, or MIG UUIDs), empty for a CPU-only
server. When the hub runs as root each hub user runs as their own system user, created on first
spawn; otherwise every server runs as the hub's own user and a warning says users are not isolated.
"""

from __future__ import annotations

import asyncio
import os
import sys

from jupyterhub.spawner import LocalProcessSpawner, SpawnException, set_user_setuid
from traitlets import Enum, Unicode, default

from ..reconcile.local import LocalRuntime, adoption, lifeline_command
from .mixin import GPUSpawnerMixin
from .sysusers import ensure_user, executable_by, groups_of, system_username

_warned_shared = False


class LocalGPUSpawner(GPUSpawnerMixin, LocalProcessSpawner):
    """GPU-aware local processes."""

    gpulab_backend = "local"

    system_users = Enum(
        ["auto", "never"],
        "auto",
        config=True,
        help="""'auto': when the hub runs as root, run each hub user's servers as their own system
        user (prefix + name), created on first spawn. 'never': run every server as the hub's user.""",
    )
    system_user_prefix = Unicode(
        "jupyter-", config=True, help="Prefix of system user names, so 'root' maps to 'jupyter-root'."
    )
    home_root = Unicode("/home", config=True, help="Where system users' home directories are created.")
    shared_home_root = Unicode(
        config=True,
        help="""Where per-user working directories live when servers run as the hub's own user
        (not root). Each hub user gets a subdirectory.""",
    )

    @default("shared_home_root")
    def _default_shared_home_root(self):
        return os.path.join(os.getcwd(), "homes")

    @property
    def isolated(self) -> bool:
        return self.system_users == "auto" and os.geteuid() == 0

    @property
    def system_user(self) -> str:
        return system_username(self.user.name, self.system_user_prefix)

    @property
    def shared_home(self) -> str:
        return os.path.join(self.shared_home_root, self.system_user)

    # -- the seam --------------------------------------------------------------------------
    def _singleuser(self, profile) -> str:
        prefix = profile.local_prefix.replace("{hub}", sys.prefix)
        return os.path.join(prefix, "bin", "jupyterhub-singleuser")

    def gpulab_profile_available(self, profile):
        if not profile.local_prefix:
            return False, "it has no environment for the local backend (no 'local' section)"
        exe = self._singleuser(profile)
        if not os.access(exe, os.X_OK):
            return False, f"its environment is not installed ({exe} is missing)"
        return True, ""

    async def gpulab_apply(self, allocation, profile):
        exe = self._singleuser(profile)
        self.cmd = [exe, *profile.local_args]
        self.default_url = profile.default_url
        self._gpulab_bin = os.path.dirname(exe)
        if self.isolated:
            pw = await self.gpulab.run(ensure_user, self.system_user, self.home_root)
            problem = executable_by(exe, pw.pw_uid, groups_of(pw))
            if problem:
                raise SpawnException(
                    f"Profile '{profile.name}' cannot run as system user {pw.pw_name}: {problem}. "
                    "An admin must install its environment where every user can read it.",
                    reason="environment",
                    status_code=500,
                )
        else:
            global _warned_shared
            if not _warned_shared:
                _warned_shared = True
                self.log.warning(
                    "gpulab: the hub is not running as root, so every server runs as %s: "
                    "users are NOT isolated from each other (files, processes, GPUs).",
                    os.environ.get("USER", os.geteuid()),
                )
            os.makedirs(self.shared_home, mode=0o700, exist_ok=True)

    # -- what really runs (reconcile/local.py) ----------------------------------------------
    @classmethod
    def gpulab_make_runtime(cls, core, config):
        return LocalRuntime(core.hub_id, os.path.join(core.state_dir, "lifelines"))

    async def gpulab_adopt(self, found) -> bool:
        taken = adoption(self.gpulab_runtime, found)
        if not taken:
            return False
        self.pid, self.api_token = taken["pid"], taken["api_token"] or self.api_token
        if taken["port"]:
            self.port = taken["port"]
        self._gpulab_adopted_url = found.url
        return True

    async def start(self):
        # the server runs under its lifeline, which writes its heartbeat through this descriptor
        # (see lifeline.py): a server that dies while the hub is down is charged until it died
        held, runtime = self.gpulab_held, self.gpulab_runtime
        fd = runtime.open_lifeline(held.spawn_id) if held and runtime else None
        cmd, popen = self.cmd, self.popen_kwargs
        if fd is not None:
            self.cmd = lifeline_command(fd, self.gpulab.heartbeat_seconds) + list(cmd)
            self.popen_kwargs = {**popen, "pass_fds": (*popen.get("pass_fds", ()), fd)}
        try:
            return await super().start()
        finally:
            self.cmd, self.popen_kwargs = cmd, popen
            if fd is not None:
                os.close(fd)

    # -- running as the right user ---------------------------------------------------------
    def make_preexec_fn(self, name):
        if self.isolated:
            return set_user_setuid(self.system_user)
        home = self.shared_home

        def preexec():
            os.chdir(home)

        return preexec

    def user_env(self, env):
        if self.isolated:
            import pwd

            pw = pwd.getpwnam(self.system_user)
            env.update(USER=pw.pw_name, HOME=pw.pw_dir, SHELL=pw.pw_shell or "/bin/bash")
        else:
            env.update(USER=self.user.name, HOME=self.shared_home, SHELL="/bin/bash")
        return env

    def get_env(self):
        env = super().get_env()
        bindir = getattr(self, "_gpulab_bin", None)
        if bindir:  # the profile's environment first, so terminals and kernels use it
            env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', os.defpath)}"
        return env
