"""Kubernetes backend: each server is a pod; the NVIDIA device plugin picks its GPUs.

Applying an allocation = pod settings (``kube/overrides.py``): the GPU type and count gpulab
granted as extended resources (``nvidia.com/gpu`` or a MIG resource), a node selector on the
GPU Operator's product label and the GPU nodes' tolerations, the profile's image, CPU and memory
capped by the quota. The home directory is a per-user PVC (settings: ``kubernetes.storage``).
"""

from __future__ import annotations

from jupyterhub.spawner import SpawnException

from ..cluster.fit import never_fits
from ..kube.nodes import resource_of
from ..kube.overrides import KubeSettings, pod_overrides
from ..kube.spawner import QueueAwareKubeSpawner
from .mixin import GPUSpawnerMixin


class KubeGPUSpawner(GPUSpawnerMixin, QueueAwareKubeSpawner):
    """GPU-aware pods."""

    gpulab_backend = "kubernetes"

    def gpulab_profile_available(self, profile):
        if not profile.image:
            return False, "it has no container image (no 'image' in the profile)"
        return True, ""

    def gpulab_device_env(self, allocation):
        # the device plugin exposes exactly the granted devices in the container; setting
        # CUDA_VISIBLE_DEVICES here would hide them
        return {}

    @property
    def kube_settings(self) -> KubeSettings:
        return KubeSettings(dict(self.node_selector_base), dict(self.gpu_node_selector), tuple(self.gpu_tolerations))

    @property
    def node_selector_base(self) -> dict:
        # the configured selector, before gpulab_apply replaced node_selector for one server
        if not hasattr(self, "_gpulab_base_selector"):
            self._gpulab_base_selector = dict(self.node_selector)
        return self._gpulab_base_selector

    def gpulab_product(self, devices, gpu_type: str) -> str:
        """The nvidia.com/gpu.product value of a type: as nodes show it now, else as configured."""
        if devices:
            return devices[0].model
        base = gpu_type.split(":")[0]
        for t in self.gpu_types:
            if t.get("name") in (gpu_type, base):
                return t.get("product", "")
        return ""

    async def gpulab_apply(self, allocation, profile):
        self.node_selector_base  # noqa: B018  remember the configured selector first
        inv = self.gpulab.inventory()
        why = never_fits(inv, allocation.gpu_type, allocation.count)
        if why:
            raise SpawnException(why, reason="never_fits", status_code=409)
        # the type's nodes as the cluster shows them (a simulated inventory has no node labels)
        devices = inv.of_type(allocation.gpu_type) if allocation.count and inv.source == "kubernetes" else []
        lim = self.gpulab.effective(self.user.name, self.gpulab_groups).limits
        overrides = pod_overrides(
            profile, allocation.gpu_type, allocation.count, self.gpulab_product(devices, allocation.gpu_type),
            self.kube_settings, lim.cpu_limit, lim.mem_limit, resource_of(devices[0]) if devices else "",
        )
        for key, value in overrides.items():
            setattr(self, key, value)
