"""Pure parts of the Docker backend: names, labels, device requests, limits, orphans, image plan."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hub_plugins.quota.limits import Limits
from hub_plugins.spawn.spec import ServerSpec
from hub_plugins.spawners.docker import spec
from hub_plugins.spawners.docker.reconcile import finished_at, from_api
from images.build import Entry, PlanError, plan

GiB = 2**30


@pytest.mark.parametrize("user, server, name", [
    ("alice", "", "gpulab-alice"),
    ("alice", "exp1", "gpulab-alice--exp1"),
    ("Ann.Lee", "", "gpulab--41nn-2e-4cee"),  # escapes start with "-": still unambiguous
    ("a-b", "", "gpulab-a-2db"),  # '-' is escaped, so '--' only ever separates the server name
    ("x{prefix}", "", "gpulab-x-7bprefix-7d"),
    ("émile", "run/2", "gpulab--c3-a9mile--run-2f2"),
    ("a;rm -rf /", "", "gpulab-a-3brm-20-2drf-20-2f"),
])
def test_container_names_are_safe_and_distinct(user, server, name):
    assert spec.container_name("gpulab", user, server) == name
    assert spec.DOCKER_NAME_RE.match(name)


def test_names_never_collide():
    pairs = [("a", "b"), ("a--b", ""), ("a-", "-b"), ("A", ""), ("a", "")]
    names = {spec.container_name("p", u, s) for u, s in pairs}
    assert len(names) == len(pairs)


def test_long_names_are_cut_with_a_hash():
    a = spec.container_name("gpulab", "u" * 300)
    b = spec.container_name("gpulab", "u" * 299 + "v")
    assert len(a) == spec.MAX_NAME and a != b


@pytest.mark.parametrize("prefix", ["", "-x", "UP", "a b", "x" * 40, "a{b}"])
def test_bad_prefixes_are_refused(prefix):
    with pytest.raises(spec.SpecError):
        spec.container_name(prefix, "alice")


def test_volume_name():
    assert spec.volume_name("gpulab", "Ann") == "gpulab-home--41nn"


def test_labels_carry_the_contract():
    lab = spec.labels("h1", "alice", 7, "exp", "pytorch", ["1", "3"], "A100-80GB", "s1")
    assert lab["gpulab.user"] == "alice" and lab["gpulab.server"] == "exp" and lab["gpulab.gpus"] == "1,3"
    assert lab["gpulab.hub"] == "h1" and lab["gpulab.user_id"] == "7" and lab["gpulab.spawn_id"] == "s1"
    assert all(isinstance(v, str) for v in lab.values())


@pytest.mark.parametrize("ids", [["0"], ["1", "3"], ["MIG-5c2e-1111", "MIG-5c2e-2222"]])
def test_device_requests_carry_exactly_the_allocated_ids(ids):
    (req,) = spec.device_requests(ids)
    assert req["DeviceIDs"] == ids and req["Capabilities"] == [["gpu"]] and req["Count"] == 0
    assert spec.device_env(ids)["NVIDIA_VISIBLE_DEVICES"] == ",".join(ids)
    assert "CUDA_VISIBLE_DEVICES" not in spec.device_env(ids)


def test_cpu_only_gets_no_request_and_no_gpu():
    assert spec.device_requests([]) == []
    assert spec.device_env([]) == {"NVIDIA_VISIBLE_DEVICES": "void", "CUDA_VISIBLE_DEVICES": ""}
    hc = spec.host_config(volume="v", home="/home/jovyan", gpus=[], res=spec.Resources())
    assert "device_requests" not in hc


def profile(**kw):
    base = dict(cpu_limit=8, mem_limit=32 * GiB, cpu_guarantee=None, mem_guarantee=None)
    return SimpleNamespace(**{**base, **kw})


@pytest.mark.parametrize("prof, quota, cpu, mem", [
    (profile(), Limits(), 8, 32 * GiB),
    (profile(), Limits(cpu_limit=4, mem_limit=16 * GiB), 4, 16 * GiB),  # quota caps the profile
    (profile(cpu_limit=2, mem_limit=4 * GiB), Limits(cpu_limit=4, mem_limit=16 * GiB), 2, 4 * GiB),
    (profile(cpu_limit=None, mem_limit=None), Limits(cpu_limit=1), 1, None),
    (profile(cpu_limit=None, mem_limit=None), Limits(), None, None),
])
def test_limits_from_profile_capped_by_quota(prof, quota, cpu, mem):
    res = spec.resources(ServerSpec.resolve(prof, quota))
    assert (res.cpu_limit, res.mem_limit) == (cpu, mem)
    hc = res.host_config()
    assert hc.get("nano_cpus") == (int(cpu * 1e9) if cpu else None)
    assert hc.get("mem_limit") == mem and hc.get("memswap_limit") == mem


def test_guarantees_never_exceed_limits_and_shm_follows_memory():
    res = spec.resources(ServerSpec.resolve(profile(cpu_guarantee=16, mem_guarantee=64 * GiB),
                                            Limits(cpu_limit=4, mem_limit=8 * GiB)))
    assert res.cpu_guarantee == 4 and res.mem_guarantee == 8 * GiB
    assert res.shm_size == 4 * GiB
    assert spec.default_shm(None) == GiB and spec.default_shm(64 * GiB) == 8 * GiB
    assert spec.resources(ServerSpec.resolve(profile(), Limits()), shm_size=123).shm_size == 123


def test_host_config_shape():
    hc = spec.host_config(volume="gpulab-home-a", home="/home/jovyan", gpus=["2"], res=spec.Resources(cpu_limit=1),
                          extra_binds={"/data": {"bind": "/data", "mode": "ro"}}, pids_limit=100)
    assert hc["network_mode"] == "host" and hc["auto_remove"] is False
    assert hc["binds"]["gpulab-home-a"] == {"bind": "/home/jovyan", "mode": "rw"} and "/data" in hc["binds"]
    assert hc["security_opt"] == ["no-new-privileges:true"] and hc["pids_limit"] == 100
    assert spec.merge(hc, {"binds": {"/x": {"bind": "/x"}}, "shm_size": 1})["binds"].keys() >= {"/x", "/data"}


def listed(kind="server", spawn="s1", server=""):
    return {"Id": "abc123", "Names": ["/gpulab-ann"], "Labels": {
        "gpulab.hub": "h", "gpulab.kind": kind, "gpulab.user": "ann", "gpulab.user_id": "1",
        "gpulab.server": server, "gpulab.spawn_id": spawn, "gpulab.gpus": "1"}}


def test_containers_as_found_servers():
    f = from_api(listed(server="exp"))
    assert (f.spawn_id, f.user_name, f.server_name, f.handle) == ("s1", "ann", "exp", "abc123")
    assert from_api(listed(kind="home")) is None  # volumes are never servers
    assert from_api({"Id": "x", "Labels": {}}).spawn_id == ""  # hand-made: no spawn id, an orphan


@pytest.mark.parametrize("state, when", [
    ({"Running": False, "FinishedAt": "2026-11-29T15:01:51.123456789Z"}, "2026-11-29 15:01:51.123456"),
    ({"Running": True, "FinishedAt": "0001-01-01T00:00:00Z"}, None),
    ({"Running": False, "FinishedAt": "0001-01-01T00:00:00Z"}, None),  # created, never ran
    ({}, None),
])
def test_finished_at(state, when):
    got = finished_at(state)
    assert (str(got) if got else None) == when


MINIMAL = {"profile": "minimal", "pip": ["jupyterhub==6.1.1"]}
TORCH = {"profile": "pytorch", "pip": ["jupyterhub==6.1.1", "torch==2.15.0"]}


def test_image_plan_from_profiles():
    images = [Entry("gpulab/base:4.6.6-aaa", ("minimal",), MINIMAL), Entry("gpulab/pytorch:2.15.0-bbb", ("pytorch",), TORCH)]
    steps = plan(images, {"base", "env"}, "python:3.11-slim-bookworm")
    assert [s.name for s in steps] == ["base", "pytorch"]
    assert steps[0].build_args == {"VERSION": "4.6.6-aaa", "BASE_IMAGE": "python:3.11-slim-bookworm"}
    assert steps[1].build_args == {"VERSION": "2.15.0-bbb", "GPULAB_BASE": "gpulab/base:4.6.6-aaa"}
    assert steps[1].dockerfile == "env" and steps[1].spec == TORCH  # no images/pytorch: the generic one
    assert [s.name for s in plan(images, {"base", "env"}, "x", only={"base"})] == ["base"]


@pytest.mark.parametrize("images, why", [
    ([Entry("gpulab/pytorch:1", ("p",), TORCH)], "no profile uses the base image"),
    ([Entry("gpulab/base:1", ("m",), MINIMAL), Entry("gpulab/rust:1", ("r",))], "no images/rust/Dockerfile and no environment"),
    ([Entry("gpulab/base:1", ("m",), MINIMAL), Entry("gpulab/base:2", ("n",), MINIMAL)], "named with two tags"),
    ([Entry("base", ("m",))], "must be <repo>/<name>:<tag>"),
])
def test_image_plan_errors(images, why):
    with pytest.raises(PlanError, match=why):
        plan(images, {"base", "env"}, "x")


def test_every_profile_image_has_a_dockerfile_and_its_pins():
    from pathlib import Path

    from images.build import context_tar, dockerfiles, profile_images

    root = Path(__file__).resolve().parents[2]
    steps = plan(profile_images(root / "profiles"), dockerfiles(), "x")
    # the tags are the pins' (as in the Helm values and the form); each context carries them
    from hub_plugins.spawn.profiles import load_dir

    catalog = load_dir(root / "profiles")
    for s in steps:
        p = catalog.get(s.profiles[0])
        assert s.image == p.image and s.spec == p.environment.as_dict()
        import json
        import tarfile

        with tarfile.open(fileobj=context_tar(s, None)) as tar:
            assert json.load(tar.extractfile("env.json")) == p.environment.as_dict()
            assert {"Dockerfile", "install.py"} <= set(tar.getnames())
    assert {s.name for s in steps} == {"base", "pytorch", "tensorflow", "vscode"}
