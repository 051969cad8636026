"""Local-process backend (the embedded default): servers are processes on the hub's machine.

Applying an allocation = environment variables: ``CUDA_VISIBLE_DEVICES`` and
``NVIDIA_VISIBLE_DEVICES`` list the allocated devices (indices, or MIG UUIDs), empty for a CPU-only
server. When the hub runs as root each hub user runs as their own system user, created on first
spawn; otherwise every server runs as the hub's own user and a warning says users are not isolated.
"""

from __future__ import annotations

import os
import pwd
import sys

from jupyterhub.spawner import LocalProcessSpawner, SpawnException, set_user_setuid
from traitlets import Enum, Unicode, default

from ...settings.schema import DEFAULTS
from ...settings.typed import LocalSettings
from ..mixin import GPUSpawnerMixin
from .sysusers import ensure_user, executable_by, groups_of, system_username

# enables hub_plugins.lab (GPUs and time left in JupyterLab's title) where gpulab is installed
LAB_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "lab", "jupyter-config")

_warned_shared = False


class LocalGPUSpawner(GPUSpawnerMixin, LocalProcessSpawner):
    """GPU-aware local processes."""

    system_users = Enum(
        ["auto", "never"],
        DEFAULTS["local"]["system_users"],
        config=True,
        help="""'auto': when the hub runs as root, run each hub user's servers as their own system
        user (prefix + name), created on first spawn. 'never': run every server as the hub's user.""",
    )
    system_user_prefix = Unicode(
        DEFAULTS["local"]["system_user_prefix"], config=True, help="Prefix of system user names, so 'root' maps to 'jupyter-root'."
    )
    home_root = Unicode(DEFAULTS["local"]["home_root"], config=True, help="Where system users' home directories are created.")
    shared_home_root = Unicode(
        config=True,
        help="""Where per-user working directories live when servers run as the hub's own user
        (not root). Each hub user gets a subdirectory.""",
    )

    @default("shared_home_root")
    def _default_shared_home_root(self):
        return os.path.join(os.getcwd(), "homes")

    @property
    def local_settings(self) -> LocalSettings:
        return LocalSettings(self.system_users, self.system_user_prefix, self.home_root, self.shared_home_root)

    @property
    def isolated(self) -> bool:
        return self.local_settings.isolated()

    @property
    def system_user(self) -> str:
        return system_username(self.user.name, self.system_user_prefix)

    @property
    def shared_home(self) -> str:
        """The working directory of a server that runs as the hub's user (not isolated)."""
        return self.local_settings.shared_home(self.system_user)

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
        if bindir and os.path.realpath(bindir) == os.path.realpath(os.path.join(sys.prefix, "bin")):
            # the hub's own environment has gpulab: its JupyterLab shows GPUs and time left
            env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(filter(None, [LAB_CONFIG, env.get("JUPYTER_CONFIG_PATH")]))
        return env
