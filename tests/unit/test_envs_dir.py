"""The environments directory on a real filesystem: the stamp avoids a rebuild, the lock keeps a
second build of one environment waiting, a dead builder's progress is not trusted, superseded
environments are pruned unless a process runs from them. (The builds themselves, with uv and npm,
run in tests/envs and tests/browser.)"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time

from hub_plugins.envs import install
from hub_plugins.envs.manager import EnvDir
from hub_plugins.envs.spec import EnvSpec

SPEC = EnvSpec.from_dict("pytorch", {"as_of": "2026-11-29", "pip": ["jupyterhub==6.1.1", "torch==2.15.0"]})
NEWER = EnvSpec.from_dict("pytorch", {"as_of": "2026-11-29", "pip": ["jupyterhub==6.1.1", "torch==2.15.1"]})
NO_UV = "/nonexistent/uv"  # any build attempt fails: these tests must never build


def built(envdir: EnvDir, spec: EnvSpec, size: int = 123) -> None:
    prefix = envdir.prefix(spec)
    os.makedirs(os.path.join(prefix, "bin"), exist_ok=True)
    with open(os.path.join(prefix, install.MARKER), "w") as f:
        json.dump({"spec": spec.as_dict(), "size": size}, f)


def test_the_stamp_avoids_a_rebuild(tmp_path):
    envdir = EnvDir(tmp_path)
    assert envdir.read_state(SPEC).state == "missing"
    built(envdir, SPEC, size=5_000_000_000)
    st = envdir.ensure(SPEC, uv=NO_UV)
    assert st.state == "ready" and st.size == 5_000_000_000
    assert envdir.read_state(NEWER).state == "missing"  # another pin: another directory, not built


def test_a_failed_build_is_reported_with_its_log(tmp_path):
    envdir = EnvDir(tmp_path)
    st = envdir.ensure(SPEC, uv=NO_UV, log=lambda m: None)
    assert st.state == "failed" and st.error == "creating the venv failed: cannot run /nonexistent/uv: " \
        "No such file or directory", st
    assert st.log == envdir.log_file(SPEC) and os.path.exists(st.log)
    assert json.load(open(envdir.status_file(SPEC)))["state"] == "failed"


def test_the_lock_keeps_a_second_build_waiting(tmp_path):
    envdir = EnvDir(tmp_path)
    os.makedirs(envdir.state_dir)
    lock = open(os.path.join(envdir.state_dir, f"{SPEC.dirname}.lock"), "a")
    fcntl.flock(lock, fcntl.LOCK_EX)  # another builder holds it
    assert envdir.ensure(SPEC, uv=NO_UV, wait=False).state == "missing"  # returned at once, built nothing
    result = {}
    waiter = threading.Thread(target=lambda: result.update(st=envdir.ensure(SPEC, uv=NO_UV)))
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive()  # waits for the first build
    built(envdir, SPEC)  # the first build finishes, then lets go
    fcntl.flock(lock, fcntl.LOCK_UN)
    waiter.join(10)
    assert result["st"].state == "ready"  # found the stamp: no second build


def test_progress_of_a_dead_builder_is_not_trusted(tmp_path):
    envdir = EnvDir(tmp_path)
    os.makedirs(envdir.state_dir)
    dead = subprocess.Popen(["true"])
    dead.wait()
    status = install.Status(envdir.status_file(SPEC), SPEC.as_dict(), SPEC.stamp)
    status.update(step=2, what="Installing")
    assert envdir.read_state(SPEC).state == "building"  # this process: alive
    status.data["pid"] = dead.pid
    status.update()
    assert envdir.read_state(SPEC).state == "missing"  # the next builder starts it again


def test_prune_keeps_environments_in_use(tmp_path):
    envdir = EnvDir(tmp_path)
    built(envdir, SPEC)
    built(envdir, NEWER)
    other = EnvSpec.from_dict("vscode", {"as_of": "2026-11-29", "pip": ["jupyterhub==6.1.1"]})
    built(envdir, other)
    old = envdir.prefix(SPEC)
    # a process whose command line names a program of the old environment, as a server's does
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)",
                               os.path.join(old, "bin", "jupyterhub-singleuser")])
    deadline = time.monotonic() + 10
    while old.encode() not in open(f"/proc/{server.pid}/cmdline", "rb").read() and time.monotonic() < deadline:
        time.sleep(0.05)  # until the child has exec'd
    try:
        assert envdir.prune(NEWER, log=lambda m: None) == []  # a server runs from the old one
    finally:
        server.kill()
        server.wait()
    assert envdir.prune(NEWER, log=lambda m: None) == [old]
    assert os.path.isdir(envdir.prefix(NEWER)) and os.path.isdir(envdir.prefix(other))
