"""Shared GPUs on Kubernetes (pure): the device plugin's sharing config generated from
gpus.sharing, and shares read back from the nodes, renamed ones included."""

from __future__ import annotations

import copy
from fractions import Fraction

import pytest
import yaml

from hub_plugins.spawners.kubernetes import sharing
from hub_plugins.spawners.kubernetes.nodes import inventory_from_cluster, pod_requests
from tests.support import kube

GPU_TYPES = [{"name": "T4-16GB", "product": "Tesla-T4"}]
UUID = "GPU-8f3c2d1e-0a01-4d2b-9a55-0f3c2d1e0a01"


@pytest.mark.parametrize(
    "rule, name, sharing_config, label",
    [
        ({"gpus": "T4-16GB", "shares": 4}, "t4-16gb-x4",
         {"timeSlicing": {"renameByDefault": False, "resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}},
         "kubectl label nodes -l nvidia.com/gpu.product=Tesla-T4 nvidia.com/device-plugin.config=t4-16gb-x4"),
        ({"gpus": [1, 0], "shares": 2}, "gpus-0-1-x2",
         {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "rename": "nvidia.com/gpu.shared",
                                         "devices": [0, 1], "replicas": 2}]}},
         "kubectl label nodes <node> nvidia.com/device-plugin.config=gpus-0-1-x2"),
        ({"gpus": [UUID], "shares": 7}, "gpus-8f3c2d1e-x7",
         {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "rename": "nvidia.com/gpu.shared",
                                         "devices": [UUID.upper()], "replicas": 7}]}},
         "kubectl label nodes <node> nvidia.com/device-plugin.config=gpus-8f3c2d1e-x7"),
        ({"gpus": "*", "shares": 3}, "all-x3",
         {"timeSlicing": {"renameByDefault": False, "resources": [{"name": "nvidia.com/gpu", "replicas": 3}]}},
         "kubectl label nodes <node> nvidia.com/device-plugin.config=all-x3"),
    ],
)
def test_one_device_plugin_config_per_rule(rule, name, sharing_config, label):
    cm, commands = sharing.configmap([rule], GPU_TYPES)
    assert (cm["kind"], cm["metadata"]["name"]) == ("ConfigMap", "gpulab-device-plugin")
    assert sorted(cm["data"]) == sorted(["default", name])
    config = yaml.safe_load(cm["data"][name])
    # the device plugin's config v1; MIG stays its own resources (mixed), never replicated
    assert config == {"version": "v1", "flags": {"migStrategy": "mixed"}, "sharing": sharing_config}
    assert yaml.safe_load(cm["data"]["default"]) == {"version": "v1", "flags": {"migStrategy": "mixed"}}
    assert commands[0].startswith(label)


def test_the_generated_file_parses_as_the_configmap():
    text = sharing.render([{"gpus": "T4-16GB", "shares": 4}], GPU_TYPES)
    assert yaml.safe_load(text) == sharing.configmap([{"gpus": "T4-16GB", "shares": 4}], GPU_TYPES)[0]
    assert "kubectl apply -f helm-values/device-plugin-config.yaml" in text


def test_renamed_shares_and_whole_gpus_on_one_node():
    """A node whose GPUs 0-1 are shared 4 ways by a generated config (renamed shares) and whose
    other two are whole; a pod holds one share."""
    nodes = kube.fixture("nodes.json")
    node = copy.deepcopy(next(n for n in nodes["items"] if n["metadata"]["name"] == "gpu-t4-shared"))
    node["metadata"]["name"] = "gpu-t4-mixed"
    node["metadata"]["labels"]["nvidia.com/gpu.product"] = "Tesla-T4"
    node["status"]["allocatable"] = {"nvidia.com/gpu": "2", "nvidia.com/gpu.shared": "8"}
    pod = {"spec": {"nodeName": "gpu-t4-mixed", "containers": [
        {"resources": {"limits": {"nvidia.com/gpu.shared": "1"}}}]}, "status": {"phase": "Running"}}
    assert pod_requests(pod) == {"nvidia.com/gpu.shared": 1}
    inv = inventory_from_cluster({"items": [node]}, {"items": [pod]}, names={"Tesla-T4": "T4-16GB"},
                                 tolerations=[{"operator": "Exists"}])
    assert inv.summary() == {"T4-16GB": 2, "T4-16GB:shared": 8}
    share = inv.of_type("T4-16GB:shared")[0]
    assert (share.weight, share.memory_mib) == (Fraction(1, 4), 16 * 1024 // 4)  # the size its name says
    assert inv.of_type("T4-16GB")[0].weight == 1
    assert share.key.startswith("k8s/gpu-t4-mixed/nvidia.com/gpu.shared/")  # what a pod then requests
    assert sum(d.gpu_type == "T4-16GB:shared" for d in inv.free(set())) == 7
