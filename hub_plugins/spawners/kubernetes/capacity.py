"""``c.GPULab.capacity_reader`` for Kubernetes: nodes and pods read with kubernetes_asyncio
every few seconds (see ``cluster/refresh.py``), turned into an inventory by ``nodes.py``.

It runs in the reader's own thread with its own event loop and API client (the hub's loop is
never blocked). In the hub pod it uses the pod's service account, which needs cluster-wide
``list`` on nodes and pods (``helm-values/capacity-rbac.yaml``); elsewhere ``$KUBECONFIG``.
"""

from __future__ import annotations

import asyncio
import json

from ...cluster.refresh import PeriodicInventory
from ...gpu.devices import Inventory
from .nodes import inventory_from_cluster

# Pods that hold resources: not finished (the API filters; we re-check phases anyway)
ACTIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"


class KubeCapacity(PeriodicInventory):
    def __init__(self, names: dict[str, str] | None = None, selector: dict[str, str] | None = None,
                 interval: float = 15.0, tolerations: list[dict] | None = None, timeout: float = 20.0,
                 kubeconfig: str | None = None):
        self.names = dict(names or {})
        self.selector = dict(selector or {})
        self.tolerations = list(tolerations or [])
        self.timeout = timeout
        self.kubeconfig = kubeconfig  # None: in-cluster, else $KUBECONFIG / ~/.kube/config
        self._configuration = None
        super().__init__(self._fetch, interval, "kubernetes")

    def _fetch(self) -> Inventory:
        nodes, pods = asyncio.run(self._read())
        return inventory_from_cluster(nodes, pods, names=self.names, tolerations=self.tolerations,
                                      selector=self.selector)

    async def _config(self):
        from kubernetes_asyncio import client, config
        from kubernetes_asyncio.config import ConfigException

        if self._configuration is None:
            cfg = client.Configuration()
            try:
                if self.kubeconfig:
                    raise ConfigException("a kube config file was given")
                config.load_incluster_config(client_configuration=cfg)
            except ConfigException:
                await config.load_kube_config(config_file=self.kubeconfig, client_configuration=cfg)
            self._configuration = cfg
        return self._configuration

    async def _read(self) -> tuple[dict, dict]:
        from kubernetes_asyncio import client

        async with client.ApiClient(await self._config()) as api:
            v1 = client.CoreV1Api(api)

            async def raw(call, **kw) -> dict:
                resp = await call(_preload_content=False, _request_timeout=self.timeout, **kw)
                try:
                    return json.loads(await resp.read())
                finally:
                    resp.release()

            return await asyncio.gather(raw(v1.list_node),
                                        raw(v1.list_pod_for_all_namespaces, field_selector=ACTIVE_PODS))
