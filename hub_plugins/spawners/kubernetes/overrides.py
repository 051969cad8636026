"""A profile + a GPU choice -> KubeSpawner settings (pure).

One function, used twice: at spawn time by ``KubeGPUSpawner.gpulab_apply`` (after gpulab checked
the quota) and by the Helm values generator for ``singleuser.profileList`` (each profile's GPU
options as ``kubespawner_override``), so the values and the running hub cannot disagree.

- GPUs are extended resources: ``nvidia.com/gpu: N`` for whole GPUs (and time-sliced shares),
  ``nvidia.com/mig-<profile>: N`` for MIG instances (GPU Operator, ``mixed`` strategy); requests
  equal limits, as Kubernetes requires for extended resources.
- The GPU type becomes a node selector on the GPU Operator's ``nvidia.com/gpu.product`` label,
  and GPU pods get the tolerations of the (usually tainted) GPU nodes. CPU-only servers get
  neither, so they stay off GPU nodes.
- CPU and memory: the profile's, capped by the user's quota.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...gpu.devices import kind_of
from ...spawn.spec import cap
from .nodes import PRODUCT, resource_for


@dataclass(frozen=True)
class KubeSettings:
    """The admin's ``kubernetes`` section of gpulab.yaml (what pods need from it)."""

    node_selector: dict[str, str] = field(default_factory=dict)
    gpu_node_selector: dict[str, str] = field(default_factory=dict)
    gpu_tolerations: tuple[dict, ...] = ()


def pod_overrides(profile, gpu_type: str, count: int, product: str, settings: KubeSettings,
                  cpu_cap: float | None = None, mem_cap: int | None = None, resource: str = "") -> dict:
    """KubeSpawner trait values for one server (a ``kubespawner_override``). ``product``: the
    node label value of the GPU type; ``resource``: the extended resource ('' = by type name)."""
    out: dict = {"image": profile.image, "default_url": profile.default_url}
    cpu_limit, mem_limit = cap(profile.cpu_limit, cpu_cap), cap(profile.mem_limit, mem_cap)
    if cpu_limit is not None:
        out["cpu_limit"] = float(cpu_limit)
    if profile.cpu_guarantee is not None:
        out["cpu_guarantee"] = float(cap(profile.cpu_guarantee, cpu_limit))
    if mem_limit is not None:
        out["mem_limit"] = int(mem_limit)
    if profile.mem_guarantee is not None:
        out["mem_guarantee"] = int(cap(profile.mem_guarantee, mem_limit))
    selector = dict(settings.node_selector)
    if count:
        resource = resource or resource_for(gpu_type)
        out["extra_resource_limits"] = {resource: str(count)}
        out["extra_resource_guarantees"] = {resource: str(count)}
        selector.update(settings.gpu_node_selector)
        if product:
            selector[PRODUCT] = product
        out["tolerations"] = [dict(t) for t in settings.gpu_tolerations]
    else:
        out["extra_resource_limits"] = {}
        out["extra_resource_guarantees"] = {}
        out["tolerations"] = []
    out["node_selector"] = selector
    return out


def option_label(gpu_type: str, count: int) -> str:
    """'No GPU', '2 x A100-80GB', '1 x A100-80GB:1g.10gb (MIG slice)'."""
    if not count:
        return "No GPU"
    kind = kind_of(gpu_type)
    extra = {"mig": " (MIG slice)", "shared": " (shared GPU)"}.get(kind, "")
    return f"{count} x {gpu_type}{extra}"
