"""A minimal single-user server for benchmarks: answers the hub's readiness check at
``<prefix>api`` and nothing else, so that a spawn benchmark measures spawner and hub overhead
rather than JupyterLab's start-up. Configured by the environment JupyterHub gives every server.
"""

import os
from urllib.parse import urlparse

from tornado import ioloop, web


class API(web.RequestHandler):
    def get(self):
        self.set_header("X-JupyterHub-Version", os.environ.get("JUPYTERHUB_VERSION", "6.1.1"))
        self.finish({"version": "bench"})


def main():
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    prefix = os.environ["JUPYTERHUB_SERVICE_PREFIX"]
    app = web.Application([(prefix + "api", API), (prefix.rstrip("/") + "/api", API)])
    app.listen(url.port, address=url.hostname or "127.0.0.1")
    ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
