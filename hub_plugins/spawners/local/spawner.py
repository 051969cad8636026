"""Local-process backend (the embedded default): servers are processes on the hub's machine.

Applying an allocation = environment variables: ``CUDA_VISIBLE_DEVICES`` and
``NVIDIA_VISIBLE_DEVICES`` list the allocated devices (indices, or MIG UUIDs), empty for a CPU-only
server, and the kernel's limits (``hub_plugins/isolation``): each server in its own cgroups (or
systemd scope) with its memory, CPU and GPU device nodes. When the hub runs as root each hub user
runs as their own system user, created on first spawn; otherwise every server runs as the hub's
own user and a warning says users are not isolated.
"""

from __future__ import annotations

import functools
import os
import pwd
import sys

from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid
from traitlets import Enum, Unicode, default

from ...isolation import MODES, Enforcer, oom_message
from ...isolation.plan import cgroup_name
from ...lifeline import LOADER_PREFIX, LOADER_VARS
from ...envs.status import Environments, describe
from ...settings.schema import DEFAULTS
from ...reconcile.local import LocalRuntime, adoption, is_zombie, lifeline_command, runs_server
from ...settings.typed import LocalSettings
from ..errors import SpawnException
from ..mixin import GPUSpawnerMixin
from .exits import open_pidfd, wait_exit
from .ports import PortsMixin
from .sysusers import ensure_user, executable_by, groups_of, system_username

# enables hub_plugins.lab (GPUs and time left in JupyterLab's title) where gpulab is installed
LAB_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "lab", "jupyter-config")

_warned_shared = False


@functools.lru_cache(maxsize=4096)
def _cgroup_of(user: str, server: str, hub: str) -> str:
    # named at each spawn and stop, several times (hashes and a regex): once per server here
    return f"{cgroup_name(user, server)}-{hub}"


def _hub_tag(core) -> str:
    return core.hub_id[:6]  # ends each of this hub's cgroup names (its start-up sweep looks for it)


class LocalGPUSpawner(PortsMixin, GPUSpawnerMixin, LocalProcessSpawner):
    """GPU-aware local processes."""

    # the server's own process binds its port on this host, nothing in between: a start's wait
    # looks for it in the kernel's socket table and ends when it listens (an HTTP request of
    # gpulab's own cost the hub's thread about 5 ms per spawn at 50 at once, beside JupyterHub's
    # own check that follows; a refused connection per probe, another 7% of it)
    gpulab_listening_is_up = True

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

    limits_mode = Enum(
        list(MODES),
        DEFAULTS["local"]["limits"],
        config=True,
        help="""How servers are held to their memory, CPU and GPU devices: 'auto' (a transient
        systemd scope per server where systemd runs the host, else the cgroup filesystem, v2 or
        v1), 'systemd', 'cgroup', or 'off'. What the host cannot enforce is said at start-up and
        not promised on the spawn form.""",
    )
    device_dir = Unicode(
        "/dev", config=True,
        help="Where the GPU device nodes are (nvidia<index>); each server may open only its own.",
    )

    @default("shared_home_root")
    def _default_shared_home_root(self):
        return os.path.join(os.getcwd(), "homes")

    _enforcers: dict = {}

    @property
    def gpulab_enforcer(self) -> Enforcer:
        """What this host enforces, found once per process (mode, device dir)."""
        key = (self.limits_mode, self.device_dir)
        if key not in self._enforcers:
            enforcer = LocalGPUSpawner._enforcers[key] = Enforcer.detect(*key)
            self.log.info("%s", enforcer.summary())
        return self._enforcers[key]

    def gpulab_enforced_limits(self) -> set[str]:
        return set(self.gpulab_enforcer.controls)

    @property
    def gpulab_cgroup(self) -> str:
        """The server's cgroup / scope name: per (user, server) and per hub (its database), so
        that two hubs on one host never share, nor clean up, each other's servers."""
        return _cgroup_of(self.user.name, self.name or "", _hub_tag(self.gpulab))

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
        prefix = Environments.instance(config=self.config).prefix(profile)
        return os.path.join(prefix, "bin", "jupyterhub-singleuser")

    def gpulab_profile_info(self, profile) -> dict:
        """The environment's state in words (being installed, failed, its size for admins)."""
        envs = Environments.instance(config=self.config)
        return describe(envs.state(profile), profile.name, bool(self.user and self.user.admin), envs.build_missing)

    def gpulab_profile_available(self, profile):
        if not profile.local_prefix:
            return False, "it has no environment for the local backend (no 'local' section)"
        info = self.gpulab_profile_info(profile)
        if not info["ok"]:
            return False, info["why"]
        exe = self._singleuser(profile)
        if not os.access(exe, os.X_OK):
            return False, f"its environment is not installed ({exe} is missing)"
        return True, ""

    async def gpulab_apply(self, allocation, spec):
        profile = spec.profile
        if os.geteuid() == 0 and self.system_users == "never":
            raise SpawnException(
                "The hub runs as root and local.system_users is 'never', so this server would run as root "
                "beside the hub's secrets. An admin must set local.system_users: auto.",
                reason="config", status_code=500)
        exe = self._singleuser(profile)
        self.cmd = [exe, *profile.local_args]
        self.default_url = profile.default_url
        self._gpulab_bin = os.path.dirname(exe)
        if not self.isolated:
            global _warned_shared
            if not _warned_shared:
                _warned_shared = True
                self.log.warning(
                    "gpulab: the hub is not running as root, so every server runs as %s: "
                    "users are NOT isolated from each other (files, processes, GPUs).",
                    os.environ.get("USER", os.geteuid()),
                )
            os.makedirs(self.shared_home, mode=0o700, exist_ok=True)
        enforcer = self.gpulab_enforcer
        limits = None
        if enforcer.controls:
            placed = all(d.addressable for d in allocation.devices)
            limits = enforcer.limits(profile, spec.limits, [d.index for d in allocation.devices] if placed else None)
        name, user = self.gpulab_cgroup, self.system_user if self.isolated else None

        def prepare():
            # the system user and the server's cgroups in one trip to the worker threads (at 50
            # spawns at once each trip waited ~0.1 s for the hub's loop to take its result back)
            pw = ensure_user(user, self.home_root) if user else None
            problem = pw and executable_by(exe, pw.pw_uid, groups_of(pw))
            if not problem and limits is not None:
                enforcer.prepare(name, limits)
            return pw, problem

        self._gpulab_limits = None
        pw, problem = await self.gpulab.run(prepare)
        if problem:
            raise SpawnException(
                f"Profile '{profile.name}' cannot run as system user {pw.pw_name}: {problem}. "
                "An admin must install its environment where every user can read it.",
                reason="environment",
                status_code=500,
            )
        if limits is not None:
            self.gpulab_hold(limits, pw)

    def gpulab_hold(self, limits, pw) -> None:
        """Hold this server to ``limits`` in the cgroups (or systemd scope) ``gpulab_apply``
        prepared: its command wrapped to join them, and what JupyterLab shows."""
        enforcer = self.gpulab_enforcer
        self._gpulab_limits = limits
        # JupyterHub exports these as MEM_LIMIT/CPU_LIMIT (resource displays in JupyterLab)
        self.mem_limit, self.cpu_limit = limits.mem_bytes, limits.cpus
        self.cmd = enforcer.wrap(self.cmd, self.gpulab_cgroup, limits, pw.pw_uid if pw else None,
                                 pw.pw_gid if pw else None)
        self.gpulab_event(f"Held to {limits.describe()} ({enforcer.kind})")

    # -- running as the right user ---------------------------------------------------------
    def gpulab_become_args(self) -> list[str] | None:
        """The lifeline's ``--join``/``--user``/``--chdir``: what the server's first process does
        before the server runs, so that the hub's fork runs no Python in the child and the kernel
        can use vfork (lifeline.py). None: a systemd scope, whose systemd-run drops root itself
        (``--uid``); the pre-exec function below stays for it."""
        enforcer = self.gpulab_enforcer
        if self.isolated and enforcer.kind == "systemd":
            return None
        join = enforcer.procs_files(self.gpulab_cgroup) if getattr(self, "_gpulab_limits", None) else []
        args = [a for path in join for a in ("--join", path)]
        if self.isolated:
            return [*args, "--user", self.system_user, "--chdir", pwd.getpwnam(self.system_user).pw_dir]
        return [*args, "--chdir", self.shared_home]

    def make_preexec_fn(self, name):
        if getattr(self, "_gpulab_by_lifeline", False):  # the lifeline does it all (start)
            return None
        enforcer = self.gpulab_enforcer
        join = enforcer.joiner(self.gpulab_cgroup) if getattr(self, "_gpulab_limits", None) else None
        if self.isolated and enforcer.kind == "systemd":  # systemd-run drops root itself (--uid)
            home = pwd.getpwnam(self.system_user).pw_dir
            become = lambda: os.chdir(home)  # noqa: E731
        elif self.isolated:
            become = set_user_setuid(self.system_user)
        else:
            home = self.shared_home
            become = lambda: os.chdir(home)  # noqa: E731

        def preexec():
            if join is not None:  # into the server's cgroups while still root, before exec
                join()
            become()

        return preexec

    # -- what really runs (reconcile/local.py) ----------------------------------------------
    @classmethod
    def gpulab_make_runtime(cls, core, config):
        enforcer = cls(config=config).gpulab_enforcer  # no user: only to read limits_mode and device_dir
        tag = _hub_tag(core)
        return LocalRuntime(core.hub_id, os.path.join(core.state_dir, "lifelines"),
                            leftovers=lambda: enforcer.sweep(f"-{tag}"))

    async def gpulab_adopt(self, found) -> bool:
        taken = adoption(self.gpulab_runtime, found)
        if not taken:
            return False
        self.pid, self.api_token = taken["pid"], taken["api_token"] or self.api_token
        if taken["port"]:
            self.port = taken["port"]
        self._gpulab_adopted_url = found.url
        return True

    # -- when it ends: why, and nothing left behind ------------------------------------------
    async def start(self):
        # the server runs under its lifeline, which writes its heartbeat through this descriptor
        # (see lifeline.py): a server that dies while the hub is down is charged until it died
        held, runtime = self.gpulab_held, self.gpulab_runtime
        fd = runtime.open_lifeline(held.spawn_id) if held and runtime else None
        cmd, popen = self.cmd, self.popen_kwargs
        become = self.gpulab_become_args() if fd is not None else None
        self._gpulab_by_lifeline = become is not None
        if fd is not None:
            self.cmd = lifeline_command(fd, self.gpulab.heartbeat_seconds, become=become or []) + list(cmd)
            self.popen_kwargs = {**popen, "pass_fds": (*popen.get("pass_fds", ()), fd)}
        self._gpulab_take_port()  # given back by clear_state, once the server's process is gone
        try:
            return await super().start()
        except SpawnException as e:
            if e.reason == "exited" and await self._gpulab_memory_killed():
                raise SpawnException(f"The server was stopped while starting. {self._gpulab_oom_text()}",
                                     reason="oom", status_code=500) from None
            raise
        finally:
            self.cmd, self.popen_kwargs = cmd, popen
            self._gpulab_by_lifeline = False
            if fd is not None:
                os.close(fd)

    def _gpulab_oom_text(self) -> str:
        return oom_message(getattr(self, "_gpulab_limits", None))

    async def _gpulab_memory_killed(self) -> bool:
        enforcer = self.gpulab_enforcer
        return bool(enforcer.controls) and await self.gpulab.run(enforcer.killed_for_memory, self.gpulab_cgroup)

    async def _signal(self, sig):
        """JupyterHub's (True: the process is still there), but for a server that is no child of
        this hub (run before a restart, or adopted) only while its pid is still that server's
        (``runs_server``): JupyterHub took whatever program had the pid since (a reboot, pids
        wrapped) for the server, and stopped it. And a zombie is gone: an adopted server that
        exits stays one until init reaps it (its stop sent SIGTERM and SIGKILL at once)."""
        if self.proc is None and self.pid and not runs_server(self.pid, self.gpulab.hub_id, self.user.name,
                                                              self.name or ""):
            return False
        alive = await super()._signal(sig)
        return alive and (self.proc is not None or not is_zombie(self.pid))

    async def wait_for_death(self, timeout=10):
        """JupyterHub's wait, but woken the moment the server's process exits (``exits.py``)
        rather than by polls at random, growing intervals; their way where there is no pidfd."""
        pidfd = open_pidfd(self.pid)
        if pidfd is None:
            return await super().wait_for_death(timeout)
        await wait_exit(pidfd, timeout)
        return await self.poll() is not None

    def run_post_stop_hook(self):
        """The mixin's, without an await where none is needed: the usual stop's clean-up and
        release are done at once on the loop (``gpulab_release_now``) and JupyterHub gets None.
        A coroutine runs as a task, and at 50 stops at once each turn of the loop it waits for
        cost ~50 ms (measured: 170 ms p50 against stock's 1 ms). Else (a post_stop_hook, a
        clean-up left for a worker thread, SQLite's lock taken) an awaitable for the rest."""
        if self.post_stop_hook is not None:
            return super().run_post_stop_hook()
        self.gpulab_heal_hub_session()
        cleanup = self.gpulab_stop_cleanup()
        if cleanup is None and self.gpulab_release_now():
            return None
        return self.gpulab_post_stop(cleanup)

    def gpulab_stop_cleanup(self):
        """The server's cgroups once it stopped: what it left there killed, the cgroups removed,
        whether the kernel stopped it for its memory (the usage record's reason); and, when they
        are gone, the release needs no look through /proc for what it left
        (``recovery.release_stopped``). None when there was nothing left to do in a worker thread:
        the cgroups were empty and are removed here."""
        enforcer = self.gpulab_enforcer
        if not enforcer.controls:
            return None
        name, core, log = self.gpulab_cgroup, self.gpulab, self.log
        user_name, server_name = self.user.name, self.name or ""
        # gpulab_holding, not gpulab_held: the poll that saw the process dead has cleared
        # gpulab_held with the state
        limited, holding = getattr(self, "_gpulab_limits", None), self.gpulab_holding
        try:
            removed = enforcer.removed_if_empty(name)
        except Exception:  # the worker thread's clean-up tries again and says what is wrong
            removed = False
        if removed:
            # the usual stop: the server's processes exited and were reaped, so its cgroups are
            # empty and go right here, on the loop (a few syscalls, no waiting). In the worker
            # thread each syscall handed the GIL back and forth with the busy loop: at 50 stops
            # at once, ~50 thread switches a stop and 24,000 on the machine in a round's 200 stops
            # against stock's 5,000 (15,000 now; /proc)
            self._gpulab_contained = holding if limited and holding else None
            return None

        def cleanup() -> None:
            self._gpulab_contained = None  # never an earlier stop's
            try:
                oom, left, emptied = enforcer.killed_for_memory(name), enforcer.cleanup(name), enforcer.emptied(name)
                if emptied and limited and holding:
                    self._gpulab_contained = holding
                if oom:
                    text = self._gpulab_oom_text()
                    log.warning("[gpulab] %s: %s", self._log_name, text)
                    core.usage.set_pending_reason(user_name, server_name, f"oom: {text}")
                if left:
                    log.info("[gpulab] %s: stopped %d process(es) the server left behind", self._log_name, len(left))
            except Exception:  # never keep JupyterHub from releasing the server
                log.exception("[gpulab] %s: cleaning up its cgroups failed", self._log_name)

        return cleanup

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
        if getattr(self, "_gpulab_by_lifeline", False) and self.isolated:
            # the lifeline starts as root: what the dynamic loader obeys waits until it is the user
            for k in LOADER_VARS:
                if k in env:
                    env[LOADER_PREFIX + k] = env.pop(k)
        return env
