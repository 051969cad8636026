"""The cgroup filesystem adapter against this host's real cgroups (root, cgroup v1 or v2): a
process that joins a server's cgroups is held to its memory and CPU, and cleanup leaves nothing."""

import os
import subprocess
import sys
import time

import pytest

from hub_plugins.isolation import Enforcer
from hub_plugins.isolation.cgroupfs import PARENT
from hub_plugins.isolation.plan import Limits
from tests.conftest import require


@pytest.fixture
def enforcer():
    e = Enforcer.detect("cgroup")
    require(os.geteuid() == 0 and {"memory", "cpu"} <= e.controls, "root with cgroup memory and cpu controllers")
    name = f"gpulab-unittest-{os.getpid()}"
    yield e, name
    e.cleanup(name)


def run(e, name, code):
    return subprocess.run([sys.executable, "-c", code], preexec_fn=e.joiner(name), capture_output=True, text=True,
                          timeout=60)


def test_memory_limit_stops_the_process_and_is_reported(enforcer):
    e, name = enforcer
    e.prepare(name, Limits(mem_bytes=64 * 2**20))
    assert not e.killed_for_memory(name)
    done = run(e, name, "x = bytearray(256 * 2**20); print('survived')")
    assert done.returncode == -9 and "survived" not in done.stdout
    assert e.killed_for_memory(name)
    assert run(e, name, "x = bytearray(16 * 2**20); print('fine')").stdout.strip() == "fine"


def test_cpu_quota(enforcer):
    e, name = enforcer
    e.prepare(name, Limits(cpus=0.2))
    out = run(e, name, "import time\nt, c = time.time(), time.process_time()\n"
                       "while time.time() - t < 2: pass\nprint((time.process_time() - c) / (time.time() - t))")
    assert float(out.stdout) <= 0.2 * 1.2 + 0.02


def test_cleanup_stops_what_the_server_left_behind(enforcer):
    e, name = enforcer
    e.prepare(name, Limits(mem_bytes=2**30))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], preexec_fn=e.joiner(name))
    time.sleep(0.2)
    assert child.pid in e.fs.pids(name)
    assert not e.emptied(name)
    assert e.cleanup(name) == [child.pid]
    assert child.wait(10) == -9
    assert not any(os.path.exists(d) for d in e.fs.dirs(name).values())
    assert e.emptied(name)  # so the release needs no look through /proc (recovery.stop_leftovers)


def test_empty_cgroups_are_removed_at_once_and_busy_ones_are_left_for_the_cleanup(enforcer):
    """The usual stop removes the cgroups on the hub's loop (``removed_if_empty``): never while
    a process is left in them, never after an OOM kill (the worker's clean-up records it)."""
    e, name = enforcer
    e.prepare(name, Limits(mem_bytes=2**30, cpus=1))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], preexec_fn=e.joiner(name))
    time.sleep(0.2)
    assert not e.removed_if_empty(name)
    assert all(os.path.isdir(d) for d in e.fs.dirs(name).values()) and child.pid in e.fs.pids(name)
    child.kill()
    child.wait(10)
    assert e.removed_if_empty(name) and e.emptied(name)
    assert e.removed_if_empty(name)  # gone already: still True

    e.prepare(name, Limits(mem_bytes=64 * 2**20))
    run(e, name, "x = bytearray(256 * 2**20)")
    assert not e.removed_if_empty(name) and not e.emptied(name)
    assert e.killed_for_memory(name)  # still there for the clean-up to read


def test_a_new_run_starts_with_a_clean_count(enforcer):
    e, name = enforcer
    e.prepare(name, Limits(mem_bytes=64 * 2**20))
    run(e, name, "x = bytearray(256 * 2**20)")
    assert e.killed_for_memory(name)
    e.prepare(name, Limits(mem_bytes=64 * 2**20))  # e.g. after a hub that died before cleaning up
    assert not e.killed_for_memory(name)


BUSY = "import time\nt, c = time.time(), time.process_time()\nwhile time.time() - t < 3: pass\nprint(time.process_time() - c)"


def test_a_busy_server_weighs_like_one_process_beside_the_hub(enforcer):
    """The CPU the kernel gives a busy server against a busy process beside the hub (both on one
    CPU) is the same however many idle servers exist: what its process would get without cgroups,
    as under stock JupyterHub. With the servers' CPU cgroups in one parent weighted for all of
    them (as before), the 8 idle servers here gave the busy one 5.6 times the other's CPU, and at
    50 stops at once each server woken preempted the hub."""
    e, name = enforcer
    if e.fs.version != 1:
        pytest.skip("cgroup v1 only (v2 keeps one parent: a cgroup with processes has no children there)")
    cpu = max(os.sched_getaffinity(0))
    idle = [f"{name}-idle{i}" for i in range(8)]
    try:
        for n in [name, *idle]:
            e.prepare(n, Limits(mem_bytes=2**30))
        join = e.joiner(name)

        def pinned(joining):
            def pre():
                os.sched_setaffinity(0, {cpu})
                if joining:
                    join()
            return pre

        procs = [subprocess.Popen([sys.executable, "-c", BUSY], preexec_fn=pinned(j), stdout=subprocess.PIPE,
                                  text=True) for j in (True, False)]
        server, beside = (float(p.communicate(timeout=60)[0]) for p in procs)
    finally:
        for n in idle:
            e.cleanup(n)
    assert 0.4 < server / beside < 2.5, (server, beside)


def test_a_server_started_before_the_cpu_layout_changed_is_cleaned_up_whole(enforcer):
    """A server a hub of the earlier layout started (its CPU cgroup under the parent) and this
    hub stops: its processes are killed and that CPU cgroup is removed too."""
    e, name = enforcer
    if not e.fs.cpu_beside_hub:
        pytest.skip("only where the CPU cgroups sit beside the hub")
    e.prepare(name, Limits(mem_bytes=2**30))
    old = os.path.join(e.fs.bases["cpu"], PARENT, name)
    os.makedirs(old, exist_ok=True)
    os.rmdir(e.fs.dirs(name)["cpu"])
    mem = e.fs.dirs(name)["memory"]

    def join_old():
        for d in (old, mem):
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write("0")

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], preexec_fn=join_old)
    time.sleep(0.2)
    assert not e.removed_if_empty(name) and os.path.exists(old)
    assert e.cleanup(name) == [child.pid] and child.wait(10) == -9
    assert not os.path.exists(old) and not os.path.exists(mem)
    os.makedirs(old)  # an empty one is removed at once too
    assert e.removed_if_empty(name) and not os.path.exists(old)


def test_the_start_up_sweep_removes_only_this_hubs_empty_cgroups(enforcer):
    """What a hub killed mid-start leaves: cgroups prepared for a server that never started (in
    every hierarchy, or in some), beside those of a server that runs on, of one the kernel stopped
    for its memory (its stop reads that) and of another hub. The restarted hub removes only its
    own empty ones."""
    e, _ = enforcer
    tag, other = f"t{os.getpid()}", f"o{os.getpid()}"
    never, partly, busy, oom = (f"gpulab-sweep-{what}-{tag}" for what in ("never", "partly", "busy", "oom"))
    others = f"gpulab-sweep-never-{other}"
    names = (never, partly, busy, oom, others)
    child = None
    try:
        for n in names:
            e.prepare(n, Limits(mem_bytes=64 * 2**20))
        os.rmdir(e.fs.dirs(partly)["memory"])
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], preexec_fn=e.joiner(busy))
        run(e, oom, "x = bytearray(256 * 2**20)")
        time.sleep(0.2)
        assert e.fs.names(f"-{tag}") == {never, partly, busy, oom}
        assert e.sweep(f"-{tag}") == 2
        assert e.emptied(never) and e.emptied(partly)
        assert child.pid in e.fs.pids(busy) and e.killed_for_memory(oom) and not e.emptied(others)
        assert e.fs.names(f"-{tag}") == {busy, oom}
    finally:
        if child is not None:
            child.kill()
            child.wait(10)
        for n in names:
            e.cleanup(n)
