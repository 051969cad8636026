"""Per-server utilisation on shared GPUs: the attribution rule (pure, tables), the /proc adapter
against real processes, and the NVML reader against the NVML stand-in (the hardware edge) with
real processes' pids."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from fractions import Fraction

import pytest

from hub_plugins.gpu.attribution import GpuProcess, GpuReading, Share, attribute, holders_by_gpu
from hub_plugins.gpu.metrics import NVMLReader
from hub_plugins.gpu.procs import owners, parent_of, spawn_id_of
from hub_plugins.gpu.simulated import parse_spec
from tests.support.fakenvml import FakeNVML

Q = Fraction(1, 4)


@pytest.mark.parametrize(
    "reading, owner, held, expect",
    [
        # one sharer busy on a fifth of the SMs (80 % of its quarter), its neighbour idle with a
        # context open, a third holding a share without touching the GPU
        (GpuReading(20, 200, (GpuProcess(1, 3000, 20), GpuProcess(2, 500, None))),
         {1: "a", 2: "b"}, {"a": Q, "b": Q, "c": Q},
         {"a": Share(80.0, 3000, 50.0), "b": Share(0.0, 500, 50.0), "c": Share(0.0, 0, 50.0)}),
        # busier than its share (time-slicing lends the idle neighbours' time): at most 100 %
        (GpuReading(90, None, (GpuProcess(1, 100, 90),)), {1: "a"}, {"a": Q, "b": Q},
         {"a": Share(100.0, 100, None), "b": Share(0.0, 0, None)}),
        # two shares of one GPU: measured against half of it; two processes of one server add up
        (GpuReading(50, 100, (GpuProcess(1, 10, 20), GpuProcess(3, 10, 10))), {1: "a", 3: "a"}, {"a": Fraction(1, 2)},
         {"a": Share(60.0, 20, 50.0)}),
        # MPS: the clients have contexts, the work shows under the MPS server (no server's process)
        (GpuReading(70, None, (GpuProcess(9, 0, 70), GpuProcess(1, 900, None), GpuProcess(2, 900, None))),
         {1: "a", 2: "b"}, {"a": Q, "b": Q},
         {"a": Share(None, 900, None), "b": Share(None, 900, None)}),
        # ... unless the whole GPU is idle: then everyone is
        (GpuReading(0, None, (GpuProcess(9, 0, None), GpuProcess(1, 900, None))), {1: "a"}, {"a": Q},
         {"a": Share(0.0, 900, None)}),
        # no per-process samples at all (not supported): only processes-or-not tells
        (GpuReading(40, None, (GpuProcess(1, 100, None),), samples=False), {1: "a"}, {"a": Q, "b": Q},
         {"a": Share(None, 100, None), "b": Share(0.0, 0, None)}),
        # a process of another user's server or of nobody never counts for a sharer
        (GpuReading(30, None, (GpuProcess(1, 100, 30),)), {}, {"a": Q}, {"a": Share(0.0, 0, None)}),
    ],
)
def test_attribution(reading, owner, held, expect):
    assert attribute(reading, owner, held) == expect


def test_holders_by_gpu():
    inv = parse_spec("2xA100-80GB+shared(4), 1xA100-80GB")
    holder = {"localhost/gpu0/share0": "a", "localhost/gpu0/share1": "a", "localhost/gpu1/share3": "b",
              "localhost/gpu2": "c"}
    assert holders_by_gpu(list(inv.devices), holder) == {("localhost", 0): {"a": Fraction(1, 2)},
                                                        ("localhost", 1): {"b": Q}}


@pytest.fixture
def server_tree():
    """A 'server' process carrying GPULAB_SPAWN_ID, with a child that cleared its environment
    (``env -i``), and an unrelated process: (server pid, child pid, stranger pid)."""
    env = dict(os.environ, GPULAB_SPAWN_ID="spawn-a")
    server = subprocess.Popen(["bash", "-c", "env -i sleep 60 & echo $!; wait"], env=env, stdout=subprocess.PIPE,
                              text=True)
    child = int(server.stdout.readline())
    stranger = subprocess.Popen(["sleep", "60"], env={k: v for k, v in os.environ.items() if k != "GPULAB_SPAWN_ID"})
    time.sleep(0.2)
    yield server.pid, child, stranger.pid
    for p in (child,):
        try:
            os.kill(p, 9)
        except ProcessLookupError:
            pass
    server.kill()
    stranger.kill()
    server.wait()
    stranger.wait()


def test_processes_belong_to_servers_through_their_tree(server_tree):
    server, child, stranger = server_tree
    assert parent_of(child) == server
    assert spawn_id_of(server) == "spawn-a"
    assert spawn_id_of(child) == "spawn-a"  # its own environment is empty: found through its parent
    assert spawn_id_of(stranger) is None
    assert spawn_id_of(2**22 + 12345) is None  # gone (or never was)
    assert owners([server, child, stranger, server]) == {server: "spawn-a", child: "spawn-a"}


def test_nvml_reader_measures_each_sharer_by_its_processes(server_tree):
    """A shared GPU busy through one sharer's process: that sharer reads busy, its neighbour (with
    a context open) idle, an unheld share unknown; a whole GPU reads as the GPU."""
    server, child, stranger = server_tree
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             env=dict(os.environ, GPULAB_SPAWN_ID="spawn-b"))
    try:
        nv = FakeNVML([
            {"name": "NVIDIA H200", "uuid": "GPU-0", "memory_mib": 143771, "util": 25, "power_w": 400, "processes": [
                {"pid": child, "memory_mib": 4096, "sm": 25},  # spawn-a's training run
                {"pid": other.pid, "memory_mib": 1024, "sm": None},  # spawn-b: a context, no kernels
                {"pid": stranger, "memory_mib": 512, "sm": None},  # outside gpulab
            ]},
            {"name": "NVIDIA H200", "uuid": "GPU-1", "memory_mib": 143771, "util": 7},
        ])
        inv = parse_spec("1xH200-141GB+shared(4), 1xH200-141GB")
        holders = {"localhost/gpu0/share0": "spawn-a", "localhost/gpu0/share1": "spawn-b", "localhost/gpu1": "spawn-c"}
        reader = NVMLReader(nv)
        got = reader.read(list(inv.devices), holders)
        assert (got["localhost/gpu0/share0"].util, got["localhost/gpu0/share0"].memory_used_mib) == (100.0, 4096)
        assert (got["localhost/gpu0/share1"].util, got["localhost/gpu0/share1"].memory_used_mib) == (0.0, 1024)
        assert got["localhost/gpu0/share0"].power_w == 100.0  # a quarter of the GPU's 400 W
        assert got["localhost/gpu0/share2"].util is None  # held by no one: unknown, never idle
        assert got["localhost/gpu1"].util == 7  # a whole GPU: the GPU's own reading
        assert nv.initialised == 0
        # the next round sees only newer samples: the training run stopped launching kernels
        nv.gpus[0]["processes"][0]["sm"] = None
        again = reader.read(list(inv.devices), holders)
        assert again["localhost/gpu0/share0"].util == 0.0
        # per-process utilisation not supported: a sharer with a context cannot be told idle
        nv.gpus[0]["process_util"] = False
        assert reader.read(list(inv.devices), holders)["localhost/gpu0/share1"].util is None
    finally:
        other.kill()
        other.wait()
