"""Entry point JupyterHub starts (``python -m services.admin``), configured as every gpulab
service is: ``GPULAB_CONFIG`` (the hub's gpulab.yaml, read as typed settings) and JupyterHub's own
service variables (``JUPYTERHUB_SERVICE_URL``, ``JUPYTERHUB_API_TOKEN``, ...).
"""

from __future__ import annotations

import sys

# jsonschema compiles an RFC 3987 grammar at import when rfc3987-syntax is installed (jupyterlab
# brings it): a second of start-up, during which the hub waits, for IRI formats never checked here.
sys.modules.setdefault("rfc3987_syntax", None)

import logging  # noqa: E402
import os  # noqa: E402
from urllib.parse import urlparse  # noqa: E402

from tornado.ioloop import IOLoop, PeriodicCallback  # noqa: E402

from hub_plugins.outage import ServiceOutage  # noqa: E402
from services.base import core_from_live, listen_host, live_settings, serve  # noqa: E402

from .app import make_app  # noqa: E402
from .core import QuotaAdmin  # noqa: E402


def exit_with_the_hub(hub_pid: int):
    """A hub killed with -9 cannot stop its managed services: leave when it is gone (the next hub
    starts its own, with a new token), instead of lingering on the port."""

    def check():
        if os.getppid() != hub_pid:
            logging.warning("the hub (pid %d) is gone; stopping", hub_pid)
            IOLoop.current().stop()

    return check


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s quotas] %(message)s")
    admin = QuotaAdmin(core_from_live(live_settings()))  # follows gpulab.yaml as it reloads
    admin.core.db  # create/upgrade gpulab's tables before the first request
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    app = make_app(admin)
    app.add_transform(ServiceOutage)  # database outages answer 503 (hub_plugins/outage.py)
    serve(app, url.port, listen_host(url))
    logging.info("listening on %s, prefix %s", url.geturl(), os.environ.get("JUPYTERHUB_SERVICE_PREFIX"))
    PeriodicCallback(exit_with_the_hub(os.getppid()), 5000).start()
    IOLoop.current().start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
