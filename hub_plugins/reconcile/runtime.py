"""What a backend adapter answers for the reconcile and for releases (one per hub process).

A backend without one (``None``) is reconciled from the hub's own knowledge only, as before.
"""

from __future__ import annotations

import datetime as dt

from .decide import Found


class Runtime:
    """Base class of the per-backend adapters. Methods are coroutines: adapters do their I/O in
    threads (``/proc``, Docker's API, ``squeue``) and must never block the hub's loop."""

    name = "generic"

    async def list(self) -> list[Found]:
        """This hub's servers that really run right now."""
        return []

    async def find(self, user_name: str, server_name: str) -> list[Found]:
        """This hub's running servers of one owner (for adoption and releases)."""
        return [f for f in await self.list() if (f.user_name, f.server_name) == (user_name, server_name)]

    async def stop(self, found: Found) -> bool:
        """Stop it, and return once it is gone: True, or False when it was left running
        (the adapter may not stop it, e.g. docker.remove_orphans off): then its allocation stays."""
        return False

    async def stop_spawn(self, spawn_id: str) -> int:
        """Stop whatever still runs of one spawn (helpers that outlived the server included);
        how many things were stopped."""
        n = 0
        for f in await self.list():
            if f.spawn_id == spawn_id:
                await self.stop(f)
                n += 1
        return n

    async def last_alive(self, spawn_id: str) -> dt.datetime | None:
        """The last moment the backend saw that spawn's server alive (naive UTC), if it knows."""
        return None

    def last_alive_here(self, spawn_id: str):
        """``last_alive``, where the adapter knows it without asking anyone (a small file on this
        host, read on the loop or in a worker thread): a stop's release then makes one trip to
        them, not two. ``NotImplemented`` where it would have to ask."""
        return NotImplemented

    async def remove_leftovers(self) -> int:
        """Once, at start-up after the reconcile and before any spawn goes ahead: remove what
        servers a crash stopped left on the machine (the local backend: their empty cgroups);
        how many things went."""
        return 0

    def forget(self, spawn_id: str) -> None:
        """The spawn is released: drop what the adapter kept about it."""
