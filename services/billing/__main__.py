"""Run the billing service (JupyterHub starts it as a managed service)."""

from __future__ import annotations

import asyncio
import logging
import os

from tornado import web

from hub_plugins.outage import ServiceOutage
from hub_plugins.store import settled
from services.base import HubAPI, core_from_live, live_settings, serve, service_address, setup_logging

from .app import make_app
from .audit import record_config_changes
from .data import BillingData

log = logging.getLogger("gpulab.billing")


async def main() -> None:
    setup_logging("billing")
    live = live_settings()
    core = core_from_live(live)
    core.db  # create/upgrade gpulab's tables before serving
    await asyncio.to_thread(record_config_changes, core, live.current)
    # a reloaded gpulab.yaml is audited too (quotas, budgets and prices: before and after)
    live.on_change(lambda new: record_config_changes(core, new))
    host, port, prefix = service_address()
    hub_prefix = os.environ.get("JUPYTERHUB_BASE_URL", "/").rstrip("/") + "/hub/"
    app: web.Application = make_app(BillingData(live, core, HubAPI()), prefix, hub_prefix)
    app.settings["cookie_secret"] = os.urandom(32)
    app.add_transform(ServiceOutage)  # database outages answer 503 (hub_plugins/outage.py)
    serve(app, port, host)
    log.info("billing service at http://%s:%d%s", host, port, prefix)
    await settle_history(core)
    await asyncio.Event().wait()


async def settle_history(core, batch: int = 2000) -> None:
    """Settle the charges of every closed record not settled yet (after an upgrade: all of
    them), in small batches, so that the hub's own writes wait at most one batch for the
    database (SQLite has one writer); the pages settle what closes later as they go."""
    total = 0
    try:
        while n := await asyncio.to_thread(settled.settle, core.db, batch):
            total += n
            await asyncio.sleep(0.05)
    except Exception:  # a database outage: the pages settle as they go, nothing depends on this
        log.exception("settling closed usage records stopped after %d", total)
        return
    if total:
        log.info("settled the charges of %d closed usage records", total)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:  # the hub stops its services with SIGINT
        pass
