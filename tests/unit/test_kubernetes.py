"""The Kubernetes backend without a cluster: capacity from recorded API responses (and through
kubernetes_asyncio against a fake API server serving them), the queue of unschedulable pods,
and the pod manifests kubespawner builds from gpulab's choices for every profile and GPU option.
"""

from __future__ import annotations

import asyncio
from fractions import Fraction
from types import SimpleNamespace

import pytest

from tests.support import kube  # noqa: I001  (sets $KUBECONFIG before kubespawner is imported)

from jupyterhub.spawner import SpawnException
from kubernetes_asyncio.client import ApiClient
from traitlets.config import Config

from hub_plugins.core import GPULab
from hub_plugins.gpu.devices import kind_of
from hub_plugins.spawners.kubernetes.capacity import KubeCapacity
from hub_plugins.spawners.kubernetes.nodes import auto_name, inventory_from_cluster, pod_requests, tolerated
from hub_plugins.spawners.kubernetes.queue import queue_message, queue_position, unschedulable_reason
from hub_plugins.settings.cluster import update_kubernetes
from hub_plugins.settings.defaults import deep_merge
from hub_plugins.settings.schema import DEFAULTS
from hub_plugins.spawners.kubernetes.spawner import KubeGPUSpawner

NODES, PODS = kube.fixture("nodes.json"), kube.fixture("pods.json")
NAMES = {"NVIDIA-A100-SXM4-80GB": "A100-80GB"}
TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def cluster_inventory():
    return inventory_from_cluster(NODES, PODS, names=NAMES, tolerations=TOLERATIONS)


def test_capacity_from_gpu_operator_labels_and_running_pods():
    inv = cluster_inventory()
    assert inv.summary() == {"A100-80GB": 5, "A100-80GB:1g.10gb": 4, "A100-80GB:3g.40gb": 1,
                             "A100-40GB:1g.5gb": 7, "T4-15GB:shared": 4}
    # left out: cordoned, not ready, mid-MIG-repartitioning, tainted for another team, no GPUs
    assert inv.note == ("left out: gpu-h100-1 (cordoned), gpu-l4-1 (not ready), gpu-a100-2 (MIG repartitioning "
                        "in progress), gpu-other-team (taint dedicated=other-team:NoSchedule)")
    # busy: 2 (running) + 1 (pending, bound) on gpu-a100-1, not the finished pod; an init container's MIG slice
    busy = {k.rsplit("/", 1)[0]: 0 for k in inv.external_busy}
    for k in inv.external_busy:
        busy[k.rsplit("/", 1)[0]] += 1
    assert busy == {"k8s/gpu-a100-1/nvidia.com/gpu": 3, "k8s/gpu-a100-mig/nvidia.com/mig-1g.10gb": 1,
                    "k8s/gpu-t4-shared/nvidia.com/gpu": 1}
    free = inv.free(set())
    assert sum(d.gpu_type == "A100-80GB" for d in free) == 2
    weights = {t: inv.of_type(t)[0].weight for t in inv.types}
    assert weights == {"A100-80GB": 1, "A100-80GB:1g.10gb": Fraction(1, 7), "A100-80GB:3g.40gb": Fraction(3, 7),
                       "A100-40GB:1g.5gb": Fraction(1, 7), "T4-15GB:shared": Fraction(1, 4)}
    single = inv.of_type("A100-40GB:1g.5gb")[0]  # 'single' MIG strategy: requested as nvidia.com/gpu
    assert single.key.startswith("k8s/gpu-a100-single/nvidia.com/gpu/") and single.memory_mib == 5 * 1024
    assert all(not d.addressable for d in inv.devices)


def test_capacity_follows_a_mig_repartitioning():
    nodes = kube.fixture("nodes.json")
    node = next(n for n in nodes["items"] if n["metadata"]["name"] == "gpu-a100-2")
    node["metadata"]["labels"]["nvidia.com/mig.config.state"] = "success"  # the MIG manager is done
    node["status"]["allocatable"] = {"nvidia.com/gpu": "0", "nvidia.com/mig-1g.10gb": "28"}
    inv = inventory_from_cluster(nodes, PODS, names=NAMES, tolerations=TOLERATIONS)
    assert inv.summary()["A100-80GB:1g.10gb"] == 4 + 28 and inv.summary()["A100-80GB"] == 5


@pytest.mark.parametrize("product, memory, want", [
    ("NVIDIA-A100-SXM4-80GB", 81920, "A100-80GB"),
    ("NVIDIA-A100-PCIE-40GB", 40960, "A100-40GB"),
    ("NVIDIA-H100-80GB-HBM3", 81559, "H100-80GB"),
    ("NVIDIA-L4", 23034, "L4-22GB"),
    ("Tesla-T4", 15360, "T4-15GB"),
    ("NVIDIA-GeForce-RTX-4090", 24564, "RTX-24GB"),
    ("", 0, "GPU"),
])
def test_type_names_from_product_labels(product, memory, want):
    assert auto_name(product, memory) == want


@pytest.mark.parametrize("taint, ok", [
    ({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}, True),
    ({"key": "nvidia.com/gpu", "effect": "NoExecute"}, False),
    ({"key": "dedicated", "value": "x", "effect": "NoSchedule"}, False),
    ({"key": "dedicated", "value": "x", "effect": "PreferNoSchedule"}, True),
])
def test_taints_and_tolerations(taint, ok):
    assert tolerated(taint, TOLERATIONS) is ok
    assert tolerated(taint, [{"operator": "Exists"}])  # tolerates everything


def test_pod_requests_sum_containers_and_take_the_largest_init_container():
    pod = {"spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}},
                                   {"resources": {"requests": {"nvidia.com/gpu": "1", "cpu": "2"}}}],
                    "initContainers": [{"resources": {"limits": {"nvidia.com/gpu": "3"}}}]}}
    assert pod_requests(pod) == {"nvidia.com/gpu": 3}


def test_unschedulable_pods_get_a_queue_position_and_the_schedulers_reason():
    pods = PODS["items"]
    by = {p["metadata"]["name"]: p for p in pods}
    assert unschedulable_reason(by["jupyter-ann"]) is None
    assert unschedulable_reason(by["jupyter-dan"]).endswith("5 Insufficient nvidia.com/gpu.")  # no "preemption:" tail
    assert queue_position(by["jupyter-dan"], pods) == (1, 2)
    assert queue_position(by["jupyter-eve"], pods) == (2, 2)
    assert queue_position(by["jupyter-fay"], pods) == (1, 1)  # asks for another resource
    msg = queue_message(by["jupyter-eve"], pods)
    assert msg.startswith("Waiting for room in the cluster (4 nvidia.com/gpu): position 2 of 2 in the queue. "
                          "The scheduler says: 0/9 nodes are available:")
    assert queue_message(by["jupyter-ann"], pods) is None


async def test_capacity_reader_reads_nodes_and_pods_through_the_api(tmp_path):
    api = await kube.FakeAPI().start()
    try:
        reader = KubeCapacity(NAMES, {}, 60, TOLERATIONS, kubeconfig=kube.write_kubeconfig(api.url, str(tmp_path / "kc")))
        inv = await asyncio.to_thread(reader.refresh_now)
        assert inv.summary() == cluster_inventory().summary() and inv.external_busy == cluster_inventory().external_busy
        assert ("/api/v1/pods", {"fieldSelector": "status.phase!=Succeeded,status.phase!=Failed"}) in api.queries
        await api.stop()
        inv = await asyncio.to_thread(reader.refresh_now)  # the API is gone: keep the last read, say why
        assert inv.summary() == cluster_inventory().summary() and "cannot read capacity from kubernetes" in inv.note
    finally:
        reader.stop()
        await api.stop()


# -- pod manifests -------------------------------------------------------------------------------
@pytest.fixture
def config(tmp_path):
    GPULab.clear_instance()
    c = Config()
    c.GPULab.db_url = f"sqlite:///{tmp_path}/gpulab.sqlite"
    c.GPULab.profiles_dir = str(kube.FIXTURES.parents[2] / "profiles")
    c.GPULab.quotas = {"default": {"max_gpus": 1}, "groups": {"staff": {"max_gpus": 4}},
                       "overrides": [{"user": "low", "cpu_limit": 1, "mem_limit": "2G", "expires": "2099-01-01",
                                      "reason": "test caps"}]}
    cfg = deep_merge(DEFAULTS, {"backend": "kubernetes", "gpus": {"inventory": "4xA100-80GB"},
                                "kubernetes": {"gpu_types": [{"name": "A100-80GB", "product": "NVIDIA-A100-SXM4-80GB"}],
                                               "node_selector": {"pool": "lab"}}})
    update_kubernetes(c, cfg)  # what gpulab.yaml gives the spawner (storage, tolerations, ...)
    c.GPULab.capacity_reader = cluster_inventory
    yield c
    GPULab.clear_instance()


def spawner(config, name="ann", groups=("staff",), server=""):
    user = SimpleNamespace(id=abs(hash(name)) % 10**6, name=name, groups=[SimpleNamespace(name=g) for g in groups],
                           url=f"/user/{name}/")
    return KubeGPUSpawner(_mock=True, user=user, config=config,
                          orm_spawner=SimpleNamespace(name=server, server=None, state=None))


async def manifest(config, options, **kw):
    s = spawner(config, **kw)
    s.user_options = options
    await s.run_pre_spawn_hook()
    try:
        async with ApiClient() as api:
            return s, api.sanitize_for_serialization(await s.get_pod_manifest())
    finally:
        await s.run_post_stop_hook()


def gpu_options(catalog, inv):
    """(profile, count, type) for every profile and GPU option this cluster can run."""
    per_host = {t: max(sum(1 for d in inv.of_type(t) if d.host == h) for h in {d.host for d in inv.of_type(t)})
                for t in inv.types}
    for p in catalog:
        for count in p.gpu_counts:
            for t in (inv.types if count else [""]):
                if not count or (p.allows_type(t) and count <= per_host[t]):
                    yield p.name, count, t


RESOURCE = {"A100-80GB": "nvidia.com/gpu", "A100-80GB:1g.10gb": "nvidia.com/mig-1g.10gb",
            "A100-80GB:3g.40gb": "nvidia.com/mig-3g.40gb", "A100-40GB:1g.5gb": "nvidia.com/gpu",
            "T4-15GB:shared": "nvidia.com/gpu"}
PRODUCT = {"A100-80GB": "NVIDIA-A100-SXM4-80GB", "A100-80GB:1g.10gb": "NVIDIA-A100-SXM4-80GB",
           "A100-80GB:3g.40gb": "NVIDIA-A100-SXM4-80GB", "A100-40GB:1g.5gb": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb",
           "T4-15GB:shared": "Tesla-T4-SHARED"}


async def test_pod_manifests_for_every_profile_and_gpu_option(config):
    core = GPULab.instance(config=config)
    cases = list(gpu_options(core.catalog, cluster_inventory()))
    assert len(cases) > 40 and {kind_of(t) for _, _, t in cases if t} == {"gpu", "mig", "shared"}
    for profile, count, gpu_type in cases:
        p = core.catalog.get(profile)
        if not p.image:
            continue
        options = {"profile": profile, "gpus": count, **({"gpu_type": gpu_type} if count else {})}
        s, pod = await manifest(config, options)
        spec = pod["spec"]
        c = spec["containers"][0]
        where = f"{profile} {count} {gpu_type}"
        assert c["image"] == p.image, where
        limits, requests = c["resources"].get("limits", {}), c["resources"].get("requests", {})
        if count:
            assert limits[RESOURCE[gpu_type]] == requests[RESOURCE[gpu_type]] == str(count), where
            assert spec["nodeSelector"] == {"pool": "lab", "nvidia.com/gpu.product": PRODUCT[gpu_type]}, where
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"], where
        else:
            assert not any(k.startswith("nvidia.com/") for k in {**limits, **requests}), where
            assert spec["nodeSelector"] == {"pool": "lab"}, where
            assert not any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", [])), where
        assert float(limits["cpu"]) == p.cpu_limit and int(limits["memory"]) == p.mem_limit, where
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert "CUDA_VISIBLE_DEVICES" not in env and "NVIDIA_VISIBLE_DEVICES" not in env, where  # the device plugin's job
        assert env["GPULAB_GPU_COUNT"] == str(count) and env["GPULAB_PROFILE"] == profile, where
        assert c["volumeMounts"][0] == {"mountPath": "/home/jovyan", "name": "home"}, where
        assert spec["volumes"][0] == {"name": "home", "persistentVolumeClaim": {"claimName": "claim-ann"}}, where


async def test_configured_pod_settings_are_kept_and_gpu_settings_added(config):
    dedicated = {"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"}
    config.KubeGPUSpawner.tolerations = [dedicated]  # what z2jh sets for user pods
    config.KubeGPUSpawner.extra_resource_limits = {"example.com/fuse": "1"}
    _, pod = await manifest(config, {"profile": "pytorch", "gpus": 1, "gpu_type": "A100-80GB"})
    assert pod["spec"]["tolerations"][0] == dedicated and len(pod["spec"]["tolerations"]) == 2
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert limits["example.com/fuse"] == "1" and limits["nvidia.com/gpu"] == "1"
    _, cpu = await manifest(config, {"profile": "pytorch", "gpus": 0})
    assert cpu["spec"]["tolerations"] == [dedicated] and "nvidia.com/gpu" not in cpu["spec"]["containers"][0]["resources"]["limits"]


async def test_per_user_home_volume_and_quota_caps(config):
    s, pod = await manifest(config, {"profile": "pytorch", "gpus": 0}, name="low", groups=())
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert float(limits["cpu"]) == 1 and int(limits["memory"]) == 2 * 2**30  # capped by the user's override
    pvc = s.get_pvc_manifest()
    assert pvc.metadata.name == "claim-low" and pvc.spec.resources.requests == {"storage": "10Gi"}
    _, named = await manifest(config, {"profile": "minimal", "gpus": 0}, name="low", groups=(), server="exp1")
    assert named["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "claim-low"  # one home per user


@pytest.mark.parametrize("options, status, fragment", [
    ({"gpus": 4, "gpu_type": "A100-80GB:3g.40gb"}, 409, "No node of the cluster has 4 A100-80GB:3g.40gb MIG slices"),
    ({"gpus": 2}, 403, "allows 1 GPU at a time"),
    ({"profile": "pytorch", "gpus": 1, "extra_resource_limits": {"nvidia.com/gpu": "8"}}, 400, "extra_resource_limits"),
    ({"profile": "pytorch", "profile-option-pytorch--gpus": "4x-a100-80gb"}, 400, "profile-option"),
    # kubespawner's own profileList choice (no quota check there) is not a gpulab request
    ({"profile": "pytorch", "gpus": "4x-a100-80gb"}, 400, "'gpus' must be a whole number"),
])
async def test_requests_are_refused_before_any_pod(config, options, status, fragment):
    s = spawner(config, name="bob", groups=())
    if options.get("gpus") == 4:
        s = spawner(config, name="bob")  # staff: within quota, beyond any node
    s.user_options = options
    with pytest.raises(SpawnException) as e:
        await s.run_pre_spawn_hook()
    assert e.value.status_code == status and fragment in e.value.message, e.value.message


async def test_a_waiting_pod_shows_its_queue_position_on_the_progress_page(config):
    s = spawner(config, name="eve")
    by = {p["metadata"]["name"]: p for p in PODS["items"]}
    s.gpulab_watched_pods = lambda: (by["jupyter-eve"], PODS["items"])
    s.queue_check_interval = 0.01
    task = asyncio.ensure_future(s.gpulab_watch_queue())
    await asyncio.sleep(0.1)
    task.cancel()
    lines = [e["message"] for e in s._gpulab_events]
    assert len(lines) == 1 and "position 2 of 2 in the queue" in lines[0] and "Insufficient nvidia.com/gpu" in lines[0]
