"""What a release looks for before it frees a server's devices (``recovery.stop_leftovers``):
every spawn the owner holds is looked for on the backend, except the one whose cgroups the stop
emptied and removed (nothing of it can run anywhere)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from hub_plugins.spawners.recovery import stop_leftovers


class _Runtime:
    def __init__(self, running: dict[str, int]):
        self.running, self.looked = running, []

    async def stop_spawn(self, spawn_id: str) -> int:
        self.looked.append(spawn_id)
        return self.running.get(spawn_id, 0)

    async def last_alive(self, spawn_id: str):
        return None


class _Core:
    def __init__(self, spawns):
        self.allocator = SimpleNamespace(spawns_of=lambda owner: list(spawns))

    async def run(self, fn, *args):
        return fn(*args)


def _spawner(spawns, runtime, contained):
    return SimpleNamespace(gpulab=_Core(spawns), gpulab_runtime=runtime, gpulab_owner=("u", ""),
                           _gpulab_last_alive=None, _gpulab_contained=contained, _log_name="u",
                           log=logging.getLogger("test"))


async def test_the_contained_spawn_is_not_looked_for_and_the_others_are():
    rt = _Runtime({"old": 2})
    sp = _spawner(["old", "cur"], rt, "cur")
    spawns, _ = await stop_leftovers(sp)
    assert spawns == ["old", "cur"] and rt.looked == ["old"]
    assert sp._gpulab_contained is None  # used once: the next release looks again


async def test_without_cgroups_every_spawn_is_looked_for():
    rt = _Runtime({})
    await stop_leftovers(_spawner(["cur"], rt, None))
    assert rt.looked == ["cur"]
