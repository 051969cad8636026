"""System user names are always safe, prefixed and distinct; creation works (as root)."""

import os
import pwd
import subprocess

import pytest

from hub_plugins.spawners.local.sysusers import ensure_user, executable_by, system_username


@pytest.mark.parametrize(
    "hub_name, expect",
    [
        ("alice", "jupyter-alice"),
        ("root", "jupyter-root"),
        ("bob_2", "jupyter-bob_2"),
    ],
)
def test_plain_names(hub_name, expect):
    assert system_username(hub_name) == expect


@pytest.mark.parametrize("hub_name", ["Alice", "a.b@uni.edu", "x" * 40, "../etc", "a b", "é", "-rf"])
def test_unusual_names_are_sanitised_and_distinct(hub_name):
    name = system_username(hub_name)
    assert name.startswith("jupyter-") and len(name) <= 32
    assert all(c.isalnum() or c in "-_" for c in name) and name == name.lower()
    assert system_username(hub_name) == name  # stable
    assert name != system_username(hub_name + "x")


def test_case_variants_do_not_collide():
    assert system_username("Alice") != system_username("alice")


def test_executable_by_walks_the_path(tmp_path):
    d = tmp_path / "private"
    d.mkdir(mode=0o700)
    exe = d / "run"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    nobody = pwd.getpwnam("nobody")
    why = executable_by(str(exe), nobody.pw_uid, {nobody.pw_gid})
    assert why and "is not accessible" in why
    assert executable_by("/bin/sh", nobody.pw_uid, {nobody.pw_gid}) is None
    assert "does not exist" in executable_by("/nope/x", nobody.pw_uid, set())


@pytest.mark.skipif(os.geteuid() != 0, reason="creating system users needs root")
def test_ensure_user_creates_private_home(tmp_path):
    name = "gtsys-" + os.urandom(3).hex()
    home_root = tmp_path / "homes"
    home_root.mkdir()
    try:
        pw = ensure_user(name, str(home_root))
        assert pw.pw_uid != 0 and pw.pw_dir == str(home_root / name)
        assert oct(os.stat(pw.pw_dir).st_mode & 0o777) == "0o700"
        assert ensure_user(name, str(home_root)).pw_uid == pw.pw_uid  # idempotent
        with pytest.raises(ValueError):
            ensure_user("root; rm -rf /", str(home_root))
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True)
