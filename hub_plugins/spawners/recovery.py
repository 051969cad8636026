"""What the mixin does about crashes, on the hub's side of a spawner (part of GPUSpawnerMixin).

- :func:`check_after_restart`: JupyterHub checks, at start-up, every server its database lists.
  A server the hub that died had started but not yet recorded (its state has no handle or no
  spawn id) is *adopted* here: found on the backend by its spawn id, it keeps its allocation and
  usage record, and JupyterHub checks it where it really listens (``get_url``). A server that is
  really gone leaves its allocation to the stop JupyterHub runs next.
- :func:`release_stopped` and :func:`stop_leftovers`: before a release, whatever of the server
  still runs (helpers that outlived it, or a server whose handle was never recorded) is stopped,
  so a device is never freed while something uses it; and the backend says when the server was
  last alive (its lifeline), which is when its usage record closes. :func:`release_stopped_now`:
  the usual stop, where nothing can be left, released at once on the loop.
- :func:`heal_hub_session`: JupyterHub's own database session, after its connection died
  mid-transaction, refuses every later use until rolled back (see ``outage.heal_session``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..outage import heal_session
from ..store.allocator import Allocation
from ..store.models import utcnow
from .lifecycle import Event


@dataclass(frozen=True)
class HeldGPUs:
    """What the spawner state remembers (and an admin sees under ``servers[...].state``).

    ``gpu_ids`` are the device ids the server sees (``GPULAB_GPUS``), never a count: a request's
    ``gpus`` is the count. The state still carries them under ``gpus`` too, the key admins read
    (README) and the only one hubs before ``gpu_ids`` wrote and read."""

    spawn_id: str
    gpu_ids: tuple[str, ...]
    gpu_type: str
    profile: str
    devices: tuple[str, ...]

    @classmethod
    def of(cls, alloc: Allocation) -> HeldGPUs:
        return cls(
            alloc.spawn_id, tuple(alloc.visible_ids), alloc.gpu_type, alloc.profile,
            tuple(d.key for d in alloc.devices),
        )

    def to_state(self) -> dict:
        ids = list(self.gpu_ids)
        return {"gpu_ids": ids, "gpus": list(ids), "gpu_type": self.gpu_type, "profile": self.profile,
                "spawn_id": self.spawn_id, "gpu_devices": list(self.devices)}

    @classmethod
    def from_state(cls, state: dict) -> HeldGPUs | None:
        """What a saved state holds (None: no spawn id, so nothing). A state an older hub saved
        has its device ids under ``gpus`` only: a restart over its database still adopts them."""
        if not state.get("spawn_id"):
            return None
        ids = state["gpu_ids"] if "gpu_ids" in state else state.get("gpus", ())
        return cls(state["spawn_id"], tuple(str(i) for i in ids), state.get("gpu_type", ""),
                   state.get("profile", ""), tuple(state.get("gpu_devices", ())))


async def check_after_restart(spawner, status):
    core = spawner.gpulab
    if status is None and spawner.gpulab_held is not None:
        # recorded and running. The note that it is up is written once its spawn has answered
        # (liveness.gpulab_mark_ready), so a hub that died in between left it unwritten: it
        # runs, so it is charged (from now, as an adopted one; an open record only)
        await core.run(core.usage.mark_ready_if_not, spawner.gpulab_held.spawn_id, utcnow())
        return status
    runtime = spawner.gpulab_runtime
    if runtime is None or spawner.server is None:
        return status
    mine = await core.run(core.allocator.spawns_of, spawner.gpulab_owner)
    found = [f for f in await runtime.find(spawner.user.name, spawner.name or "") if f.spawn_id in mine]
    spawner.gpulab_lifecycle(Event.CHECK)  # rows may exist for this server: the stop releases them
    if not found or not await spawner.gpulab_adopt(found[0]):
        return status
    f = found[0]
    holdings = await core.run(core.allocator.holdings)
    row, devices = holdings[f.spawn_id]
    spawner.gpulab_held = HeldGPUs(row.spawn_id, tuple(d.visible_id for d in devices), row.gpu_type,
                                   row.profile, tuple(d.device_key for d in devices))
    spawner.gpulab_holding = row.spawn_id
    spawner.gpulab_lifecycle(Event.ADOPTED)
    spawner._gpulab_last_alive = spawner._gpulab_last_beat = utcnow()
    await core.run(core.usage.mark_ready_if_not, f.spawn_id, spawner._gpulab_last_alive)
    spawner.log.warning("[gpulab] %s: adopted its server %s, which the hub that died had started but "
                        "not recorded (GPUs %s)", spawner._log_name, f.describe(),
                        ",".join(spawner.gpulab_held.gpu_ids) or "none")
    return None


async def release_stopped(spawner, cleanup, release, together=None) -> tuple[list[str], list[str]]:
    """Release a stopped server: (spawn ids it held, the device keys freed). ``release(alive_for)``
    frees them in a worker thread (``Allocator.release_checked``: ``alive_for(spawn ids)`` gives
    when each was last alive, or False to keep them); ``together(alive_for)``, where given, is
    awaited instead when there is no clean-up to run: the same release, written in one
    transaction with the other stops' that arrive meanwhile (``store/release.py``); ``cleanup``:
    the backend's own clean-up after a stop that needs a worker thread, run first, or None
    (nothing to do, or done on the loop).

    One trip to the worker threads and one transaction where nothing can be left (at 50 stops at
    once each trip waited ~0.1 s for the hub's loop to take its result back, measured): the
    clean-up, the spawns the owner holds and, when every one is the spawn whose cgroups the stop
    emptied and removed and the backend knows when it was last alive without asking anyone, the
    release. Otherwise (a spawn a hub that died left behind, a server without cgroups, a backend
    that asks its engine) the rest is looked for and stopped first (``stop_leftovers``): a device
    is never freed while something uses it.

    On the usual stop the local backend removed the cgroups on the loop already, and the spawn's
    lifeline record (a small local file) is read here too: the trip then runs nothing but the
    transaction. Each syscall in a worker thread hands the GIL back and forth with the busy loop."""
    core, runtime, last = spawner.gpulab, spawner.gpulab_runtime, spawner._gpulab_last_alive
    contained, recorded_here = None, {}
    if cleanup is None:
        contained = _take_contained(spawner)
        if contained and runtime is not None:
            recorded_here[contained] = runtime.last_alive_here(contained)

    def alive_for(spawns: list[str]):
        return _alive_if_contained(runtime, last, contained, spawns, recorded_here)

    def first_trip():
        nonlocal contained
        if cleanup is not None:
            try:
                cleanup()
            except Exception:  # never keep JupyterHub from releasing the server
                spawner.log.exception("[gpulab] %s: cleaning up after its stop failed", spawner._log_name)
            contained = _take_contained(spawner)
        return release(alive_for)

    if cleanup is None and together is not None:
        spawns, keys = await together(alive_for)
    else:
        spawns, keys = await core.run(first_trip)
    if runtime is None:
        return [], keys
    if keys is None:
        alive = await stop_leftovers(spawner, spawns, contained)
        _, keys = await core.run(release, lambda _spawns: alive)
    return spawns, keys


def release_stopped_now(spawner, request) -> tuple[list[str], list[str]] | None:
    """:func:`release_stopped`'s usual case written at once, on the loop (``GroupCommit.try_now``:
    no trip to a worker thread and no wait for the loop's next turn, ~50 ms each at 50 stops at
    once): the stop emptied and removed the server's cgroups, so nothing of it runs anywhere; its
    lifeline record says when it was last alive; SQLite's write lock is free this moment. None
    where any of that is not so: nothing changed, and :func:`release_stopped` takes the long way.
    ``request(alive_for)``: the release (``store.release.ReleaseRequest``)."""
    runtime, contained = spawner.gpulab_runtime, getattr(spawner, "_gpulab_contained", None)
    if runtime is None or not contained:
        return None
    recorded_here, last = {contained: runtime.last_alive_here(contained)}, spawner._gpulab_last_alive
    written, result = spawner.gpulab.releases.try_now(
        request(lambda spawns: _alive_if_contained(runtime, last, contained, spawns, recorded_here)))
    if not written or isinstance(result, Exception) or result[1] is None:
        return None
    _take_contained(spawner)
    return result


def _alive_if_contained(runtime, last, contained: str | None, spawns: list[str], recorded_here: dict):
    """The release's look (``alive_for``): when ``spawns`` were last alive, where each is the one
    whose cgroups the stop removed and the backend knows it without asking anyone; else False
    (look for what is left first)."""
    if runtime is None:
        return last
    if any(spawn_id != contained for spawn_id in spawns):
        return False
    recorded = {spawn_id: recorded_here[spawn_id] if spawn_id in recorded_here
                else runtime.last_alive_here(spawn_id) for spawn_id in spawns}
    return False if NotImplemented in recorded.values() else _alive(last, recorded)


def _take_contained(spawner) -> str | None:
    """The spawn whose cgroups the stop's clean-up emptied and removed (set by it; used once)."""
    held, spawner._gpulab_contained = getattr(spawner, "_gpulab_contained", None), None
    return held


async def stop_leftovers(spawner, spawns: list[str], contained: str | None = None) -> dict:
    """Stop whatever still runs of ``spawns`` but ``contained`` (the spawn whose cgroups the
    stop emptied and removed: nothing of it runs anywhere); spawn id -> last moment known alive."""
    runtime = spawner.gpulab_runtime
    recorded = {}
    for spawn_id in spawns:
        if spawn_id != contained and await runtime.stop_spawn(spawn_id):
            spawner.log.warning("[gpulab] %s: stopped what still ran of spawn %s before releasing it",
                                spawner._log_name, spawn_id)
        recorded[spawn_id] = await runtime.last_alive(spawn_id)
    return _alive(spawner._gpulab_last_alive, recorded)


def _alive(last, recorded: dict) -> dict:
    """spawn id -> the latest moment it is known alive: the hub's own ``last`` sighting or the
    backend's record, whichever is later (a spawn known by neither is left out)."""
    alive = {}
    for spawn_id, at in recorded.items():
        seen = [t for t in (last, at) if t is not None]
        if seen:
            alive[spawn_id] = max(seen)
    return alive


def heal_hub_session(spawner) -> None:
    # the user's session is the hub's: Spawner.db is deprecated and logs a 6-line warning the
    # first time each spawner reads it, which was every spawn
    db = getattr(getattr(spawner, "user", None), "db", None)
    if db is not None:
        heal_session(db)
