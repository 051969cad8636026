"""The reconcile loop inside the hub: at start-up before any spawn goes ahead, then every
``GPULab.reconcile_interval`` seconds (the hub's poll interval).

Start-up order (a restarted hub, servers left running by the one that died):

1. JupyterHub checks every server its database lists (``init_spawners``): each spawner polls, and
   a server the dead hub had started but not yet recorded is *adopted* there (the mixin finds it
   by its spawn id and takes its handle over), so it stays the user's server.
2. Once the hub answers HTTP and no spawner is being checked any more, this loop asks the
   backend what really runs and applies ``decide``: orphans stopped, allocations of servers that
   are gone freed, their usage records closed when they were last alive.
3. What servers stopped by the crash left on the machine goes (``Runtime.remove_leftovers``: the
   local backend's empty cgroups), while no spawn can be preparing its own.
4. Only then does the gate open: spawns and the spawn form wait for it (a few seconds).

It is started from ``jupyterhub_config.py`` (:func:`schedule`), because JupyterHub offers
plugins no start-up hook and a hub with no running server creates no spawner to start it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from jupyterhub.app import JupyterHub
from tornado.httpclient import AsyncHTTPClient

from .. import outage
from ..core import GPULab
from ..store.allocator import Owner
from ..store.models import utcnow
from . import gate
from .decide import OpenRecord, Plan, Row, decide
from .wedged import Sweeper

log = logging.getLogger("gpulab.reconcile")

_task: asyncio.Task | None = None


def schedule() -> None:
    """Called while JupyterHub loads its config (its event loop already runs): closes the gate
    and starts the loop, which waits for the hub to be up."""
    global _task
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # a JupyterHub subcommand that loads the config without serving
        return
    gate.close()
    _task = loop.create_task(_main())


async def _main() -> None:
    try:
        await _supervise()
    except asyncio.CancelledError:
        raise
    except BaseException:
        log.exception("gpulab: the reconcile loop stopped; spawns go ahead without it")
        gate.open_()
        raise


async def _supervise() -> None:
    app = JupyterHub.instance()
    global log
    log = app.log  # the hub's own log (its handlers and level)
    await _wait_for_hub(app)
    outage.watch(app.db.get_bind())  # JupyterHub's own database: its outages answer 503
    loop = asyncio.get_running_loop()
    # once it is back, JupyterHub's session (used on this loop) must not stay broken
    outage.when_up(lambda: loop.call_soon_threadsafe(outage.heal_session, app.db))
    core = GPULab.instance(config=app.config)
    spawner_class = app.spawner_class
    make = getattr(spawner_class, "gpulab_make_runtime", None)
    try:
        core.runtime = make(core, app.config) if make else None
    except Exception:
        log.exception("gpulab: cannot reach the %s backend to reconcile; allocations are "
                      "checked against the hub's knowledge only", getattr(spawner_class, "gpulab_backend", "?"))
    sup = Supervisor(core, app.config.Spawner.get("http_timeout", 60))
    await sup.startup()
    while True:
        await asyncio.sleep(max(1, core.reconcile_interval))
        await sup.tick()


async def _wait_for_hub(app) -> None:
    """Until the hub answers its API: by then JupyterHub has created (and flagged as being
    checked) the spawner of every server in its database."""
    client = AsyncHTTPClient()
    while True:
        hub = getattr(app, "hub", None)
        if hub is not None:
            try:
                resp = await client.fetch(hub.url.rstrip("/") + "/api/", raise_error=False, request_timeout=2,
                                          follow_redirects=False)
                if resp.code == 200:
                    return
            except Exception:  # not listening yet, or slow to answer
                pass
        await asyncio.sleep(0.1)


def _being_checked(spawner) -> bool:
    return spawner.pending == "check" and not getattr(spawner, "_gpulab_check_released", False)


class Supervisor:
    def __init__(self, core, check_timeout: float = 60):
        self.core = core
        self.check_timeout = check_timeout
        self.rounds = 0
        self.sweeper = Sweeper()

    async def startup(self) -> None:
        t0 = time.monotonic()
        deadline = t0 + self.check_timeout + 30
        # JupyterHub checks known servers (polls them, waits until they answer): adoption happens
        # there. One that dies meanwhile has its GPUs released here (see wedged.py), not waited on.
        last_sweep = 0.0
        while time.monotonic() < deadline and any(_being_checked(s) for s in self.core.spawners()):
            if time.monotonic() - last_sweep >= 1:
                last_sweep = time.monotonic()
                await self.sweeper.run(self.core.spawners(), log)
            await asyncio.sleep(0.1)
        try:
            plan = await self.reconcile()
            log.info("gpulab: start-up reconcile done in %.1fs: %d orphan(s) stopped, %d allocation(s) "
                     "freed, %d usage record(s) closed, %d kept", time.monotonic() - t0, len(plan.stop),
                     len(plan.free), len(plan.close), plan.kept)
        except Exception:
            log.exception("gpulab: the start-up reconcile failed; spawns go ahead, it runs again "
                          "every %ss", self.core.reconcile_interval)
        try:
            await self.remove_leftovers()
        finally:
            gate.open_()

    async def remove_leftovers(self) -> None:
        """What servers stopped by the crash (or by the reconcile, as orphans) left behind, while
        the gate keeps every spawn from preparing anything (``Runtime.remove_leftovers``)."""
        runtime = self.core.runtime
        try:
            removed = await runtime.remove_leftovers() if runtime is not None else 0
        except Exception:
            log.exception("gpulab: removing what stopped servers left behind failed")
            return
        if removed:
            log.warning("gpulab: removed what %d server(s) stopped by a crash left behind (empty cgroups)", removed)

    async def tick(self) -> None:
        if outage.is_down():
            return  # nothing can be decided without the database; it is probed until it is back
        try:
            await self.reconcile()
            await self.sweeper.run(self.core.spawners(), log)
        except Exception as e:  # e.g. the database went down meanwhile: next time
            log.warning("gpulab: reconcile failed (%s); trying again in %ss", e, self.core.reconcile_interval)

    async def reconcile(self) -> Plan:
        core, runtime = self.core, self.core.runtime
        self.rounds += 1
        if runtime is None:
            gone = await core.run(core.reconcile, core.live_owners(), utcnow())
            if gone:
                core.notify_released()
            return Plan(free=[Row(r.spawn_id, r.user_id, r.user_name, r.server_name, r.created_at) for r in gone])
        cutoff = utcnow()
        before = core.known()
        found = await runtime.list()
        snapshot = await core.run(core.allocator.snapshot)
        records = await core.run(core.usage.open_records)
        after = core.known()
        rows = [Row(s.spawn_id, s.user_id, s.user_name, s.server_name, s.created_at) for s in snapshot.servers]
        opened = [OpenRecord(r.spawn_id, r.user_id, r.user_name, r.server_name, r.started_at) for r in records]
        plan = decide(found, rows, opened, before, after, cutoff)
        if plan.empty:
            return plan
        left = set()
        for f in plan.stop:
            log.warning("gpulab: stopping orphan server %s: it runs on the %s backend but the hub "
                        "holds no server for it (a hub that died while starting it?)", f.describe(), runtime.name)
            if not await runtime.stop(f):
                left.add(f.spawn_id)  # still running: its allocation stays
        stopped_at = utcnow()
        stopped = {f.spawn_id for f in plan.stop} - left
        plan.free = [r for r in plan.free if r.spawn_id not in left]
        plan.close = [r for r in plan.close if r.spawn_id not in left]
        freed = False
        for r in plan.free:
            alive = stopped_at if r.spawn_id in stopped else await runtime.last_alive(r.spawn_id)
            keys = await core.run(core.release, Owner(r.user_id, r.user_name, r.server_name), r.spawn_id,
                                  "crashed", alive)
            runtime.forget(r.spawn_id)
            freed = freed or bool(keys)
            log.warning("gpulab: freed %s of %s:%s (spawn %s): its server is %s", ", ".join(keys) or "no GPU",
                        r.user_name, r.server_name, r.spawn_id, "stopped" if r.spawn_id in stopped else "gone")
        for rec in plan.close:
            alive = stopped_at if rec.spawn_id in stopped else await runtime.last_alive(rec.spawn_id)
            if await core.run(core.usage.close, rec.spawn_id, alive):
                log.warning("gpulab: closed the usage record of %s:%s (spawn %s): its server is gone",
                            rec.user_name, rec.server_name, rec.spawn_id)
            runtime.forget(rec.spawn_id)
        if freed:
            core.notify_released()
        return plan
