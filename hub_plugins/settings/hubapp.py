"""What gpulab changes in the running JupyterHub application: how it starts its services, how it
shuts down without its database, how its SQLite file keeps its journal and how its garbage
collector is paced. JupyterHub has no hook for these, so ``adapt()`` (called by
``config/jupyterhub_config.py`` while the hub loads its config) wraps methods of this hub's
instance; JupyterHub's own code still does the work, and its classes are left alone but for one
fix of User's (``keep_replaced_spawners``)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import sys
from contextlib import suppress

import sqlalchemy as sa
from jupyterhub.app import JupyterHub
from jupyterhub.user import User
from jupyterhub.utils import maybe_future, url_path_join

from ..gcpace import HubCollector
from ..pages.handlers import HANDLERS as PAGE_HANDLERS
from .ports import forget_foreign_proxy, hub_endpoints, taken


def adapt() -> None:
    if not JupyterHub.initialized():  # a subcommand that loads the config without serving
        return
    app = JupyterHub.instance()
    keep_replaced_spawners()
    add_pages(app)
    check_ports_first(app)
    start_services_together(app)
    shut_down_without_database(app)
    journal_ahead(app)
    pace_collector(app)


def keep_replaced_spawners() -> None:
    """JupyterHub 6's ``User.get_spawner(replace_failed=True)`` (a POST that starts a server whose
    last start failed) makes a new spawner but leaves it out of ``user.spawners``: the start then
    runs on yet another one, and the POST reads its answer off the first, never pending: 201
    ("running") for a server still starting or waiting in the queue. Here the new one is kept
    where JupyterHub looks for it. (The one change to a JupyterHub class, as it is the User's.)"""
    get_spawner = User.get_spawner
    if getattr(get_spawner, "gpulab_keeps", False):
        return

    def get_spawner_kept(self, server_name="", replace_failed=False):
        spawner = get_spawner(self, server_name, replace_failed)
        if dict.get(self.spawners, server_name) is not spawner:  # (its [] would make another)
            self.spawners[server_name] = spawner
        return spawner

    get_spawner_kept.gpulab_keeps = True
    User.get_spawner = get_spawner_kept


def add_pages(app: JupyterHub) -> None:
    """gpulab's pages and their API (``pages/handlers.py``) among the hub's handlers, where
    JupyterHub puts ``extra_handlers``: after its own, before its catch-alls (the logo, then the
    API's 404 for any other ``/hub/api/...``). ``extra_handlers`` itself is deprecated since
    JupyterHub 3.1 and warned about at every start; its replacement, a service, cannot serve
    pages that read the hub's own objects (its users' spawners)."""
    init_handlers = app.init_handlers

    def init_handlers_with_pages():
        init_handlers()
        catch_alls = {url_path_join(app.hub_prefix, "logo"), url_path_join(app.hub_prefix, "api/(.*)")}
        at = next((i for i, h in enumerate(app.handlers) if h[0] in catch_alls), 0)
        app.handlers[at:at] = app.add_url_prefix(app.hub_prefix, list(PAGE_HANDLERS))

    app.init_handlers = init_handlers_with_pages


def check_ports_first(app: JupyterHub) -> None:
    """Once JupyterHub has made its proxy (whether it starts one is known then) and before
    anything listens, the ports it is about to listen on are checked (``ports.py``): a taken one
    stops the hub with a message that names the port, its gpulab.yaml key and the program holding
    it, instead of JupyterHub's traceback half-way through its start. A proxy pid file that names
    another program goes first, before JupyterHub would stop that program as its stale proxy."""
    init_proxy = app.init_proxy

    def init_proxy_then_check():
        init_proxy()
        forget_foreign_proxy(app.proxy, app.log)
        found = taken(hub_endpoints(app))
        if found:
            print("\ngpulab: the hub will not start:\n" + "\n".join(f"- {f}" for f in found) + "\n",
                  file=sys.stderr)
            with suppress(OSError):  # written at the start of JupyterHub's initialize; nothing ran
                os.remove(app.pid_file)
            sys.exit(2)

    app.init_proxy = init_proxy_then_check


def pace_collector(app: JupyterHub) -> None:
    """Once the hub is up (its servers restored, its services started), its garbage collector is
    paced (``hub_plugins/gcpace.py``): what the start built is frozen out of the collector's walks,
    and so is whatever survives each full collection until the next sweep."""
    start = app.start

    async def start_then_pace():
        await start()
        HubCollector(parent=app).start()

    app.start = start_then_pace


def journal_ahead(app: JupyterHub) -> None:
    """JupyterHub commits to its database in its one event-loop thread, several times a spawn, and
    SQLite's default rollback journal syncs the disk at least twice a commit (journal, then the
    file), so on SQLite every commit held every request up for those syncs. In write-ahead-log
    mode a commit syncs once (with ``synchronous`` FULL), or only at checkpoints
    (:class:`SyncAtCheckpoints`, the default), and readers never wait for the writer: a burst of
    50 spawns at once ran about 10% more spawns a second, stock spawner and gpulab's alike
    (docs/benchmarks.md). The mode is stored in the file, so it is set once, before JupyterHub
    opens it; like gpulab's own SQLite file, it needs a local filesystem (the state directory),
    not NFS."""
    init_db = app.init_db

    def init_db_with_wal():
        path = sqlite_file(app.db_url)
        mode = use_wal(path) if path is not None else None
        if mode not in (None, "wal"):  # e.g. another process holds the file: the next start tries again
            app.log.warning("gpulab: %s keeps its journal mode (%s)", path, mode)
        return init_db()

    app.init_db = init_db_with_wal


def use_wal(path: str, timeout: float = 5) -> str | None:
    """Put a SQLite file in write-ahead-log mode (nothing to do when it is already); returns the
    mode in force, or what went wrong. A file that cannot be opened at all (None) is left for
    JupyterHub, whose own open says what is wrong."""
    try:
        conn = sqlite3.connect(path, timeout=timeout)
    except sqlite3.Error:
        return None
    try:
        return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
    except sqlite3.Error as e:
        return str(e)
    finally:
        conn.close()


class SyncAtCheckpoints(sqlite3.Connection):
    """JupyterHub's connections to its SQLite file (``hub.sqlite_synchronous: normal``): in WAL
    mode, ``synchronous=NORMAL`` syncs the disk at checkpoints instead of at every commit. A
    commit still survives the hub's crash (kill -9: it is in the log, in the kernel's cache); what
    an OS crash or power cut can lose is the last commits before it, never the file's integrity.
    The hub commits in its one event-loop thread, and each sync there waited on the disk behind
    gpulab's own writes (its file runs WAL with NORMAL too, ``store/db.py``): a profile of 50
    spawns at once put 2.5 s a round of 200 more in these syncs under gpulab's spawner than under
    stock's (docs/benchmarks.md). A file not in WAL mode keeps FULL: NORMAL with a rollback
    journal could corrupt it on a power cut."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if str(self.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            self.execute("PRAGMA synchronous=NORMAL")


def sqlite_file(url: str) -> str | None:
    """The file of a SQLite database URL; None for another database, or one held in memory."""
    try:
        u = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return None
    if u.get_backend_name() != "sqlite" or u.database in (None, "", ":memory:") or u.database.startswith("file:"):
        return None
    return u.database


def start_services_together(app: JupyterHub) -> None:
    """JupyterHub 6 starts its managed services one after the other in ``JupyterHub.start``,
    waiting for each URL service to answer before the next is even spawned; gpulab's each take
    about a second to import and bind, so every service added a second to the hub's start. Here
    the first call spawns them all at once and each call returns its own service's outcome, so the
    hub waits for the slowest, not the sum; and the proxy is routed to the hub meanwhile
    (:func:`route_now`), so the hub answers without waiting for any service. JupyterHub still
    decides what a failed start means; a service added later (the services API) starts as before."""
    start_one = app.start_service
    batch: dict = {}
    stopping: asyncio.Event | None = None

    async def start_service(name, service, ssl_context=None):
        nonlocal stopping
        if stopping is None:
            batch.update({n: asyncio.ensure_future(start_one(n, s, ssl_context))
                          for n, s in app._service_map.items()})
            stopping = stop_on_signals_while_starting(app)
            await route_now(app)
        task = batch.pop(name, None)
        # not in the first batch: added later by the services API
        started = await (task if task is not None else start_one(name, service, ssl_context))
        if stopping.is_set():
            # a stop is under way and its clean-up stops the services: JupyterHub must not take
            # their exit for a failed start (it would exit at once, leaving its proxy running)
            await asyncio.Event().wait()
        return started

    app.start_service = start_service


def stop_on_signals_while_starting(app: JupyterHub) -> asyncio.Event:
    """JupyterHub handles SIGTERM and SIGINT only once ``start`` returns, after every service has
    answered; a signal before that kills it outright, leaving its proxy running (the next start
    then waits 2 s to stop it). Now that the hub answers while its services start, a stop in
    that window is an ordinary one: the same clean-up (services, proxy, pid file), then exit.
    JupyterHub's own handlers replace these when its start is done. Returns the event set when
    such a stop begins."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    async def stop(sig):
        stopping.set()
        app.log.critical("gpulab: received signal %s while the services start; shutting down", sig.name)
        try:
            await app.cleanup()
        finally:
            logging.shutdown()
            os._exit(0)  # the start coroutine still waits on the services: nothing else to unwind

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda sig=sig: asyncio.ensure_future(stop(sig)))
    return stopping


async def route_now(app: JupyterHub) -> None:
    """JupyterHub routes its proxy to the hub (and, after a restart with a new proxy, to the
    users' running servers) only once every service has answered, so until the slowest service
    has imported (MLflow: seconds) sign-in and the REST API answer 404. Here the routes are set
    while the services start: the hub answers as soon as it listens; a request to a service still
    starting waits for it (its lifeline bound its port already, ``--prebind``). JupyterHub's own
    check of the routes still runs after the services."""
    try:
        await app.proxy.check_routes(app.users, app._service_map)
    except Exception:  # JupyterHub's own check after the services decides what a failure means
        app.log.warning("gpulab: could not set the proxy's routes before the services are up", exc_info=True)


def shut_down_without_database(app: JupyterHub) -> None:
    """JupyterHub's clean-up at shutdown commits to its database as it stops each service; with the
    database down that commit raises, the rest of the clean-up is skipped, and the event loop is
    never stopped: the hub hangs on SIGTERM until it is killed. Here a database error in the
    clean-up is logged and the steps that need no database still run (the services' processes,
    the proxy, the pid file), so the hub stops as fast as with its database."""
    cleanup = app.cleanup

    async def cleanup_even_without_database():
        try:
            return await cleanup()
        except sa.exc.SQLAlchemyError as e:
            app.log.error("gpulab: the database failed during shutdown (%s); stopping without it",
                          str(e).splitlines()[0])
        for service in app._service_map.values():
            if service.managed and service.spawner:
                service.spawner.stop_polling()
                with suppress(Exception):
                    await service.spawner.stop()
        if app.cleanup_proxy and app.proxy.should_start:
            with suppress(Exception):
                await maybe_future(app.proxy.stop())
        if app.pid_file and os.path.exists(app.pid_file):
            os.remove(app.pid_file)

    app.cleanup = cleanup_even_without_database
