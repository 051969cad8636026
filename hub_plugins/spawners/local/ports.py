"""The port a local server listens on: never one the kernel also hands out for outgoing
connections, never one another server of this hub holds.

JupyterHub takes a port by binding port 0 and closing the socket. The kernel picks that port from
its ephemeral range (``net.ipv4.ip_local_port_range``), the range it also takes the local port of
every outgoing connection from, so in a burst of spawns (the hub's and the proxy's connections to
starting servers, and anything else on the host) a server now and then finds its port taken by
such a connection before it binds it: "Address already in use", and the spawn fails (4 of 13,200
spawns in one evening's spawn benchmark runs, all at 50 at once, stock JupyterHub's spawner and
gpulab's alike). gpulab picks from just below the ephemeral range, where the kernel never picks, skips the
ports it has handed to this hub's servers that have not stopped, and tries a bind first, as the
server will (so a port something else listens on is skipped too).

:func:`server_ports` decides the range (pure); :class:`PortPool` hands ports out;
:class:`PortsMixin` is the local spawner's part.
"""

from __future__ import annotations

import random
import socket
import threading

from traitlets import HasTraits, TraitError, Unicode, validate

# how many ports below the ephemeral range: far more than one host's servers
SPAN = 10_000
LOWEST = 1024  # never a privileged port
TRIES = 64


def ephemeral_range(text: str) -> tuple[int, int] | None:
    """``/proc/sys/net/ipv4/ip_local_port_range`` ("32768\\t60999"), or None if unreadable."""
    try:
        lo, hi = (int(x) for x in text.split())
    except ValueError:
        return None
    return (lo, hi) if 0 < lo <= hi <= 65535 else None


def server_ports(setting: str, ephemeral: tuple[int, int] | None) -> tuple[int, int] | None:
    """The range servers' ports come from: ``setting`` is 'auto' (the ``SPAN`` ports just below
    the ephemeral range), 'LO-HI', or '' (None: JupyterHub's own random port). 'auto' is None too
    where the ephemeral range leaves no room below it. ``ValueError`` says what is wrong with a
    'LO-HI' that cannot be a range of ports."""
    setting = setting.strip()
    if not setting:
        return None
    if setting == "auto":
        if ephemeral is None or ephemeral[0] - 1 - LOWEST < 100:
            return None
        return max(LOWEST, ephemeral[0] - SPAN), ephemeral[0] - 1
    lo_text, sep, hi_text = setting.partition("-")
    if not (sep and lo_text.strip().isascii() and lo_text.strip().isdigit()
            and hi_text.strip().isascii() and hi_text.strip().isdigit()):
        raise ValueError(f"port_range {setting!r}: write 'auto', '' or two port numbers as LO-HI, e.g. 20000-29999")
    lo, hi = int(lo_text), int(hi_text)
    if not (LOWEST <= lo <= hi <= 65535):
        raise ValueError(f"port_range {setting!r}: the ports must be between {LOWEST} and 65535, the lower one first")
    return lo, hi


def bindable(host: str, port: int) -> bool:
    """Whether a server could bind ``host:port`` now (as Tornado does: SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        return True
    except OSError:
        return False


class PortPool:
    """Ports of ``lo``..``hi`` handed to servers of this hub until given back."""

    def __init__(self, lo: int, hi: int, can_bind=bindable, rng: random.Random | None = None):
        self.lo, self.hi = lo, hi
        self._can_bind, self._rng = can_bind, rng or random.Random()
        self._held: set[int] = set()
        self._lock = threading.Lock()  # spawns run on the loop, but nothing says they must

    def take(self, host: str) -> int | None:
        """A free port for a server on ``host``, held until :meth:`give_back`; None when none of a
        few random tries was free (the caller falls back to JupyterHub's random port)."""
        for _ in range(TRIES):
            port = self._rng.randint(self.lo, self.hi)
            with self._lock:
                if port in self._held:
                    continue
                self._held.add(port)
            if self._can_bind(host, port):
                return port
            with self._lock:
                self._held.discard(port)
        return None

    def give_back(self, port: int) -> None:
        with self._lock:
            self._held.discard(port)

    @property
    def held(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._held)


class PortsMixin(HasTraits):
    """The local spawner's ports: one taken from the pool as its server starts (unless
    ``Spawner.port`` is set), given back once the server's process is gone."""

    port_range = Unicode(
        "auto",
        config=True,
        help="""The ports servers listen on: 'auto' (the 10,000 just below the kernel's ephemeral
        range, net.ipv4.ip_local_port_range, where it never picks one for an outgoing connection),
        'LO-HI' (e.g. 20000-29999), or '' for JupyterHub's random port, which comes from the
        ephemeral range and can be taken by a connection before the server binds it (a failed
        spawn, now and then, under a burst: ports.py). Not used where Spawner.port is set.""",
    )

    @validate("port_range")
    def _check_port_range(self, proposal):
        try:
            server_ports(proposal.value, None)
        except ValueError as e:
            raise TraitError(str(e)) from None
        return proposal.value

    _port_pools: dict = {}

    @property
    def gpulab_ports(self) -> PortPool | None:
        """The ports servers are handed, one pool per process and range (None: JupyterHub's)."""
        key = self.port_range
        if key not in self._port_pools:
            try:
                with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
                    ephemeral = ephemeral_range(f.read())
            except OSError:
                ephemeral = None
            span = server_ports(key, ephemeral)
            PortsMixin._port_pools[key] = PortPool(*span) if span else None
        return self._port_pools[key]

    def _gpulab_take_port(self) -> None:
        pool = self.gpulab_ports if not self.port else None
        taken = pool.take(self.ip or "") if pool else None
        if taken:
            self.port, self._gpulab_port = taken, taken

    def _gpulab_give_port_back(self) -> None:
        taken, self._gpulab_port = getattr(self, "_gpulab_port", None), None
        if taken:
            self.gpulab_ports.give_back(taken)
            if self.port == taken:  # the next start takes one anew
                self.port = 0

    def clear_state(self):
        super().clear_state()
        self._gpulab_give_port_back()  # the server's process is gone (poll or stop)
