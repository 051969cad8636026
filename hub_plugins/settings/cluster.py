"""``update_*`` functions for the cluster backends (``backend: slurm`` / ``backend: kubernetes``).

Both switch the core to engine placement (the scheduler picks devices and queues; gpulab checks
quotas and accounts) and install a capacity reader, so the form shows the cluster's real free
GPUs. ``gpus.inventory`` other than ``auto`` keeps a simulated inventory instead (demos, tests).
"""

from __future__ import annotations

from traitlets.config import Config

from ..spawners.kubernetes.capacity import KubeCapacity
from ..spawners.slurm.capacity import SlurmCapacity
from ..spawners.slurm.sbatch import SbatchError, check_extra_option
from .errors import ConfigError


def update_slurm(c: Config, cfg: dict) -> None:
    if cfg["backend"] != "slurm":
        return
    # imported for its side effect, and only here: it registers /hub/api/batchspawner (where jobs
    # report their port) in every hub that imports it
    import batchspawner  # noqa: F401

    s = cfg["slurm"]
    for opt in s["extra_options"]:
        try:
            check_extra_option(opt)
        except SbatchError as e:
            raise ConfigError(str(e)) from None
    c.GPULab.placement = "engine"
    if cfg["gpus"]["inventory"] == "auto":
        c.GPULab.capacity_reader = SlurmCapacity(
            s["gpu_partition"] or s["partition"] or "", s["gres_types"], s["untyped_gpu_type"], s["refresh_seconds"])
    sp = c.SlurmGPUSpawner
    for key in ("partition", "gpu_partition", "account", "qos"):
        setattr(sp, key, s[key] or "")
    sp.time_limit = s["time_limit"]
    sp.gres_types = s["gres_types"]
    sp.untyped_gpu_type = s["untyped_gpu_type"]
    sp.extra_options = s["extra_options"]
    sp.prologue = s["prologue"]
    sp.system_user_prefix = s["system_user_prefix"]
    sp.create_users = s["create_users"]
    sp.home_root = s["home_root"]
    sp.listen_ip = s["listen_ip"]
    sp.start_timeout = s["start_timeout"]
    if s["hub_connect_url"]:
        sp.hub_connect_url = s["hub_connect_url"]


def update_kubernetes(c: Config, cfg: dict) -> None:
    if cfg["backend"] != "kubernetes":
        return
    k = cfg["kubernetes"]
    c.GPULab.placement = "engine"
    if cfg["gpus"]["inventory"] == "auto":
        c.GPULab.capacity_reader = KubeCapacity(
            {t["product"]: t["name"] for t in k["gpu_types"] if ":" not in t["name"]},
            {**k["node_selector"], **k["gpu_node_selector"]}, k["refresh_seconds"], k["gpu_tolerations"])
    sp = c.KubeGPUSpawner
    if k["namespace"]:
        sp.namespace = k["namespace"]
    sp.gpu_types = k["gpu_types"]
    sp.node_selector = dict(k["node_selector"])
    sp.gpu_node_selector = dict(k["gpu_node_selector"])
    sp.gpu_tolerations = list(k["gpu_tolerations"])
    sp.start_timeout = k["start_timeout"]
    # one home volume per user (shared by their named servers), as z2jh's dynamic storage
    st = k["storage"]
    sp.storage_pvc_ensure = True
    sp.pvc_name_template = PVC_NAME
    sp.storage_capacity = st["capacity"]
    if st["storage_class"]:
        sp.storage_class = st["storage_class"]
    sp.volumes = [{"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}]
    sp.volume_mounts = [{"name": "home", "mountPath": st["home"]}]


PVC_NAME = "claim-{username}"
