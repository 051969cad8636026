"""The start-up gate: closed while the hub's first reconcile runs, so no GPU is handed out before
gpulab knows what really runs. Its own module (no imports of ours) because the core, the spawners
and the supervisor all read it."""

from __future__ import annotations

import asyncio

_gate: asyncio.Event | None = None


def close() -> None:
    """Called by the supervisor on the hub's event loop before it starts its first reconcile."""
    global _gate
    _gate = asyncio.Event()


def open_() -> None:
    if _gate is not None:
        _gate.set()


def is_open() -> bool:
    return _gate is None or _gate.is_set()


async def wait_open() -> None:
    """Until the start-up reconcile is done (at once where no supervisor runs, e.g. tests that
    drive a spawner directly)."""
    if _gate is not None:
        await _gate.wait()
