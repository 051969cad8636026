"""The lifeline's command line, parsed by hand (``hub_plugins/lifeline.py`` ``parse``): the forms
the hub and the services use, and what a wrong one is told."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hub_plugins.lifeline import UsageError, is_lifeline, parse
from hub_plugins.reconcile.local import LIFELINE, lifeline_command, lifeline_file


@pytest.mark.parametrize("argv, want", [
    (["--", "jupyterhub-singleuser", "--debug"],
     dict(command=["jupyterhub-singleuser", "--debug"], beat_fd=-1, every=60.0, join=[], prebind=False)),
    (["--beat-fd", "7", "--every", "2.5", "--", "sh", "-c", "exit 3"],
     dict(beat_fd=7, every=2.5, command=["sh", "-c", "exit 3"])),
    (["--beat-fd=7", "--every=30", "srv"], dict(beat_fd=7, every=30.0, command=["srv"])),
    (["--join", "/a/cgroup.procs", "--join", "/b/cgroup.procs", "--user", "jupyter-ann", "--chdir", "/home/ann",
      "--", "srv"],
     dict(join=["/a/cgroup.procs", "/b/cgroup.procs"], user="jupyter-ann", chdir="/home/ann", command=["srv"])),
    (["--with-parent", "42", "--pidfile", "/s/p.pid", "--grace", "1.5", "--prebind", "--", "python", "-m", "svc"],
     dict(with_parent=42, pidfile="/s/p.pid", grace=1.5, prebind=True, command=["python", "-m", "svc"])),
    # everything after the command is the command's, options of the same name included
    (["srv", "--every", "1"], dict(command=["srv", "--every", "1"], every=60.0)),
    (["--", "--every"], dict(command=["--every"], every=60.0)),
    (["--chdir", "--", "--", "srv"], dict(chdir="--", command=["srv"])),
])
def test_what_the_command_line_asks_for(argv, want):
    opts = parse(argv)
    for attr, value in want.items():
        assert getattr(opts, attr) == value, attr


@pytest.mark.parametrize("argv, says", [
    ([], "no command"),
    (["--every", "5"], "no command"),
    (["--"], "no command"),
    (["--bogus", "--", "srv"], "unknown option --bogus"),
    (["--beat", "3", "--", "srv"], "unknown option --beat"),  # no abbreviations
    (["--every"], "--every needs a value"),
    (["--every", "soon", "--", "srv"], "--every needs a number, got 'soon'"),
    (["--beat-fd=1.5", "--", "srv"], "--beat-fd needs a number, got '1.5'"),
    (["--prebind=yes", "--", "srv"], "--prebind takes no value"),
])
def test_a_wrong_command_line_says_what_is_wrong(argv, says):
    with pytest.raises(UsageError, match=says.replace(".", r"\.")):
        parse(argv)


def test_the_hubs_own_command_line_parses_to_what_it_meant():
    cmd = lifeline_command(9, 30.0, become=["--join", "/c/cgroup.procs", "--user", "jupyter-bo", "--chdir", "/h"])
    argv = cmd[cmd.index("--beat-fd"):] + ["jupyterhub-singleuser"]
    opts = parse(argv)
    assert (opts.beat_fd, opts.every, opts.join, opts.user, opts.chdir, opts.command) == (
        9, 30.0, ["/c/cgroup.procs"], "jupyter-bo", "/h", ["jupyterhub-singleuser"])


@pytest.mark.parametrize("argv, says", [
    (["--every", "x"], "lifeline: --every needs a number, got 'x'"),
    (["--beat-fd=1.5"], "lifeline: --beat-fd needs a number, got '1.5'"),
    (["--bogus"], "lifeline: unknown option --bogus"),
    (["--beat"], "lifeline: unknown option --beat"),
])
def test_a_wrong_command_line_exits_2_with_the_reason_and_runs_nothing(tmp_path, lifeline_head, argv, says):
    marker = tmp_path / "ran"
    r = subprocess.run([*lifeline_head, *argv, "--", "touch", str(marker)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert says in r.stderr
    assert not marker.exists()


@pytest.mark.parametrize("argv", [["--with-parent", "1"], ["--pidfile", "/tmp/x.pid"], ["--grace", "1"], ["--prebind"]])
def test_the_compiled_lifeline_refuses_what_only_services_ask_for(tmp_path, compiled_lifeline, argv):
    """Services run lifeline.py: an option the compiled one does not implement is refused, never
    silently ignored."""
    r = subprocess.run([compiled_lifeline, *argv, "--", "true"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and f"unknown option {argv[0]}" in r.stderr


def test_the_exit_status_is_the_commands_though_the_lifeline_skips_its_teardown(lifeline_head):
    r = subprocess.run([*lifeline_head, "--", "sh", "-c", "echo out; echo err >&2; exit 3"],
                       capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")


@pytest.mark.parametrize("path", [LIFELINE, lifeline_file()])
def test_the_lifeline_imports_neither_argparse_nor_enum_nor_ctypes(path):
    """What keeps its start cheap (see ``parse`` and ``_prctl_pdeathsig``): a later import of
    one of these shows here. Run from its source and from what the hub runs (its bytecode)."""
    r = subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", path, "--", "true"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "_ctypes" in imported  # the listing is read right
    assert imported & {"argparse", "enum", "socket", "re", "json", "urllib.parse", "ctypes"} == set()


@pytest.mark.parametrize("argv, want", [
    (["/venv/bin/python", "-I", "-S", "/srv/gpulab/hub_plugins/lifeline.py", "--", "srv"], True),
    (["/venv/bin/python", "-I", "-S", "/srv/gpulab/hub_plugins/__pycache__/lifeline.cpython-311.pyc", "--", "srv"],
     True),
    (["/venv/bin/python", "-I", "-S", "/srv/gpulab/hub_plugins/__pycache__/lifeline.cpython-312.opt-1.pyc"], True),
    (["/venv/bin/python", "/tmp/lifeline.pyc"], False),  # bytecode outside a __pycache__: not the hub's
    (["/venv/bin/python", "/srv/__pycache__/lifelines.cpython-311.py"], False),
    (["/venv/bin/gpulab-lifeline", "--beat-fd", "5", "--", "srv"], True),  # lifeline.c
    (["jupyterhub-singleuser", "--port=1234"], False),
    (["sh", "-c", "/venv/bin/gpulab-lifeline"], False),
    ([], False),
])
def test_a_lifeline_is_known_by_its_command_line_from_source_or_bytecode(argv, want):
    """How a restarted hub tells a server's lifeline (adoption) and a stale service's (its pid
    file) from anything else holding the pid now."""
    assert is_lifeline(argv) is want
