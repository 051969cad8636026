"""The lifeline: a tiny parent process for one single-user server or one hub service.

Run as ``python -I -S lifeline.py [options] -- command ...`` (standard library only: it starts
in milliseconds and needs nothing the server's user may not read). It starts the command as its
child, which gets SIGKILL when the lifeline dies (Linux parent-death signal), so killing the
lifeline, whatever the signal, never leaves the server behind. Options:

- ``--beat-fd N --every S``: "beat <unix time>" into the file open on descriptor N every S
  seconds while the child lives, "exit <unix time> <status>" the moment it exits. The hub opens
  that file in its private state directory and hands over only the descriptor (the server's user
  can write its heartbeat, not open anything there). A server that dies while the hub is down is
  charged until it really died (at most S seconds lost if the lifeline is killed with SIGKILL).
- ``--with-parent PID``: SIGTERM when the parent (the hub) dies, even by SIGKILL; exit at once
  if it is already gone. Hub services live and die with the hub.
- ``--pidfile PATH``: one instance per file: a live lifeline named there (``stale``) is stopped
  first, with what it started. A restarted hub replaces a stale service holding a port.
- ``--grace S``: SIGINT/SIGTERM go on to the child's process group; SIGKILL after S seconds.
- ``--join FILE`` (repeated), ``--user NAME``, ``--chdir DIR``: first, while still root, its pid
  into each cgroup.procs FILE (the server's cgroups), then become NAME (groups, gid, uid), start
  in DIR, and give the server back the loader variables the hub renamed ``GPULAB_LOADER_<NAME>``:
  the hub's fork runs no Python in the child, so the kernel can use ``vfork`` (no copy of the
  loop's memory map, no waits on the cgroups' locks and the user's groups).
- ``--prebind``: binds the port of ``$JUPYTERHUB_SERVICE_URL`` and hands the listening socket
  over (``$GPULAB_LISTEN_FD``, ``services/base.py``): the hub's first look at a starting service
  waits for its answer instead of failing.

The exit status is the child's (128 + signal when it was killed by one), as a shell reports it.
Servers run ``lifeline.c`` where ``make install`` built it (the same, without a Python start).
"""

from __future__ import annotations

import os
import select
import sys
import time

try:
    # the C module under ``signal``: its Python layer only adds enums, and importing enum costs
    # a third of this process's CPU at each server's start (measured: 4.4 of 13 ms)
    import _signal as signal
except ImportError:  # another Python than CPython
    import signal

PR_SET_PDEATHSIG = 1
LINE = 64  # fixed-width record, rewritten in place
LOADER_PREFIX = "GPULAB_LOADER_"
# glibc's loader obeys these in every program, also one started as root (only set-uid programs
# ignore them): the hub renames them GPULAB_LOADER_<NAME> for a lifeline it starts as root (a
# plain rename, not an encoding: lifeline.c reads them too)
LOADER_VARS = ("GCONV_PATH", "GETCONF_DIR", "HOSTALIASES", "LD_AUDIT", "LD_DEBUG", "LD_DEBUG_OUTPUT",
               "LD_DYNAMIC_WEAK", "LD_HWCAP_MASK", "LD_LIBRARY_PATH", "LD_ORIGIN_PATH", "LD_PRELOAD",
               "LD_PROFILE", "LD_SHOW_AUXV", "LOCALDOMAIN", "LOCPATH", "MALLOC_TRACE", "NIS_PATH",
               "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TMPDIR", "TZDIR", "GLIBC_TUNABLES")


def _prctl_pdeathsig(sig: int) -> None:
    """prctl(PR_SET_PDEATHSIG, sig) through ``_ctypes``: importing ``ctypes`` costs each server's
    start 2 ms of CPU (a sixth of the lifeline's). ``ctypes`` where ``_ctypes`` lacks the calls."""
    try:
        import _ctypes

        prctl = _ctypes.dlsym(_ctypes.dlopen(None, _ctypes.RTLD_LOCAL), "prctl")
        _ctypes.call_function(prctl, (PR_SET_PDEATHSIG, sig, 0, 0, 0))
    except (ImportError, AttributeError, OSError):
        try:
            import ctypes

            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        except (ImportError, OSError, AttributeError):
            pass


NATIVE = "gpulab-lifeline"  # lifeline.c as ``make install`` builds it, beside the environment's python


def is_lifeline(argv: list[str]) -> bool:
    """Whether a process's command line runs a lifeline: this file, its bytecode in
    ``__pycache__`` (``bytecode.py``), which the hub runs in its place when current, or the
    compiled one (``lifeline.c``)."""
    if argv and os.path.basename(argv[0]) == NATIVE:
        return True
    return any(a.endswith("lifeline.py") or (os.path.basename(os.path.dirname(a)) == "__pycache__"
                                               and os.path.basename(a).startswith("lifeline.") and a.endswith(".pyc"))
               for a in argv)


def write_record(fd: int, text: str) -> None:
    data = text.encode()[: LINE - 1].ljust(LINE - 1) + b"\n"
    try:
        os.pwrite(fd, data, 0)
    except OSError:
        pass


def cmdline(pid: int) -> list[str]:
    """A process's command line; [] for a zombie or a process that is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _family(pid: int) -> dict[int, list[str]]:
    """pid and what descends from it (started by each one's main thread) -> command line."""
    out, todo = {}, [pid]
    while todo:
        p = todo.pop()
        out[p] = cmdline(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(k) for k in f.read().split()]
        except (OSError, ValueError):
            pass
    return out


def _signal(pid: int, sig: int, group: bool = False) -> None:
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _until(done, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)


def stale(pidfile: str) -> int:
    """The pid of the lifeline a previous hub left for ``pidfile`` (alive, a lifeline, for this
    very file), or 0: exited (a zombie has no command line), or its pid now another program's."""
    try:
        with open(pidfile) as f:
            old = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0
    args = cmdline(old) if old > 0 and old != os.getpid() else []
    return old if "--pidfile" in args and pidfile in args and is_lifeline(args) else 0


def replace_stale(pidfile: str, wait: float = 4.0) -> None:
    """Stop the lifeline a previous hub left for this pidfile and all it runs (never two of a
    service at once; what a lifeline too starved to act leaves is killed), then claim the file."""
    old = stale(pidfile)
    if old:
        procs = {p: cmd for p, cmd in _family(old).items() if cmd}
        left = lambda: [p for p, cmd in procs.items() if cmdline(p) == cmd]  # noqa: E731
        _signal(old, signal.SIGTERM)  # it stops its child (--grace) and exits
        _until(lambda: not left(), wait)
        for p in left():
            _signal(p, signal.SIGKILL)
        _until(lambda: not left(), 1.0)
    os.makedirs(os.path.dirname(pidfile) or ".", exist_ok=True)
    tmp = f"{pidfile}.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, pidfile)


def join_cgroups(procs_files: list[str]) -> None:
    """Move the calling process into a server's cgroups: here as root, or in the hub's child
    between fork and exec where no lifeline starts the server (plain os calls only)."""
    pid = str(os.getpid()).encode()
    for path in procs_files:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, pid)
        finally:
            os.close(fd)


def become(join: list[str], user: str, home: str) -> None:
    """Into the server's cgroups (as root), then its user, then its home; as JupyterHub's
    ``set_user_setuid`` does in the child of a fork, without the hub's fork having to run it."""
    join_cgroups(join)
    if user:
        import pwd

        pw = pwd.getpwnam(user)
        os.setgid(pw.pw_gid)
        gids = os.getgrouplist(user, pw.pw_gid)
        try:
            os.setgroups(gids)
        except OSError:
            os.setgroups([])  # never keep root's groups
        os.setuid(pw.pw_uid)
        if os.getuid() != pw.pw_uid or os.geteuid() != pw.pw_uid or set(os.getgroups()) - set(gids):
            raise PermissionError(f"could not become {user}")
    if home:
        path = home
        while True:  # as JupyterHub's _try_setcwd: the nearest directory that can be entered
            try:
                os.chdir(path)
                break
            except OSError:
                if path in ("/", ""):
                    raise
                path = os.path.dirname(path)
    for key in [k for k in os.environ if k.startswith(LOADER_PREFIX)]:
        value = os.environ.pop(key)
        if len(key) > len(LOADER_PREFIX):
            os.environ[key[len(LOADER_PREFIX):]] = value


def prebind():
    """A listening socket on the service's port, on the host the service itself would listen on
    (``services/base.py`` ``listen_host``); None when that fails (the service then binds itself
    and says why). Imported here: only services ask for it, and a server's start pays for every
    module the lifeline imports."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", ""))
    if not url.port:
        return None
    host = os.environ.get("GPULAB_SERVICE_BIND") or url.hostname or "127.0.0.1"
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, url.port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError:
        return None
    return sock


class Options:
    """The command line (see the module's docstring for what each option does)."""

    def __init__(self) -> None:
        self.beat_fd, self.every, self.with_parent, self.pidfile = -1, 60.0, 0, ""
        self.grace = 0.0  # 0: the child gets the signal, nothing more
        self.prebind = False
        self.join: list[str] = []
        self.user = self.chdir = ""
        self.command: list[str] = []


# option -> (attribute, type of its value; None: a flag, list: repeated)
_OPTIONS = {
    "--beat-fd": ("beat_fd", int), "--every": ("every", float), "--with-parent": ("with_parent", int),
    "--pidfile": ("pidfile", str), "--grace": ("grace", float), "--prebind": ("prebind", None),
    "--join": ("join", list), "--user": ("user", str), "--chdir": ("chdir", str),
}


class UsageError(ValueError):
    pass


def parse(argv: list[str]) -> Options:
    """Options, then the command (after ``--``, or from the first argument that is no option).
    By hand: argparse and its imports cost each server's start 13 ms of CPU (measured, 2 cores),
    more than the rest of the lifeline's start together."""
    opts, i = Options(), 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or not arg.startswith("--"):
            opts.command = argv[i + 1:] if arg == "--" else argv[i:]
            break
        name, eq, value = arg.partition("=")
        if name not in _OPTIONS:
            raise UsageError(f"unknown option {name}")
        attr, kind = _OPTIONS[name]
        i += 1
        if kind is None:
            if eq:
                raise UsageError(f"{name} takes no value")
            setattr(opts, attr, True)
            continue
        if not eq:
            if i >= len(argv):
                raise UsageError(f"{name} needs a value")
            value, i = argv[i], i + 1
        if kind is list:
            getattr(opts, attr).append(value)
            continue
        try:
            setattr(opts, attr, kind(value))
        except ValueError:
            raise UsageError(f"{name} needs a number, got {value!r}") from None
    if not opts.command:
        raise UsageError("no command")
    return opts


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        os.write(2, f"lifeline: {e}\n".encode())
        return 2
    cmd = args.command
    if args.join or args.user or args.chdir:
        become(args.join, args.user, args.chdir)

    if args.with_parent:
        _prctl_pdeathsig(signal.SIGTERM)
        if os.getppid() != args.with_parent:  # it died before we could ask to follow it
            return 0
    caught: list[int] = []
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)  # a signal wakes the select below at once

    def on_signal(sig, _frame):
        caught.append(sig)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    if args.pidfile:
        replace_stale(args.pidfile)
    if caught:  # told to stop before the command even started
        return 128 + caught[0]

    beat = args.beat_fd if args.beat_fd >= 0 else None
    listening = prebind() if args.prebind else None
    me = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: default signals, its own process group, dies with us
        try:
            signal.set_wakeup_fd(-1)
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(s, signal.SIG_DFL)
            os.setpgid(0, 0)
            _prctl_pdeathsig(signal.SIGKILL)
            if os.getppid() != me:  # we died before the request took effect
                os._exit(137)
            for fd in (wake_r, wake_w, *([beat] if beat is not None else [])):
                os.close(fd)
            if listening is not None:
                os.set_inheritable(listening.fileno(), True)
                os.environ["GPULAB_LISTEN_FD"] = str(listening.fileno())
            os.execvp(cmd[0], cmd)
        except BaseException as e:  # exec failed: say why, exit as a shell would
            try:
                os.write(2, f"lifeline: cannot run {cmd[0]}: {e}\n".encode())
            finally:
                os._exit(127)
    if listening is not None:
        listening.close()  # the service's now: connections must fail if it dies, not hang here
    try:
        os.setpgid(pid, pid)  # also here: a signal may come before the child got to it
    except OSError:
        pass
    try:
        pidfd = os.pidfd_open(pid)  # readable when the child exits
    except (AttributeError, OSError):
        pidfd = None
    if beat is not None:
        write_record(beat, f"beat {time.time():.3f}")
    next_beat = time.monotonic() + args.every
    stopping_at = None
    killed = False
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0
        if done:
            break
        now = time.monotonic()
        if caught:
            sig = caught.pop(0)
            if stopping_at is None:
                stopping_at = now
            # services (grace > 0) are told to stop with SIGTERM; servers get what the hub sent
            fwd = signal.SIGTERM if args.grace > 0 else sig
            _signal(pid, fwd, group=True)
        if stopping_at is not None and args.grace > 0 and not killed and now - stopping_at >= args.grace:
            killed = True
            _signal(pid, signal.SIGKILL, group=True)
        if beat is not None and now >= next_beat:
            write_record(beat, f"beat {time.time():.3f}")
            next_beat = now + args.every
        timeout = max(0.0, next_beat - now) if beat is not None else 5.0
        if stopping_at is not None and args.grace > 0 and not killed:
            timeout = min(timeout, max(0.0, args.grace - (now - stopping_at)))
        if pidfd is None:
            timeout = min(timeout, 0.05)
        ready, _, _ = select.select([fd for fd in (pidfd, wake_r) if fd is not None], [], [], timeout)
        if wake_r in ready:
            os.read(wake_r, 512)
    code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code < 0 else code
    if beat is not None:
        write_record(beat, f"exit {time.time():.3f} {code}")
    return code


if __name__ == "__main__":
    code = main()
    # no interpreter teardown (a few ms of CPU at each server's stop): nothing is buffered, every
    # write above is os.write or pwrite
    os._exit(code)
