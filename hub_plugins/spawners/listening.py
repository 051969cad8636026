"""Does something listen on a TCP port of this host? Asked of the kernel's socket table (a
sock_diag netlink lookup of one socket, what ``ss`` reads), not by connecting to it.

Why: a starting local server is looked for every few milliseconds until it listens. A refused
connection costs the hub's event loop a socket, a non-blocking connect and a wake-up on its
error (about 0.14 ms of the hub's one thread, measured: 50 servers starting at once made that
~7% of it). The lookup is one send and one receive on a socket opened once, no wake-up of the
loop, and the same answer: the kernel finds the listening socket a connection would reach
(bound to that address or to the wildcard address).

Linux only, and only for an IP address: ``listening`` answers None where the kernel cannot say
(no netlink, a sandbox that refuses it, a host name), and the caller connects instead.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import threading

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
ALL_STATES = 0xFFFFFFFF
NO_COOKIE = 0xFFFFFFFF  # INET_DIAG_NOCOOKIE: any socket, whatever its cookie

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_REQUEST = struct.Struct("=BBBBI")  # inet_diag_req_v2: family, protocol, ext, pad, states


def lookup_request(seq: int, host: str, port: int) -> bytes:
    """The netlink message asking for the TCP socket a connection to ``host:port`` from nowhere
    in particular would reach: for a port nobody has connected to, its listening socket."""
    ip = ipaddress.ip_address(host)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    src = ip.packed.ljust(16, b"\0")
    # inet_diag_sockid: sport, dport (network order), src[4], dst[4] (32-bit words), if, cookie[2]
    sockid = struct.pack("!HH", port, 0) + src + bytes(16) + struct.pack("=III", 0, NO_COOKIE, NO_COOKIE)
    body = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, ALL_STATES) + sockid
    return _HEADER.pack(_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0) + body


def parse_reply(data: bytes, seq: int) -> bool | None:
    """True: a socket was found; False: none (ENOENT); None: not the answer to ``seq``.
    ``OSError``: the kernel cannot answer this way (any other error)."""
    if len(data) < _HEADER.size:
        return None
    _length, kind, _flags, got, _pid = _HEADER.unpack_from(data)
    if got != seq:
        return None
    if kind == NLMSG_ERROR:
        code = -struct.unpack_from("=i", data, _HEADER.size)[0]
        if code == errno.ENOENT:
            return False
        raise OSError(code, f"sock_diag lookup: {errno.errorcode.get(code, code)}")
    return kind == SOCK_DIAG_BY_FAMILY


class ListenTable:
    """One netlink socket per thread, opened on first use. Once the kernel refuses (no
    sock_diag, a sandbox, an error other than 'no such socket') it is not asked again."""

    def __init__(self) -> None:
        self._local = threading.local()
        self.usable = True

    def _socket(self) -> socket.socket:
        sock = getattr(self._local, "sock", None)
        if sock is None:
            sock = self._local.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
            self._local.seq = 0
        return sock

    def listening(self, host: str, port: int) -> bool | None:
        """Whether a TCP socket listens where a connection to ``host:port`` would go; None where
        the kernel cannot say (then connect)."""
        if not self.usable:
            return None
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return None  # a name: resolving it is the connection's business
        try:
            sock = self._socket()
            self._local.seq = seq = (self._local.seq + 1) & 0xFFFFFFFF
            sock.send(lookup_request(seq, host, port))
            # the kernel answers within the send; a reply to an earlier, abandoned ask is skipped
            for _ in range(8):
                answer = parse_reply(sock.recv(65536, socket.MSG_DONTWAIT), seq)
                if answer is not None:
                    return answer
        except BlockingIOError:
            return None  # no answer queued: connect this time
        except (OSError, ValueError, struct.error):
            pass
        self.usable = False
        return None


TABLE = ListenTable()
