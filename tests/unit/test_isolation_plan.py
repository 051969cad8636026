"""What a local server is held to and how the kernel is told (hub_plugins/isolation), with tables:
limits, device allow-lists, cgroup v1/v2 files, systemd properties and command lines, names, and
the parsers of /proc files (recorded from real hosts)."""


import pytest

from hub_plugins.isolation.cgroupfs import parse_mounts, parse_self_cgroup
from hub_plugins.isolation.plan import (
    BASE_DEVICES, Limits, Node, cgroup_name, char_majors, device_rules, gpu_node_paths, limits_for,
    nvidia_extra_rules, group_weight, oom_kills, oom_message, systemd_properties, v1_writes, v2_writes,
)
from hub_plugins.isolation.systemd import run_argv

ALL = frozenset({"memory", "cpu", "devices"})
G = 2**30


@pytest.mark.parametrize("profile, quota, nodes, controls, expected", [
    ((2, 4 * G), (None, None), [], ALL, Limits(4 * G, 2.0, (), ())),
    ((8, 32 * G), (4, 16 * G), [], ALL, Limits(16 * G, 4.0, (), ())),  # the quota caps the profile
    ((None, None), (1, None), [], ALL, Limits(None, 1.0, (), ())),
    ((2, 4 * G), (None, None), [Node("/dev/nvidia1", (195, 1)), Node("/dev/nvidia3", (195, 3))], ALL,
     Limits(4 * G, 2.0, ((195, 1), (195, 3)), ("/dev/nvidia1", "/dev/nvidia3"))),
    ((2, 4 * G), (None, None), [Node("/dev/nvidia1", None)], ALL, Limits(4 * G, 2.0, (), ())),  # no node there
    ((2, 4 * G), (None, None), None, ALL, Limits(4 * G, 2.0, None, ())),  # devices placed by others
    ((2, 4 * G), (None, None), [], frozenset({"memory", "cpu"}), Limits(4 * G, 2.0, None, ())),  # cgroup v2
    ((2, 4 * G), (None, None), [], frozenset(), Limits()),  # nothing enforceable: nothing promised
])
def test_limits_for(profile, quota, nodes, controls, expected):
    assert limits_for(*profile, *quota, nodes, controls) == expected


def test_gpu_nodes_of_indices():
    # MIG slices and shares of one GPU come with its index: one node
    assert gpu_node_paths([2, 0, 2], "/dev/") == ["/dev/nvidia0", "/dev/nvidia2"]


def test_device_allow_list():
    cpu_only = device_rules(Limits(gpus=()))
    assert cpu_only == list(BASE_DEVICES)  # no NVIDIA node at all
    assert [r.v1() for r in cpu_only][-1] == "c 136:* rwm"  # terminals
    gpu = device_rules(Limits(gpus=((195, 2),), gpu_paths=("/dev/nvidia2",)),
                       nvidia_extra_rules({"nvidia-uvm": 509, "nvidia-caps": 235}))
    lines = [r.v1() for r in gpu[len(BASE_DEVICES):]]
    assert lines == ["c 195:255 rw", "c 195:254 rw", "c 509:* rw", "c 235:* r", "c 195:2 rw"]
    assert "c 195:0 rw" not in lines and "c 195:* rw" not in lines


@pytest.mark.parametrize("limits, swap, expected", [
    (Limits(2**30, 1.5, None), False, [("memory", "memory.limit_in_bytes", "1073741824"),
                                       ("cpu", "cpu.cfs_period_us", "100000"), ("cpu", "cpu.cfs_quota_us", "150000")]),
    (Limits(2**30, None, None), True, [("memory", "memory.limit_in_bytes", "1073741824"),
                                       ("memory", "memory.memsw.limit_in_bytes", "1073741824")]),
    (Limits(None, 0.001, None), False, [("cpu", "cpu.cfs_period_us", "100000"), ("cpu", "cpu.cfs_quota_us", "1000")]),
])
def test_v1_writes(limits, swap, expected):
    assert v1_writes(limits, [], swap) == expected


def test_v1_devices_deny_all_then_allow_the_list():
    limits = Limits(gpus=((195, 1),), gpu_paths=("/dev/nvidia1",))
    writes = v1_writes(limits, device_rules(limits), False)
    assert writes[0] == ("devices", "devices.deny", "a")
    assert ("devices", "devices.allow", "c 195:1 rw") in writes and ("devices", "devices.allow", "c 1:3 rwm") in writes


def test_v2_writes():
    assert v2_writes(Limits(512 * 2**20, 0.25)) == [("memory.max", "536870912"), ("memory.swap.max", "0"),
                                                     ("cpu.max", "25000 100000")]
    assert v2_writes(Limits()) == []


def test_systemd_scope():
    limits = Limits(4 * G, 2.0, ((195, 1),), ("/dev/nvidia1",))
    props = systemd_properties(limits, device_rules(limits, nvidia_extra_rules({"nvidia-uvm": 509})))
    assert props[:4] == [f"MemoryMax={4 * G}", "MemorySwapMax=0", "CPUQuota=200%", "DevicePolicy=closed"]
    assert "DeviceAllow=/dev/nvidia1 rw" in props and "DeviceAllow=char-nvidia-uvm rw" in props
    assert "DeviceAllow=char-pts rw" in props and not any("nvidia0" in p for p in props)
    argv = run_argv("gpulab-ann-1a2b3c4d", props[:1], ["/env/bin/jupyterhub-singleuser", "--debug"], 1001, 1001)
    assert argv == ["systemd-run", "--scope", "--quiet", "--unit=gpulab-ann-1a2b3c4d.scope",
                    f"--property=MemoryMax={4 * G}", "--uid=1001", "--gid=1001", "--",
                    "/env/bin/jupyterhub-singleuser", "--debug"]
    assert systemd_properties(Limits(), []) == []


@pytest.mark.parametrize("user, server, readable", [
    ("ann", "", "gpulab-ann-"),
    ("Ann.Smith@uni", "exp 1", "gpulab-ann-smith-uni--exp-1-"),
    ("../etc", "", "gpulab----etc-"),
])
def test_cgroup_names(user, server, readable):
    name = cgroup_name(user, server)
    assert name.startswith(readable) and len(name) == len(readable) + 8
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-")
    assert cgroup_name("ann", "x") != cgroup_name("ann-", "-x")  # two that read alike stay apart


def test_oom_counts_and_message():
    assert oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n") == 2  # v1 memory.oom_control
    assert oom_kills("low 0\nhigh 0\nmax 14\noom 1\noom_kill 1\noom_group_kill 0\n") == 1  # v2 memory.events
    assert oom_kills("oom_kill_disable 0\nunder_oom 0\n") == 0
    assert "its memory limit of 160 MB" in oom_message(Limits(mem_bytes=160 * 2**20))
    assert "its memory limit." in oom_message(None)


MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_parse_mounts_and_own_cgroup():
    assert parse_mounts(MOUNTINFO) == {"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                                       "memory": "/sys/fs/cgroup/memory", "devices": "/sys/fs/cgroup/devices",
                                       "unified": "/sys/fs/cgroup/unified"}
    assert parse_mounts("29 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n") == {
        "unified": "/sys/fs/cgroup"}
    own = parse_self_cgroup("5:devices:/\n4:memory:/process_api/ab12\n2:cpu,cpuacct:/\n1:name=systemd:/\n0::/\n")
    assert own["memory"] == "/process_api/ab12" and own["cpu"] == "/" and own["unified"] == "/"
    assert parse_self_cgroup("0::/system.slice/jupyterhub.service\n") == {"unified": "/system.slice/jupyterhub.service"}


def test_char_majors():
    text = "Character devices:\n  1 mem\n136 pts\n195 nvidia-frontend\n509 nvidia-uvm\n\nBlock devices:\n  8 sd\n"
    assert char_majors(text) == {"mem": 1, "pts": 136, "nvidia-frontend": 195, "nvidia-uvm": 509}


def test_describe():
    assert Limits(4 * G, 2.0, ((195, 1),), ("/dev/nvidia1",)).describe() == \
        "2 CPUs, 4 GB memory, GPU devices /dev/nvidia1"
    assert Limits(None, 1.0, (), ()).describe() == "1 CPU, no GPU devices"


@pytest.mark.parametrize("version,servers,cpus,expected", [
    (1, 0, 2, ("cpu.shares", "2048")),  # no server yet: like the host's CPUs
    (1, 1, 2, ("cpu.shares", "2048")),
    (1, 50, 2, ("cpu.shares", str(50 * 1024))),  # one task per server, as without cgroups
    (1, 500, 2, ("cpu.shares", "262144")),  # the kernel's maximum
    (2, 3, 2, ("cpu.weight", "300")),
    (2, 500, 2, ("cpu.weight", "10000")),
    (2, 0, 0, ("cpu.weight", "100")),
])
def test_group_weight(version, servers, cpus, expected):
    assert group_weight(version, servers, cpus) == expected
