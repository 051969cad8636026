"""Kubernetes without a cluster: a throwaway kube config (so nothing on the machine is read or
contacted), the recorded API responses, and a tiny fake API server that serves them.

Import this module before kubespawner / kubernetes_asyncio: kubernetes_asyncio reads
``$KUBECONFIG`` when it is imported.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kubernetes"

KUBECONFIG_TEMPLATE = """\
apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{server: "{server}"}}
users:
- name: fake
  user: {{token: not-a-real-token}}
contexts:
- name: fake
  context: {{cluster: fake, user: fake, namespace: gpulab}}
current-context: fake
"""


def write_kubeconfig(server: str = "https://127.0.0.1:9", path: str | None = None) -> str:
    if path is None:
        fd, path = tempfile.mkstemp(prefix="gpulab-kubeconfig-", suffix=".yaml")
        os.close(fd)
    Path(path).write_text(KUBECONFIG_TEMPLATE.format(server=server))
    return path


# never the machine's own ~/.kube/config (port 9 = discard: nothing answers)
os.environ["KUBECONFIG"] = write_kubeconfig()
for _mod in ("kubernetes_asyncio.config.kube_config", "kubernetes_asyncio.config"):
    if _mod in sys.modules:  # imported before us: it read $KUBECONFIG already
        sys.modules[_mod].KUBE_CONFIG_DEFAULT_LOCATION = os.environ["KUBECONFIG"]


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


class FakeAPI:
    """GET /api/v1/nodes and /api/v1/pods from the fixtures; records the queries it saw."""

    def __init__(self, nodes: dict | None = None, pods: dict | None = None):
        self.nodes = nodes if nodes is not None else fixture("nodes.json")
        self.pods = pods if pods is not None else fixture("pods.json")
        self.queries: list[tuple[str, dict]] = []
        self.runner = None
        self.url = ""

    async def start(self) -> FakeAPI:
        from aiohttp import web

        async def nodes(request):
            self.queries.append((request.path, dict(request.query)))
            return web.json_response(self.nodes)

        async def pods(request):
            self.queries.append((request.path, dict(request.query)))
            return web.json_response(self.pods)

        app = web.Application()
        app.router.add_get("/api/v1/nodes", nodes)
        app.router.add_get("/api/v1/pods", pods)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()
