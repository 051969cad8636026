"""NVIDIA MPS for the sharers of a shared GPU on the Docker backend, as plain data (pure).

With ``docker.mps.enabled``, each shared GPU in use gets one MPS control daemon, in a container
of its own (``<prefix>-mps-<GPU>``) that holds the GPU, owns a private IPC namespace
(``ipc_mode: shareable``) and a named volume for MPS' pipe directory. Every sharer's container
joins that IPC namespace (``ipc_mode: container:<daemon>``: MPS clients and server talk through
it and ``/dev/shm``), mounts the pipe volume at ``/tmp/nvidia-mps`` and is told its part of the
GPU: ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` (its share of the SMs) and
``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` (its share of the memory; the driver enforces it, unlike
frameworks' caps). The daemon starts with the first sharer and goes with the last
(``mpsd.py``).

MPS' known limits, and what gpulab does about each:

- **One Unix user per MPS server**: the control daemon runs one server at a time, for one UID; a
  client of another UID waits until every client of the first has gone. Every sharer of an MPS
  GPU (and the daemon) runs as one UID, ``docker.mps.uid`` (gpulab's images' ``jovyan``, 1000).
- **A fatal GPU fault in one client reaches the others**: a program that crashes the GPU (an
  illegal memory access, an Xid error) can end the CUDA work of every sharer of that GPU, whose
  kernels must then be restarted. The progress page says so to every MPS sharer; a daemon found
  dead is replaced before the next sharer starts.
- **NVML attributes the clients' work to the MPS server**: per-server utilisation cannot be read
  under MPS; gpulab then counts a sharer with a CUDA context as unknown (never idle) and one
  without as idle (``gpu/attribution.py``), and reads clients' memory from NVML's MPS process
  list.
- Sharers share ``/dev/shm`` (the daemon's IPC namespace): files one puts there are visible to
  the others, all running as the same UID. Turn MPS on only where sharers may see each other's
  shared-memory files; time-slicing (the default) keeps each container's own.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace

from docker.types import DeviceRequest

from .spec import LABEL_HUB, LABEL_KIND, check_prefix

PIPE_DIR = "/tmp/nvidia-mps"  # MPS' default CUDA_MPS_PIPE_DIRECTORY
LOG_DIR = "/tmp/nvidia-mps-log"
LABEL_MPS = "gpulab.mps"  # on the daemon and on its sharers: the GPU's UUID
LABEL_PIPE = "gpulab.mps.pipe"  # on the daemon: its pipe volume (new with each daemon)
CONTROL_COMMAND = ("nvidia-cuda-mps-control", "-f")  # the driver's daemon, in the foreground
FAULT_NOTE = ("This GPU is shared under NVIDIA MPS: a program that crashes the GPU ends the CUDA work of "
              "every server sharing it (restart your kernel if that happens).")


@dataclass(frozen=True)
class MPSSettings:
    """The admin's ``docker.mps`` section."""

    enabled: bool = False
    uid: int = 1000
    image: str = ""  # the daemon's image ('' = the first sharer's)
    control_command: tuple[str, ...] = CONTROL_COMMAND
    shm_per_share: int = 2**30  # bytes of /dev/shm per share (the sharers' DataLoaders use it too)


@dataclass(frozen=True)
class Daemon:
    """One shared GPU's MPS control daemon."""

    name: str
    volume: str  # '' until the daemon runs: each daemon gets a fresh pipe directory
    gpu_uuid: str
    device_id: str  # what the device request names (GPU index, as sharers get it)
    shares: int
    labels: dict[str, str] = field(default_factory=dict)


def _short(uuid: str) -> str:
    """A name part from a GPU UUID: its hex, shortened with a hash if long."""
    text = re.sub(r"[^a-z0-9]", "", uuid.lower()) or "gpu"
    return text if len(text) <= 24 else f"{text[:12]}{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def daemon_for(prefix: str, hub_id: str, gpu_uuid: str, device_id: str, shares: int) -> Daemon:
    name = f"{check_prefix(prefix)}-mps-{_short(gpu_uuid)}"
    return Daemon(name=name, volume="", gpu_uuid=gpu_uuid, device_id=device_id, shares=shares,
                  labels={LABEL_HUB: hub_id, LABEL_KIND: "mps", LABEL_MPS: gpu_uuid})


def with_pipe(d: Daemon, token: str) -> Daemon:
    """``d`` with a pipe volume of its own (``token``: new for each daemon started): sharers of a
    daemon that died keep the old one, and a new daemon never meets a dead one's pipes."""
    volume = f"{d.name}-pipe-{token}"
    return replace(d, volume=volume, labels={**d.labels, LABEL_PIPE: volume})


def pipe_volume(d: Daemon, s: MPSSettings) -> dict:
    """docker-py ``create_volume`` arguments of the pipe directory: a small tmpfs owned by the
    sharers' UID, mounted by the daemon and every sharer (one mount, shared, as any volume)."""
    return {"name": d.volume, "driver": "local", "labels": dict(d.labels),
            "driver_opts": {"type": "tmpfs", "device": "tmpfs", "o": f"uid={s.uid},gid={s.uid},mode=0700,size=16m"}}


def daemon_create(d: Daemon, s: MPSSettings, image: str) -> dict:
    """docker-py ``create_container`` arguments of the daemon (host config as a dict)."""
    return {
        "image": s.image or image,
        "name": d.name,
        "command": list(s.control_command),
        "user": str(s.uid),
        "environment": {
            "NVIDIA_VISIBLE_DEVICES": d.device_id,
            "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
            "CUDA_MPS_PIPE_DIRECTORY": PIPE_DIR,
            "CUDA_MPS_LOG_DIRECTORY": LOG_DIR,
        },
        "labels": dict(d.labels),
        "volumes": [PIPE_DIR],
        "host_config": {
            "ipc_mode": "shareable",
            "network_mode": "none",
            "shm_size": s.shm_per_share * d.shares,
            "binds": {d.volume: {"bind": PIPE_DIR, "mode": "rw"}},
            "device_requests": [DeviceRequest(device_ids=[d.device_id], capabilities=[["gpu"]])],
            "security_opt": ["no-new-privileges:true"],
            "auto_remove": False,
        },
    }


def client_env(thread_percentage: int, memory_mib: int) -> dict[str, str]:
    """A sharer's MPS variables. The container sees only its GPU, as device 0."""
    env = {"CUDA_MPS_PIPE_DIRECTORY": PIPE_DIR, "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": str(thread_percentage)}
    if memory_mib:
        env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = f"0={memory_mib}M"
    return env


def client_host_config(d: Daemon, host: dict) -> dict:
    """A sharer's host config joined to its daemon: its IPC namespace (which brings its
    /dev/shm: a size of its own cannot be set then) and the pipe directory."""
    out = {k: v for k, v in host.items() if k not in ("shm_size", "ipc_mode")}
    out["ipc_mode"] = f"container:{d.name}"
    out["binds"] = {**host.get("binds", {}), d.volume: {"bind": PIPE_DIR, "mode": "rw"}}
    return out
