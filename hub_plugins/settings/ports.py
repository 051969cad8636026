"""The hub's ports, checked before it starts anything on them.

A second install on the same machine (another checkout, another state directory, the same
gpulab.yaml ports) got past the state lock and failed half-way with JupyterHub's traceback: its
proxy could not bind the public port, and the running hub's proxy answered the API port with
"403 Forbidden" for a token it did not know (or, with the proxy's ports free, "Failed to bind
hub"). Now the hub checks the ports it is about to listen on once it knows which it starts
(after JupyterHub made its proxy, before anything listens), and a taken one stops it with the
port, the gpulab.yaml key that names it and, where the kernel tells, the program holding it.

The services it runs are checked too (a program on the billing port made the billing service
exit with a traceback, and JupyterHub with it). The proxy's ports are left out when the hub does
not start its proxy (an external proxy, e.g. a separate service that outlives hub restarts,
answers there by design), and so is any port of this state's own proxy or service from an
earlier run that still runs: JupyterHub stops the proxy, a service's lifeline the stale service,
before their successors bind.

A pid file of this state's proxy that names a live process which is no proxy (the pid reused,
after a reboot say) is removed before JupyterHub reads it: JupyterHub signals whatever process
the file names, SIGTERM then SIGKILL, and a hub running as root would have killed that program.

:func:`problem` is the decision for one port (the probe's errno in); :func:`taken` does the
binding and finds the holder in /proc.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..lifeline import cmdline, stale


@dataclass(frozen=True)
class Endpoint:
    key: str  # the gpulab.yaml key that names it, for the message
    url: str


def address(url: str) -> tuple[str, int] | None:
    """(host, port) a URL has the hub listen on; '' for every interface; None for a unix socket
    or a URL without one."""
    parts = urlsplit(url)
    if parts.scheme.endswith("+unix"):
        return None
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    return (parts.hostname or "", port) if port else None


def problem(endpoint: Endpoint, port: int, err: int | None, holder: str | None) -> str | None:
    """What stops the hub from listening on ``endpoint``, given the probe's errno (None: it
    bound), as a sentence that says what to change; None when nothing does."""
    parts = urlsplit(endpoint.url)
    endpoint = Endpoint(endpoint.key, f"{parts.scheme}://{parts.netloc}")  # JupyterHub adds /hub/ to one
    if err == errno.EADDRINUSE:
        who = f" by {holder}" if holder else " by another program"
        return (f"port {port} ({endpoint.key}: {endpoint.url}) is in use{who}. Stop that program, "
                f"or give this hub a free port in {endpoint.key} of gpulab.yaml")
    if err == errno.EACCES:
        return (f"port {port} ({endpoint.key}: {endpoint.url}) needs privileges this user does not have; "
                f"use a port above 1023 in {endpoint.key} (with a reverse proxy in front for port {port})")
    return None


def probe(host: str, port: int) -> int | None:
    """Bind (and let go of) every address ``host:port`` listens on, as a server would (address
    reuse on, so connections closing in TIME_WAIT are no obstacle, a listener is): the first
    errno that matters, None when all bound. Names that do not resolve, and addresses this
    machine lacks, are left for the server's own bind to report."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return None
    for family, kind, proto, _name, sockaddr in infos:
        try:
            sock = socket.socket(family, kind, proto)
        except OSError:  # e.g. no IPv6 here
            continue
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as tornado binds
            try:
                sock.bind(sockaddr)
            except OSError as e:
                if e.errno in (errno.EADDRINUSE, errno.EACCES):
                    return e.errno
    return None


def holder(port: int) -> str | None:
    """'pid N (command line)' of a process listening on TCP ``port``, where /proc shows it (a
    process of another user hides its descriptors unless the hub runs as root)."""
    inodes = set()
    for table in ("net/tcp", "net/tcp6"):
        try:
            lines = open(os.path.join("/proc", table)).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            # local address "HEX_IP:HEX_PORT", state 0A = LISTEN, field 9 the socket's inode
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{f[9]}]")
    if not inodes:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fds = os.path.join("/proc", pid, "fd")
        try:
            if not any(os.readlink(os.path.join(fds, fd)) in inodes for fd in os.listdir(fds)):
                continue
        except OSError:  # not ours to look at, or gone
            continue
        return f"pid {pid} ({shortened(cmdline(int(pid)))})"
    return None


def shortened(argv: list[str], width: int = 120) -> str:
    """A command line in about ``width`` characters, cut between words (a number cut short would
    name the wrong port)."""
    out = ""
    for word in argv:
        if out and len(out) + 1 + len(word) > width:
            return out + " ..."
        out = f"{out} {word}" if out else word
    return out


def taken(endpoints: list[Endpoint]) -> list[str]:
    """What keeps the hub from listening on each of ``endpoints``: one sentence each."""
    out = []
    for endpoint in endpoints:
        where = address(endpoint.url)
        if where is None:
            continue
        err = probe(*where)
        said = problem(endpoint, where[1], err, holder(where[1]) if err == errno.EADDRINUSE else None)
        if said:
            out.append(said)
    return out


def proxy_left_running(pid_file: str | None, command: list[str]) -> int | None:
    """What this state's proxy pid file names: the pid of the proxy an earlier run left running
    (JupyterHub stops it before starting its own, so its ports are about to be free); 0 when it
    names nothing alive; None when it names a live process that is no proxy (a pid reused, after
    a reboot say). JupyterHub on Linux signals whatever process the file names, SIGTERM then
    SIGKILL: that pid file must go first (:func:`forget_foreign_proxy`)."""
    try:
        pid = int(open(pid_file).read().strip()) if pid_file else 0
    except (OSError, ValueError):
        return 0
    if pid <= 0 or not os.path.exists(f"/proc/{pid}"):
        return 0
    args = cmdline(pid)
    if not args:  # a zombie, or gone meanwhile
        return 0
    name = os.path.basename(command[0]) if command else "configurable-http-proxy"
    return pid if any(name in a for a in args) else None


def forget_foreign_proxy(proxy, log) -> None:
    """Remove this state's proxy pid file where it names a live process that is no proxy, so that
    JupyterHub does not stop that process as a stale proxy (it checks only that the pid is
    alive): after a reboot, a hub running as root would have killed whatever program now had
    that pid."""
    pid_file = getattr(proxy, "pid_file", None)
    if not proxy.should_start or not pid_file:
        return
    if proxy_left_running(pid_file, list(getattr(proxy, "command", None) or ())) is None:
        with open(pid_file) as f:
            pid = f.read().strip()
        log.warning("gpulab: %s names pid %s, which now runs another program (%s); left alone, "
                    "the file removed", pid_file, pid, shortened(cmdline(int(pid))))
        os.remove(pid_file)


def pid_file_of(command: list[str]) -> str | None:
    """The pid file a service's lifeline keeps (``settings/services.py``, ``supervised``): a
    restarted hub's lifeline stops the stale one it names before the service binds."""
    return command[command.index("--pidfile") + 1] if "--pidfile" in command[:-1] else None


# the gpulab.yaml key that sets each service's port
SERVICE_KEYS = {"billing": "billing.port", "quotas": "services.quotas.url", "mlflow": "mlflow.port"}


def hub_endpoints(app) -> list[Endpoint]:
    """The ports this JupyterHub is about to listen on: itself, the proxy it starts, the services
    it runs."""
    out = [Endpoint("hub.hub_bind_url", app.hub_bind_url or app.hub.bind_url)]
    proxy = app.proxy
    if proxy.should_start and not proxy_left_running(getattr(proxy, "pid_file", None),
                                                         list(getattr(proxy, "command", None) or ())):
        out.append(Endpoint("hub.bind_url", proxy.public_url))
        api_url = getattr(proxy, "api_url", None)  # ConfigurableHTTPProxy's; others have their own
        if api_url:
            out.append(Endpoint("hub.proxy_api_url", api_url))
    for svc in app.services:  # an external service (no command) listens elsewhere, by design
        url, command, name = svc.get("url"), svc.get("command"), svc.get("name", "")
        pid_file = pid_file_of(list(command or ()))
        if url and command and not (pid_file and stale(pid_file)):
            out.append(Endpoint(SERVICE_KEYS.get(name, f"the {name} service's url"), url))
    return out
