"""Kubernetes nodes and pods -> a gpulab :class:`Inventory` (pure).

Input: the JSON of ``GET /api/v1/nodes`` and ``GET /api/v1/pods`` (all namespaces), as the API
documents them. GPU facts come from what the NVIDIA GPU Operator publishes:

- allocatable ``nvidia.com/gpu`` (whole GPUs; with time-slicing, ``nvidia.com/gpu.replicas``
  shares per GPU) and, under the ``mixed`` MIG strategy, ``nvidia.com/mig-<profile>`` per MIG
  profile (``nvidia.com/mig-1g.10gb: 7``);
- the GPU Feature Discovery labels ``nvidia.com/gpu.product`` (``NVIDIA-A100-SXM4-80GB``, with
  ``-MIG-<profile>`` under the ``single`` strategy, ``-SHARED`` with time-slicing),
  ``nvidia.com/gpu.memory`` (MiB) and ``nvidia.com/mig.config.state``.

Re-reading both every few seconds keeps the form right after a MIG repartitioning: the new
profiles appear in allocatable, and a node whose MIG manager is still at work
(``mig.config.state`` pending/rebooting) is left out until it is done. Cordoned
(``spec.unschedulable``), not-Ready nodes and nodes with a taint our GPU pods do not tolerate are
left out too. GPUs requested by running or pending-but-bound pods (anyone's) are busy.
"""

from __future__ import annotations

import re
from fractions import Fraction

from ...gpu.devices import MIG_SLICES, Device, Inventory, family_of, mig_memory_mib, mig_slices, valid_type_name

GPU = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"
PRODUCT = "nvidia.com/gpu.product"
MEMORY = "nvidia.com/gpu.memory"
REPLICAS = "nvidia.com/gpu.replicas"
MIG_STATE = "nvidia.com/mig.config.state"
_SUFFIX = re.compile(r"-(MIG-\d+g\.\d+gb|SHARED)$", re.IGNORECASE)
_SIZE = re.compile(r"-(\d+)GB$", re.IGNORECASE)
_SINGLE_MIG = re.compile(r"-MIG-(\d+g\.\d+gb)$", re.IGNORECASE)


def base_product(label: str) -> str:
    """'NVIDIA-A100-SXM4-80GB-MIG-1g.10gb' / '...-SHARED' -> 'NVIDIA-A100-SXM4-80GB'."""
    return _SUFFIX.sub("", label or "")


def auto_name(product: str, memory_mib: int) -> str:
    """A gpulab type name from a product label: 'NVIDIA-A100-SXM4-80GB' -> 'A100-80GB',
    'NVIDIA-H100-80GB-HBM3' -> 'H100-80GB', 'Tesla-T4' (15360 MiB) -> 'T4-15GB'."""
    words = [w for w in product.split("-") if w and w.upper() not in ("NVIDIA", "TESLA", "GEFORCE")]
    if not words:
        return "GPU"
    family = words[0]
    size = next((m.group(1) for w in words for m in [re.fullmatch(r"(\d+)GB", w, re.IGNORECASE)] if m), "")
    if not size and memory_mib:
        size = str(round(memory_mib / 1024))
    return f"{family}-{size}GB" if size else family


def type_name(product: str, memory_mib: int, names: dict[str, str]) -> str:
    base = base_product(product)
    return names.get(base) or names.get(product) or auto_name(base, memory_mib)


def resource_of(device: Device) -> str:
    """The extended resource a device of this inventory is requested by (from its key: under
    the 'single' MIG strategy a MIG slice is an ``nvidia.com/gpu``)."""
    return "/".join(device.key.split("/")[2:-1])  # k8s/<node>/<resource with a '/'>/<i>


def resource_for(gpu_type: str) -> str:
    """The extended resource a pod requests for one device of ``gpu_type`` (no inventory at
    hand: the 'mixed' MIG strategy, which the Helm values assume)."""
    _, _, sub = gpu_type.partition(":")
    if sub and sub != "shared":
        return f"{MIG_PREFIX}{sub}"
    return GPU


def _quantity(value) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


def tolerated(taint: dict, tolerations: list[dict]) -> bool:
    """Kubernetes' matching rule for one taint (PreferNoSchedule never blocks)."""
    if taint.get("effect") == "PreferNoSchedule":
        return True
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator", "Equal") == "Exists":
            if not t.get("key") or t["key"] == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and t.get("value", "") == taint.get("value", ""):
            return True
    return False


def unusable_because(node: dict, tolerations: list[dict], selector: dict[str, str]) -> str:
    """Why a node cannot take our GPU pods ('' = it can)."""
    spec, status = node.get("spec") or {}, node.get("status") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    if spec.get("unschedulable"):
        return "cordoned"
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    if ready and ready[0].get("status") != "True":
        return "not ready"
    if labels.get(MIG_STATE) in ("pending", "rebooting"):
        return "MIG repartitioning in progress"
    if labels.get(MIG_STATE) == "failed":
        return "MIG configuration failed"
    for key, value in selector.items():
        if labels.get(key) != value:
            return f"no label {key}={value}"
    for taint in spec.get("taints") or []:
        if not tolerated(taint, tolerations):
            return f"taint {taint.get('key')}={taint.get('value', '')}:{taint.get('effect')}"
    return ""


def pod_requests(pod: dict) -> dict[str, int]:
    """Extended resources a pod holds: the sum over its containers, or the largest init
    container's if more (Kubernetes' effective request). Extended resources must have
    request == limit, so either is read."""
    spec = pod.get("spec") or {}

    def of(container) -> dict[str, int]:
        res = container.get("resources") or {}
        merged = {**(res.get("requests") or {}), **(res.get("limits") or {})}
        return {k: _quantity(v) for k, v in merged.items() if k == GPU or k.startswith(MIG_PREFIX)}

    total: dict[str, int] = {}
    for c in spec.get("containers") or []:
        for k, v in of(c).items():
            total[k] = total.get(k, 0) + v
    for c in spec.get("initContainers") or []:
        for k, v in of(c).items():
            total[k] = max(total.get(k, 0), v)
    return total


def busy_by_node(pods: list[dict]) -> dict[str, dict[str, int]]:
    """node -> resource -> devices held by pods bound to it and not finished."""
    out: dict[str, dict[str, int]] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if not node or phase in ("Succeeded", "Failed"):
            continue
        for k, v in pod_requests(pod).items():
            out.setdefault(node, {})[k] = out.setdefault(node, {}).get(k, 0) + v
    return out


def _items(doc) -> list[dict]:
    return doc.get("items", []) if isinstance(doc, dict) else list(doc or [])


def inventory_from_cluster(nodes_doc, pods_doc, *, names: dict[str, str] | None = None,
                           tolerations: list[dict] | None = None,
                           selector: dict[str, str] | None = None) -> Inventory:
    """The GPUs of the nodes our GPU pods can use; ``names``: product label -> gpulab type."""
    names, tolerations, selector = names or {}, tolerations or [], selector or {}
    busy = busy_by_node(_items(pods_doc))
    devices: list[Device] = []
    taken: set[str] = set()
    left_out: list[str] = []
    for node in _items(nodes_doc):
        meta = node.get("metadata") or {}
        name, labels = meta.get("name", ""), meta.get("labels") or {}
        alloc = (node.get("status") or {}).get("allocatable") or {}
        offered = {k: _quantity(v) for k, v in alloc.items() if (k == GPU or k.startswith(MIG_PREFIX)) and _quantity(v)}
        if not offered:
            continue
        why = unusable_because(node, tolerations, selector)
        if why:
            left_out.append(f"{name} ({why})")
            continue
        product = labels.get(PRODUCT, "")
        base = type_name(product, _quantity(labels.get(MEMORY)), names)
        replicas = max(1, _quantity(labels.get(REPLICAS)) or 1)
        index = 0
        for res, count in sorted(offered.items()):
            single_mig = _SINGLE_MIG.search(product) if res == GPU else None
            if res == GPU and not single_mig:
                shared = replicas > 1
                gpu_type = f"{base}:shared" if shared else base
                weight, mig = Fraction(1, replicas), ""
                size = _SIZE.search(base)
                memory = int(size.group(1)) * 1024 if size else _quantity(labels.get(MEMORY))
            else:  # MIG: 'mixed' strategy (a resource per profile) or 'single' (in the product label)
                mig = single_mig.group(1).lower() if single_mig else res[len(MIG_PREFIX):]
                gpu_type = f"{base}:{mig}"
                if not valid_type_name(gpu_type):
                    left_out.append(f"{name} resource {res}")
                    continue
                weight = Fraction(mig_slices(mig), MIG_SLICES.get(family_of(base).upper(), 7))
                memory = mig_memory_mib(mig)
            used = busy.get(name, {}).get(res, 0)
            for i in range(count):
                key = f"k8s/{name}/{res}/{i}"
                devices.append(Device(host=name, index=index, key=key, gpu_type=gpu_type, model=product,
                                      memory_mib=memory, weight=weight, mig_profile=mig, addressable=False))
                if i < used:
                    taken.add(key)
                index += 1
    note = "" if devices else "no schedulable Kubernetes node offers GPUs"
    if left_out:
        note = (note + "; " if note else "") + "left out: " + ", ".join(left_out)
    return Inventory(tuple(devices), source="kubernetes", note=note, external_busy=frozenset(taken))
