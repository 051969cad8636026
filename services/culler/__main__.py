"""Run the culler (JupyterHub starts it as a managed service without a URL)."""

from __future__ import annotations

import asyncio
import logging

from services.base import HubAPI, core_from_live, live_settings, setup_logging

from .loop import Culler
from .notify import Notifier

log = logging.getLogger("gpulab.culler")


async def main() -> None:
    setup_logging("culler")
    live = live_settings()
    core = core_from_live(live)
    core.db  # tables exist before the first round
    culler = Culler(live, core, HubAPI())
    log.info("culler: every %ss, policies: %s", live.current.culler["interval_seconds"],
             ", ".join(p.name for p in culler.settings.policies))
    # people's emails go out beside the cull rounds, more often than they run
    await asyncio.gather(culler.run_forever(), Notifier(live, core.db).run_forever())


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:  # the hub stops its services with SIGINT
        pass
