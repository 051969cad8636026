"""Kubernetes backend: each server is a pod; the NVIDIA device plugin picks its GPUs.

Applying an allocation = pod settings (``kube/overrides.py``): the GPU type and count gpulab
granted as extended resources (``nvidia.com/gpu`` or a MIG resource), a node selector on the
GPU Operator's product label and the GPU nodes' tolerations, the profile's image, CPU and memory
capped by the quota. The home directory is a per-user PVC (settings: ``kubernetes.storage``).
"""

from __future__ import annotations

import copy


from .nodes import resource_of
from .overrides import KubeSettings, pod_overrides
from .kubespawner import QueueAwareKubeSpawner
from ..mixin import GPUSpawnerMixin


class KubeGPUSpawner(GPUSpawnerMixin, QueueAwareKubeSpawner):
    """GPU-aware pods."""

    def gpulab_profile_available(self, profile):
        if not profile.image:
            return False, "it has no container image (no 'image' in the profile)"
        return True, ""

    def gpulab_device_env(self, allocation):
        # the device plugin exposes exactly the granted devices in the container; setting
        # CUDA_VISIBLE_DEVICES here would hide them
        return {}

    MERGED = ("node_selector", "tolerations", "extra_resource_limits", "extra_resource_guarantees")

    @property
    def configured(self) -> dict:
        """The merged traits as configured (e.g. z2jh's user-pod tolerations), before
        gpulab_apply added one server's GPU settings to them."""
        if not hasattr(self, "_gpulab_configured"):
            self._gpulab_configured = {k: copy.deepcopy(getattr(self, k)) for k in self.MERGED}
        return self._gpulab_configured

    @property
    def kube_settings(self) -> KubeSettings:
        return KubeSettings(dict(self.configured["node_selector"]), dict(self.gpu_node_selector),
                            tuple(self.gpu_tolerations))

    def gpulab_product(self, devices, gpu_type: str) -> str:
        """The nvidia.com/gpu.product value of a type: as nodes show it now, else as configured."""
        if devices:
            return devices[0].model
        base = gpu_type.split(":")[0]
        for name in (gpu_type, base):  # the type's own entry first ('T4-16GB:shared' -> ...-SHARED)
            for t in self.gpu_types:
                if t.get("name") == name:
                    return t.get("product", "")
        return ""

    async def gpulab_apply(self, allocation, spec):
        base = self.configured
        inv = self.gpulab.inventory()
        # the type's nodes as the cluster shows them (a simulated inventory has no node labels)
        devices = inv.of_type(allocation.gpu_type) if allocation.count and inv.source == "kubernetes" else []
        lim = spec.limits
        overrides = pod_overrides(
            spec.profile, allocation.gpu_type, allocation.count, self.gpulab_product(devices, allocation.gpu_type),
            self.kube_settings, lim.cpu_limit, lim.mem_limit, resource_of(devices[0]) if devices else "",
        )
        for key, value in overrides.items():
            if key == "tolerations":  # added to the configured ones (as for node labels below)
                value = base[key] + [t for t in value if t not in base[key]]
            elif key in self.MERGED:
                value = {**base[key], **value}
            setattr(self, key, value)
