"""Does something listen on a port, asked of the kernel's socket table (``spawners/listening.py``):
the message itself from a table, then real sockets (listening, bound only, closed, the wildcard
address, IPv6), and what happens where the kernel cannot answer."""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from hub_plugins.spawners import listening
from hub_plugins.spawners.listening import ListenTable, lookup_request, parse_reply


@pytest.mark.parametrize("host, port, family, src", [
    ("127.0.0.1", 8888, socket.AF_INET, bytes([127, 0, 0, 1]) + bytes(12)),
    ("10.1.2.3", 1, socket.AF_INET, bytes([10, 1, 2, 3]) + bytes(12)),
    ("::1", 65535, socket.AF_INET6, bytes(15) + b"\1"),
])
def test_the_request_names_the_address_and_port_a_connection_would_reach(host, port, family, src):
    msg = lookup_request(7, host, port)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", msg)
    assert (length, kind, flags, seq) == (len(msg), listening.SOCK_DIAG_BY_FAMILY, listening.NLM_F_REQUEST, 7)
    fam, proto, _ext, _pad, states = struct.unpack_from("=BBBBI", msg, 16)
    assert (fam, proto, states) == (family, socket.IPPROTO_TCP, listening.ALL_STATES)
    sport, dport = struct.unpack_from("!HH", msg, 24)
    assert (sport, dport) == (port, 0)
    assert msg[28:44] == src and msg[44:60] == bytes(16)  # from this address, to nowhere
    assert struct.unpack_from("=III", msg, 60) == (0, listening.NO_COOKIE, listening.NO_COOKIE)
    assert len(msg) == 72


def _reply(kind: int, seq: int, payload: bytes = b"") -> bytes:
    return struct.pack("=IHHII", 16 + len(payload), kind, 0, seq, 0) + payload


@pytest.mark.parametrize("data, seq, want", [
    (_reply(listening.SOCK_DIAG_BY_FAMILY, 3, bytes(72)), 3, True),  # the socket's description
    (_reply(listening.NLMSG_ERROR, 3, struct.pack("=i", -errno.ENOENT)), 3, False),  # none
    (_reply(listening.SOCK_DIAG_BY_FAMILY, 2, bytes(72)), 3, None),  # an earlier ask's answer
    (_reply(listening.NLMSG_ERROR, 9, struct.pack("=i", -errno.EPERM)), 3, None),
    (b"\0" * 8, 3, None),  # too short to be anything
])
def test_the_reply_read(data, seq, want):
    assert parse_reply(data, seq) is want


@pytest.mark.parametrize("code", [errno.EPERM, errno.EINVAL, errno.EOPNOTSUPP])
def test_an_error_other_than_no_such_socket_means_the_kernel_cannot_say(code):
    with pytest.raises(OSError):
        parse_reply(_reply(listening.NLMSG_ERROR, 1, struct.pack("=i", -code)), 1)


def _listener(family=socket.AF_INET, host="127.0.0.1", listen=True) -> tuple[socket.socket, int]:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((host, 0))
    if listen:
        s.listen()
    return s, s.getsockname()[1]


def test_a_listening_port_is_found_and_one_nobody_listens_on_is_not():
    table = ListenTable()
    s, port = _listener()
    try:
        assert table.listening("127.0.0.1", port) is True
    finally:
        s.close()
    assert table.listening("127.0.0.1", port) is False  # closed now
    assert table.usable


def test_a_bound_port_that_does_not_listen_yet_is_not_found():
    # a server between bind() and listen(): a connection would be refused too
    s, port = _listener(listen=False)
    try:
        assert ListenTable().listening("127.0.0.1", port) is False
    finally:
        s.close()


def test_a_server_on_the_wildcard_address_is_found_at_the_loopback_address():
    s, port = _listener(host="0.0.0.0")
    try:
        assert ListenTable().listening("127.0.0.1", port) is True
    finally:
        s.close()


def test_ipv6():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        s, port = _listener(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert ListenTable().listening("::1", port) is True
    finally:
        s.close()


def test_a_host_name_is_left_to_a_connection():
    s, port = _listener()
    try:
        assert ListenTable().listening("localhost", port) is None
    finally:
        s.close()


def test_a_kernel_that_refuses_is_not_asked_again(monkeypatch):
    table = ListenTable()

    def refused(*_a):
        raise PermissionError(errno.EPERM, "no netlink in this sandbox")

    monkeypatch.setattr(listening.socket, "socket", refused)
    assert table.listening("127.0.0.1", 1) is None
    assert not table.usable
    monkeypatch.undo()
    assert table.listening("127.0.0.1", 1) is None  # not asked again, even where it could be


def test_a_stale_answer_queued_from_an_abandoned_ask_is_skipped():
    table = ListenTable()
    s, port = _listener()
    try:
        sock = table._socket()
        sock.send(lookup_request(12345, "127.0.0.1", port ^ 1))  # asked, never read
        assert table.listening("127.0.0.1", port) is True
        assert table.listening("127.0.0.1", port) is True
    finally:
        s.close()
