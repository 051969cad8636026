"""What a gpulab container looks like, as plain data (no Docker calls): names, labels, GPU
device requests, resource limits and the create/host-config arguments. Tested with tables.

Everything derived from user input (hub user and server names) goes through
:func:`safe_name` before it becomes part of a Docker object name, and only ever into label
*values* or the environment otherwise, never into a format string or a command line.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from typing import Any

from docker.types import DeviceRequest
from escapism import escape

from ...spawn.spec import ServerSpec

# Labels on every container and home volume gpulab creates (the contract: gpulab.user,
# gpulab.server, gpulab.gpus). gpulab.hub tells apart the hubs that share one engine.
LABEL_HUB = "gpulab.hub"
LABEL_USER = "gpulab.user"
LABEL_USER_ID = "gpulab.user_id"
LABEL_SERVER = "gpulab.server"
LABEL_GPUS = "gpulab.gpus"
LABEL_GPU_TYPE = "gpulab.gpu_type"
LABEL_PROFILE = "gpulab.profile"
LABEL_SPAWN_ID = "gpulab.spawn_id"
LABEL_KIND = "gpulab.kind"  # "server" or "home"

PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
DOCKER_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")  # what dockerd accepts
MAX_NAME = 120
_SAFE = set(string.ascii_lowercase + string.digits)


class SpecError(ValueError):
    pass


def safe_name(text: str) -> str:
    """A DNS-label-safe, collision-free encoding of any string: lowercase letters and digits
    stay, everything else (uppercase, '-', '.', unicode, '{', ...) becomes '-xx' (its bytes in
    hex). The same scheme as DockerSpawner's default escaping, so names stay familiar."""
    return escape(text, _SAFE, escape_char="-").lower()


def _fit(name: str) -> str:
    """Docker names have no hard limit, but hostnames, logs and `docker ps` do: keep them short
    and still unique by replacing the tail with a hash of the whole name."""
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{name[:MAX_NAME - 13]}-{digest}"


def check_prefix(prefix: str) -> str:
    if not PREFIX_RE.match(prefix):
        raise SpecError(
            f"docker.name_prefix: {prefix!r} must be 1-32 lowercase letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return prefix


def container_name(prefix: str, user: str, server: str = "") -> str:
    """``gpulab-alice`` or ``gpulab-alice--exp1`` ('--' cannot occur inside an escaped name)."""
    name = f"{check_prefix(prefix)}-{safe_name(user)}"
    if server:
        name += f"--{safe_name(server)}"
    name = _fit(name)
    assert DOCKER_NAME_RE.match(name), name
    return name


def volume_name(prefix: str, user: str) -> str:
    """The user's home volume (one per user, shared by their named servers)."""
    name = _fit(f"{check_prefix(prefix)}-home-{safe_name(user)}")
    assert DOCKER_NAME_RE.match(name), name
    return name


def labels(hub_id: str, user: str, user_id: int, server: str, profile: str = "",
           gpus: list[str] | tuple[str, ...] = (), gpu_type: str = "", spawn_id: str = "") -> dict[str, str]:
    return {
        LABEL_HUB: hub_id,
        LABEL_KIND: "server",
        LABEL_USER: user,
        LABEL_USER_ID: str(user_id),
        LABEL_SERVER: server,
        LABEL_PROFILE: profile,
        LABEL_GPUS: ",".join(gpus),
        LABEL_GPU_TYPE: gpu_type,
        LABEL_SPAWN_ID: spawn_id,
    }


def volume_labels(hub_id: str, user: str, user_id: int) -> dict[str, str]:
    return {LABEL_HUB: hub_id, LABEL_KIND: "home", LABEL_USER: user, LABEL_USER_ID: str(user_id)}


def device_requests(visible_ids: list[str] | tuple[str, ...]) -> list[DeviceRequest]:
    """One Docker device request carrying exactly the allocated devices (GPU indices or MIG
    UUIDs), as ``docker run --gpus '"device=1,3"'`` would send. None for a CPU-only server."""
    if not visible_ids:
        return []
    return [DeviceRequest(device_ids=list(visible_ids), capabilities=[["gpu"]])]


def device_env(visible_ids: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Inside a container the allocated GPUs are the only ones and are renumbered from 0, so
    CUDA_VISIBLE_DEVICES must not carry host indices. NVIDIA_VISIBLE_DEVICES names them for the
    NVIDIA runtime; 'void' keeps a CPU-only server from seeing any GPU even where the NVIDIA
    runtime is the default and the image says NVIDIA_VISIBLE_DEVICES=all (CUDA images do)."""
    if not visible_ids:
        return {"NVIDIA_VISIBLE_DEVICES": "void", "CUDA_VISIBLE_DEVICES": ""}
    return {"NVIDIA_VISIBLE_DEVICES": ",".join(visible_ids), "NVIDIA_DRIVER_CAPABILITIES": "compute,utility"}


@dataclass(frozen=True)
class Resources:
    cpu_limit: float | None = None
    mem_limit: int | None = None  # bytes
    cpu_guarantee: float | None = None
    mem_guarantee: int | None = None
    shm_size: int | None = None

    def host_config(self) -> dict[str, Any]:
        """docker-py ``create_host_config`` arguments."""
        out: dict[str, Any] = {}
        if self.cpu_limit:
            out["nano_cpus"] = int(self.cpu_limit * 1e9)
        if self.mem_limit:
            out["mem_limit"] = self.mem_limit
            out["memswap_limit"] = self.mem_limit  # no swap beyond the limit
        if self.cpu_guarantee:
            out["cpu_shares"] = max(2, int(self.cpu_guarantee * 1024))
        if self.mem_guarantee:
            out["mem_reservation"] = min(self.mem_guarantee, self.mem_limit or self.mem_guarantee)
        if self.shm_size:
            out["shm_size"] = self.shm_size
        return out


GiB = 2**30


def default_shm(mem_limit: int | None) -> int:
    """/dev/shm (PyTorch DataLoader workers, NCCL): Docker's 64 MiB breaks multi-worker loading.
    Half the memory limit (it counts against it), at most 8 GiB; 1 GiB without a limit."""
    if not mem_limit:
        return GiB
    return max(64 * 2**20, min(mem_limit // 2, 8 * GiB))


def resources(s: ServerSpec, shm_size: int | None = None) -> Resources:
    """CPU and memory of the server's resolved spec (the profile's, capped by the user's quota;
    guarantees never above the limits)."""
    # Docker reserves what it limits when the profile names no guarantee
    return Resources(cpu_limit=s.cpu_limit, mem_limit=s.mem_limit,
                     cpu_guarantee=s.cpu_limit if s.cpu_guarantee is None else s.cpu_guarantee,
                     mem_guarantee=s.mem_limit if s.mem_guarantee is None else s.mem_guarantee,
                     shm_size=shm_size or default_shm(s.mem_limit))


def host_config(*, volume: str, home: str, gpus, res: Resources, extra_binds: dict | None = None,
                no_new_privileges: bool = True, pids_limit: int | None = None) -> dict[str, Any]:
    """Host networking (the server listens on 127.0.0.1:<port>) and the home volume. Not
    auto-removed: the spawner removes it when the server stops (the allocation changes every
    start, and a container's devices cannot), after it could read why a failed start failed."""
    binds = dict(extra_binds or {})
    binds[volume] = {"bind": home, "mode": "rw"}
    hc: dict[str, Any] = {
        "network_mode": "host",
        "auto_remove": False,
        "binds": binds,
        **res.host_config(),
    }
    reqs = device_requests(gpus)
    if reqs:
        hc["device_requests"] = reqs
    if no_new_privileges:
        hc["security_opt"] = ["no-new-privileges:true"]
    if pids_limit:
        hc["pids_limit"] = pids_limit
    return hc


def merge(base: dict, extra: dict) -> dict:
    """``extra`` (admin config) merged into ``base``; nested dicts merged, other values replaced."""
    out = dict(base)
    for k, v in (extra or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out
