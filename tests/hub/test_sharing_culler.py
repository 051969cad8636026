"""Idle sharers are found per process (a real hub, real servers and kernels, the culler's own
round; only NVML is the stand-in): on one shared GPU a busy sharer does not keep its idle
neighbour alive, each gets its own efficiency, and culling the idle one leaves the busy one,
its kernel and its share untouched."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
import requests

from hub_plugins.gpu.metrics import NVMLReader
from hub_plugins.settings.live import LiveSettings
from services.base import HubAPI, core_from_live
from services.culler.loop import Culler
from tests.support.fakenvml import FakeNVML
from tests.support.polling import gpulab_rows, wait_for

pytestmark = [pytest.mark.hub, pytest.mark.slow]

SHARED = {"gpu_type": "H200-141GB:shared", "gpus": 1, "profile": "minimal"}


def kernel_pid(hub, user: str) -> int:
    r = requests.post(f"{hub.url}/user/{user}/api/kernels", headers={"Authorization": f"token {hub.user_token(user)}"},
                      json={"name": "python3"}, timeout=60)
    assert r.status_code == 201, r.text
    marker = f"kernel-{r.json()['id']}.json".encode()
    found = []

    def look():
        for p in Path("/proc").iterdir():
            try:
                if p.name.isdigit() and marker in (p / "cmdline").read_bytes():
                    found.append(int(p.name))
                    return True
            except OSError:
                continue
        return False

    wait_for(look, timeout=30, what=f"{user}'s kernel")
    return found[0]


async def test_a_busy_sharer_does_not_keep_an_idle_one_alive(hub_factory):
    hub = hub_factory(
        inventory="1xH200-141GB",
        quotas={"default": {"max_gpus": 1}},
        extra={"gpus": {"sharing": [{"gpus": "H200-141GB", "shares": 2}]},
               # the hub's own culler is off: this test runs the culler's round itself, on NVML
               "culler": {"enabled": False, "metrics": {"source": "nvml"}, "warn_at": [],
                          "policies": [{"name": "gpu", "match": {"gpu": True}, "gpu_idle_minutes": 0.03,
                                        "inactive_minutes": None, "startup_grace_minutes": 0}]}},
    )
    hub.create_users("busy", "idle")
    busy = await asyncio.to_thread(hub.start_server, "busy", SHARED)
    idle = await asyncio.to_thread(hub.start_server, "idle", SHARED)
    assert busy["state"]["gpus"] == idle["state"]["gpus"] == ["0"]
    k_busy, k_idle = await asyncio.to_thread(kernel_pid, hub, "busy"), await asyncio.to_thread(kernel_pid, hub, "idle")
    # the GPU as NVML would show it: both kernels hold a context; only busy's launches kernels,
    # so the GPU as a whole is busy (the old, per-GPU reading kept both servers alive)
    nvml = FakeNVML([{"name": "NVIDIA H200", "uuid": "GPU-0", "memory_mib": 143771, "util": 45, "power_w": 500,
                      "processes": [{"pid": k_busy, "memory_mib": 9000, "sm": 45},
                                    {"pid": k_idle, "memory_mib": 700, "sm": None}]}])
    live = LiveSettings(hub.config_path)  # as the culler service reads gpulab.yaml
    culler = Culler(live, core_from_live(live), HubAPI(f"{hub.url}/hub/api", hub.token))
    culler.reader = NVMLReader(nvml)  # the hardware edge; /proc and everything else are real

    await culler.run_once()
    await asyncio.sleep(2.5)  # past the 1.8 s idle limit
    actions = await culler.run_once()
    assert [(a.kind, a.user, a.reason) for a in actions] == [("cull", "idle", "gpu_idle")]
    await asyncio.to_thread(wait_for, lambda: hub.server_model("idle") is None, 60, "the idle sharer to stop")

    # the busy sharer, its kernel and its share are untouched
    assert hub.server_model("busy")["ready"]
    os.kill(k_busy, 0)
    assert [(a["user_name"], a["device_key"]) for a in hub.allocations()] == [("busy", busy["state"]["gpu_devices"][0])]
    usage = {r["user_name"]: r for r in gpulab_rows(hub, "gpulab_usage")}
    assert usage["idle"]["stop_reason"] == "culled"
    # efficiency per server: busy used 45 % of the GPU on a half share (90 % of it), idle none
    assert usage["busy"]["util_sum"] / usage["busy"]["util_samples"] == pytest.approx(90)
    assert usage["idle"]["util_sum"] == 0 and usage["idle"]["util_samples"] == 2
    # and busy stays through more rounds; its efficiency is exported per server
    time.sleep(1)
    assert await culler.run_once() == []
    await asyncio.to_thread(hub.wait_service, "billing", "metrics")
    m = (await asyncio.to_thread(hub.service, "billing", "metrics")).text
    assert 'gpulab_server_gpu_efficiency_percent{gpu_type="H200-141GB:shared",server="",user="busy"} 90.0' in m
