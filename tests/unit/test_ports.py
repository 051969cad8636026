"""Local servers' ports (``spawners/local/ports.py``): from just below the kernel's ephemeral
range, never one handed to another server of this hub, never one something listens on."""

from __future__ import annotations

import random
import socket

import pytest

from hub_plugins.spawners.local.ports import PortPool, bindable, ephemeral_range, server_ports


@pytest.mark.parametrize("text, expected", [
    ("32768\t60999\n", (32768, 60999)),
    ("1024 65535", (1024, 65535)),
    ("", None),
    ("32768", None),
    ("60999 32768", None),  # the kernel refuses that; we never trust it
    ("0 100", None),
    ("a b", None),
])
def test_the_ephemeral_range_is_read_from_the_kernels_file(text, expected):
    assert ephemeral_range(text) == expected


@pytest.mark.parametrize("setting, ephemeral, expected", [
    ("auto", (32768, 60999), (22768, 32767)),
    ("auto", (10000, 60999), (1024, 9999)),
    ("auto", (1100, 60999), None),  # no room below it: JupyterHub's own random port
    ("auto", None, None),  # unreadable: JupyterHub's
    ("", (32768, 60999), None),
    ("20000-29999", (32768, 60999), (20000, 29999)),
    (" 20000 - 20000 ", None, (20000, 20000)),
])
def test_the_servers_range(setting, ephemeral, expected):
    assert server_ports(setting, ephemeral) == expected


@pytest.mark.parametrize("setting", [
    "20000", "a-b", "30000-20000", "80-90", "20000-70000", "-1-5", "٢٠٠٠٠-٣٠٠٠٠", "20000-29999-1", "1e4-2e4",
])
def test_a_range_that_cannot_be_one_says_how_to_write_it(setting):
    with pytest.raises(ValueError, match="port_range"):
        server_ports(setting, (32768, 60999))


def test_a_pool_never_hands_out_a_port_twice_until_it_is_given_back():
    pool = PortPool(20000, 20004, can_bind=lambda host, port: True, rng=random.Random(1))
    taken = [pool.take("127.0.0.1") for _ in range(5)]
    assert sorted(taken) == [20000, 20001, 20002, 20003, 20004]
    assert pool.take("127.0.0.1") is None  # all held: the caller falls back to JupyterHub's
    pool.give_back(20002)
    assert pool.take("127.0.0.1") == 20002 and pool.held == frozenset(taken)


def test_a_port_that_cannot_be_bound_is_skipped_and_not_held():
    pool = PortPool(20000, 20001, can_bind=lambda host, port: port != 20000, rng=random.Random(2))
    assert {pool.take("127.0.0.1") for _ in range(3)} == {20001, None}
    assert pool.held == frozenset({20001})


def _listener() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_a_port_something_listens_on_is_not_bindable_and_never_handed_out():
    with _listener() as busy:
        port = busy.getsockname()[1]
        assert not bindable("127.0.0.1", port) and not bindable("", port)
        pool = PortPool(port, port)
        assert pool.take("127.0.0.1") is None and pool.held == frozenset()
    assert bindable("127.0.0.1", port)
    assert PortPool(port, port).take("127.0.0.1") == port
