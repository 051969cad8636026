"""The benchmark's baseline: stock DockerSpawner plus the few lines host networking needs
(the recipe's: pick the port, keep it in the state, report 127.0.0.1:port). Engine and image come
from GPULAB_BENCH_DOCKER_HOST / GPULAB_BENCH_IMAGE (set by docker_spawn.py)."""

import os

from dockerspawner import DockerSpawner
from jupyterhub.utils import random_port
from traitlets import default


class StockHostDockerSpawner(DockerSpawner):
    @default("client_kwargs")
    def _default_client_kwargs(self):
        return {"base_url": os.environ["GPULAB_BENCH_DOCKER_HOST"]}

    @default("image")
    def _default_image(self):
        return os.environ["GPULAB_BENCH_IMAGE"]

    @default("network_name")
    def _default_network(self):
        return "host"

    @default("use_internal_ip")
    def _default_use_internal_ip(self):
        return True  # no port bindings: meaningless with host networking

    @default("ip")
    def _default_ip(self):
        return "127.0.0.1"

    @default("remove")
    def _default_remove(self):
        return True

    @default("pull_policy")
    def _default_pull_policy(self):
        return "never"

    @default("name_template")
    def _default_name_template(self):
        return "stock-{username}"

    async def start(self):
        self.port = random_port()
        return await super().start()

    async def get_ip_and_port(self):
        return "127.0.0.1", self.port

    def get_state(self):
        state = super().get_state()
        state["port"] = self.port
        return state

    def load_state(self, state):
        super().load_state(state)
        if "port" in state:
            self.port = state["port"]
