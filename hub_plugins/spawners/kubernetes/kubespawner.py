"""KubeSpawner with the parts a shared GPU cluster needs and gpulab's GPU logic does not cover.

- ``user_options`` are applied by gpulab only (after the quota check): kubespawner's own
  profile handling is bypassed, so a request cannot pick a ``profileList`` option that grants
  GPUs outside the user's quota.
- While the pod waits to be scheduled, the progress page shows its queue position and the
  scheduler's reason (``queue.py``) instead of a silent wait until ``start_timeout``.
"""

from __future__ import annotations

import asyncio

from kubespawner import KubeSpawner
from traitlets import Dict, Float, List

from .queue import queue_message


class QueueAwareKubeSpawner(KubeSpawner):
    gpu_types = List(
        Dict(), config=True,
        help="""The cluster's GPU types, [{name, product}]: gpulab type name and the GPU Operator's
        nvidia.com/gpu.product label value (used when no node currently offers the type).""",
    )
    gpu_node_selector = Dict(config=True, help="Further node labels for pods with GPUs.")
    gpu_tolerations = List(
        Dict(), config=True, help="Tolerations for pods with GPUs (GPU nodes are usually tainted)."
    )
    queue_check_interval = Float(2.0, config=True, help="Seconds between checks of a waiting pod's queue position.")

    async def load_user_options(self):
        # gpulab validated user_options and applied them in gpulab_apply (quota first)
        return

    def gpulab_watched_pods(self) -> tuple[dict | None, list[dict]]:
        """(our pod, every user pod the hub watches in its namespace) from the pod reflector."""
        reflector = self.pod_reflector
        if reflector is None:
            return None, []
        pods = dict(reflector.pods)
        return pods.get(f"{self.namespace}/{self.pod_name}"), list(pods.values())

    async def gpulab_watch_queue(self) -> None:
        shown = None
        while True:
            await asyncio.sleep(self.queue_check_interval)
            pod, pods = self.gpulab_watched_pods()
            message = queue_message(pod, pods)
            if message and message != shown:
                shown = message
                self.gpulab_event(message, progress=30)

    async def start(self):
        started = super().start()  # KubeSpawner.start returns the future of _start
        watcher = asyncio.ensure_future(self.gpulab_watch_queue())
        try:
            return await started
        finally:
            watcher.cancel()
