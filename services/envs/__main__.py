"""The 'envs' service: when the hub starts, build every profile environment that is missing, one
after the other (``python -m services.envs``, started and stopped by JupyterHub).

It is a process of its own, so a build never runs on the hub's event loop; the hub reads the
progress each build writes (``hub_plugins/envs/manager.py``) and the form enables a profile as
soon as its environment is ready, without a restart. A build that fails is reported (form, log)
and not retried until the hub restarts or an admin runs ``make envs``. After the builds the
service idles: JupyterHub restarts a managed service that exits.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from hub_plugins.envs.manager import EnvDir, buildable
from hub_plugins.spawn.profiles import load_dir
from hub_plugins.settings.loader import load


def log(message: str) -> None:
    print(f"[gpulab envs] {message}", flush=True)


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    cfg = load(Path(os.environ["GPULAB_CONFIG"]))
    catalog = load_dir(cfg["profiles_dir"], cfg["default_profile"], cfg["gpus"]["max_per_server"])
    envdir = EnvDir(cfg["environments"]["dir"])
    todo = [p for p in buildable(catalog, None) if envdir.marker(p.environment) is None]
    if todo:
        log(f"building {', '.join(p.name for p in todo)} in {envdir.root} (progress in the spawn form)")
    for p in todo:
        envdir.mark_queued(p.environment)
    for p in todo:
        envdir.ensure(p.environment, log=log)
    if todo:
        log("done: " + ", ".join(f"{p.name} {envdir.read_state(p.environment).state}" for p in todo))
    while True:  # JupyterHub restarts a managed service that exits
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
