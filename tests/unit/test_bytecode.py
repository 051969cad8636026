"""bytecode.py: the hub runs a script's cached bytecode only when it is certainly the source's,
and the source otherwise (the lifeline, once per server: each start skips compiling it)."""

from __future__ import annotations

import importlib.util
import os
import struct
import subprocess
import sys

import pytest

from hub_plugins import bytecode
from hub_plugins.bytecode import current, fresh, readable_as, runnable
from hub_plugins.reconcile import local
from hub_plugins.reconcile.local import LIFELINE, lifeline_command, lifeline_file

MAGIC = b"\x01\x02\r\n"


def header(magic=MAGIC, flags=0, mtime=1_700_000_000, size=1234) -> bytes:
    return magic + struct.pack("<III", flags, mtime, size)


@pytest.mark.parametrize("data, mtime, size, want", [
    (header(), 1_700_000_000.9, 1234, True),  # whole seconds, as the import system writes them
    (header(), 1_700_000_001.0, 1234, False),  # the source changed since
    (header(), 1_700_000_000.0, 1235, False),
    (header(magic=b"\x01\x02\r\x0a"[::-1]), 1_700_000_000, 1234, False),  # another interpreter's
    (header(flags=1), 1_700_000_000, 1234, False),  # hash-based, unchecked
    (header(flags=3), 1_700_000_000, 1234, False),  # hash-based, checked: would mean reading the source
    (header()[:15], 1_700_000_000, 1234, False),  # cut short
    (b"", 1_700_000_000, 1234, False),
    (header(mtime=(2**32 + 5) & 0xFFFFFFFF, size=7), 2**32 + 5, 2**32 + 7, True),  # both kept mod 2**32
])
def test_a_header_is_fresh_only_for_this_interpreter_and_this_source(data, mtime, size, want):
    assert fresh(data, MAGIC, mtime, size) is want


@pytest.mark.parametrize("source, cached, bits, want", [
    (0o644, 0o644, 0o044, True),
    (0o644, 0o600, 0o044, False),  # the user a lifeline starts as could read the source, not this
    (0o640, 0o600, 0o044, False),
    (0o600, 0o600, 0o044, True),  # nobody else reads either
    (0o755, 0o755, 0o055, True),
    (0o755, 0o750, 0o055, False),  # a directory others may not enter
    (0o600, 0o644, 0o044, True),  # more readable than the source: not refused here
])
def test_the_bytecode_is_as_readable_as_the_source(source, cached, bits, want):
    assert readable_as(source, cached, bits) is want


@pytest.fixture
def script(tmp_path):
    src = tmp_path / "pkg" / "hello.py"
    src.parent.mkdir()
    src.write_text("import sys\nprint('hello', sys.argv[1:])\n")
    return src


def run(path) -> str:
    return subprocess.run([sys.executable, "-I", "-S", str(path), "x"], capture_output=True, text=True,
                          check=True, timeout=30).stdout


def test_the_bytecode_is_written_once_and_runs_as_the_source_does(script):
    assert current(str(script)) is None  # nothing cached yet
    got = runnable(str(script))
    assert got == importlib.util.cache_from_source(str(script)) and os.path.exists(got)
    assert run(got) == run(script) == "hello ['x']\n"
    assert runnable(str(script)) == got


def test_an_edited_source_is_compiled_again_and_a_stale_file_is_never_run(script):
    first = runnable(str(script))
    script.write_text("import sys\nprint('edited', sys.argv[1:])\n")
    os.utime(script, (os.stat(first).st_mtime + 10,) * 2)
    assert current(str(script)) is None  # the old bytecode is stale
    assert run(runnable(str(script))) == "edited ['x']\n"


def test_where_nothing_can_be_written_the_source_runs(script):
    (script.parent / "__pycache__").write_text("a file where the directory would be")
    assert runnable(str(script)) == str(script)


def test_another_interpreter_runs_the_source(script):
    runnable(str(script))
    assert runnable(str(script), "/usr/bin/python3.9") == str(script)
    assert current(str(script), "/usr/bin/python3.9") is None


def test_bytecode_less_readable_than_its_source_is_not_run(script):
    cached = runnable(str(script))
    os.chmod(cached, 0o600)
    assert current(str(script)) is None
    assert runnable(str(script)) == str(script)  # tried once for this source already


def test_the_lifeline_runs_from_its_bytecode_even_where_imports_write_none(monkeypatch):
    """PYTHONDONTWRITEBYTECODE (set on this machine) keeps imports from writing __pycache__: the
    hub writes the lifeline's itself."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.setattr(bytecode, "_tried", set())
    monkeypatch.setattr(local, "native_lifeline", lambda python=sys.executable: None)  # no compiled one
    path = lifeline_file()
    assert path == importlib.util.cache_from_source(LIFELINE), "the checkout is writable here"
    assert lifeline_command(3, 60)[3] == path
    r = subprocess.run([sys.executable, "-I", "-S", path, "--", "sh", "-c", "exit 3"], timeout=30)
    assert r.returncode == 3
