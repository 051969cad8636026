"""gpulab in a hub inside the test process: JupyterHub's ``MockHub`` started by pytest-jupyterhub's
``hub_app`` fixture, with the traitlets config that ``config/jupyterhub_config.py`` builds from the
same generated ``gpulab.yaml`` as a subprocess :class:`~tests.support.hubproc.Hub`.

What differs from a subprocess hub is only what ``MockHub`` changes: a temporary JupyterHub
database, no signal handlers, logs into pytest's capture. The spawner, the authenticator, the
pages, gpulab's core, its services and its servers are the real ones (services and single-user
servers are still processes of their own), and the reconcile loop runs as in the hub. Not for a
hub that must be restarted or killed: that is what the subprocess hubs are for.

The hub runs on the test's event loop, so a test is ``async`` and makes its (blocking) requests in
a worker thread: ``await hub.aio.spawn(...)`` is ``hub.spawn(...)`` of a subprocess hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import time

import requests
from traitlets.config import Config

from hub_plugins.core import GPULab
from hub_plugins.reconcile import gate, supervisor
from hub_plugins.settings.apply import apply_all
from hub_plugins.settings.loader import load

from .hubproc import ROOT, Hub, HubError


def in_thread(body):
    """An ``async`` test made of a blocking body, run in a worker thread while an in-process hub
    answers on the test's event loop: a subprocess hub's test, unchanged, on an in-process hub."""

    @functools.wraps(body)  # pytest reads the fixtures from the body's signature
    async def test(*args, **kw):
        return await asyncio.to_thread(body, *args, **kw)

    return test


class _InThread:
    """``hub.aio.<method>(...)``: the hub's blocking method run in a worker thread, awaited."""

    def __init__(self, hub: Hub):
        self._hub = hub

    def __getattr__(self, name):
        method = getattr(self._hub, name)

        async def call(*args, **kw):
            return await asyncio.to_thread(method, *args, **kw)

        return call


class InProcessHub(Hub):
    """A :class:`Hub` whose JupyterHub is a ``MockHub`` in this process (``app``, set by
    ``start_in``). Its HTTP helpers are the same; call them through ``aio`` from the test."""

    app = None

    @property
    def aio(self) -> _InThread:
        return _InThread(self)

    def traitlets_config(self) -> Config:
        """What ``config/jupyterhub_config.py`` makes of this hub's gpulab.yaml."""
        self.write_config()
        cfg = load(self.config_path)
        cfg["_project_root"] = str(ROOT)
        c = Config()
        apply_all(c, cfg)
        return c

    async def start_in(self, hub_app, config: dict | None = None) -> InProcessHub:
        """Start it with pytest-jupyterhub's ``hub_app`` factory and gpulab's reconcile loop (the
        start-up gate closed until its first pass, as ``jupyterhub_config.py`` does). ``config``:
        traitlets settings on top of gpulab's, as ``--Class.trait=value`` on a hub's command line."""
        GPULab.clear_instance()
        c = self.traitlets_config()
        c.merge(Config(config or {}))
        supervisor.schedule()
        self.app = await hub_app(config=c)
        await asyncio.to_thread(self.wait_up)
        return self

    def start(self, *args, **kw):  # a subprocess start would collide with the MockHub's ports
        raise TypeError("an InProcessHub is started with `await hub.start_in(hub_app)`")

    def wait_up(self, timeout: float = 60) -> None:
        """Until it answers its API (``Hub.wait_up`` without the process)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/hub/api/", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise HubError(f"the in-process hub did not answer in {timeout}s")

    async def aclose(self) -> None:
        """Stop its servers (a hub leaves them running by design) and forget gpulab's core; the
        hub itself (proxy, services) is stopped by ``hub_app``."""
        if self.app is not None:
            with contextlib.suppress(Exception):
                for user in (await self.aio.api("GET", "/users?state=active"))[1] or []:
                    for name in user.get("servers", {}):
                        await self.aio.api("DELETE", self.server_path(user["name"], name))
        for pid in self.server_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        gate.open_()  # a later hub in this process that runs no supervisor must not wait on it
        GPULab.clear_instance()
