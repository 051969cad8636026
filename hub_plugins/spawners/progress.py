"""What a person sees while the server starts: part of ``GPUSpawnerMixin``.

gpulab's own lines (reserving, queueing, starting) are collected as they happen and streamed
before the backend's progress events.
"""

from __future__ import annotations

import asyncio
import html

from traitlets import HasTraits


class GPUProgressMixin(HasTraits):
    """The spawn progress page's events (a base of ``GPUSpawnerMixin``). The event list and its
    wake-up are created by ``GPUSpawnerMixin.__init__``."""

    def gpulab_event(self, message: str, progress: int | None = None) -> None:
        """Add a line to the spawn progress page (and the log)."""
        # the marked html_message is how the progress page tells gpulab's lines from the backend's
        event = {"message": message, "html_message": f'<span class="gpulab-status">{html.escape(message)}</span>'}
        if progress is not None:
            event["progress"] = progress
        self._gpulab_events.append(event)
        self._gpulab_wakeup.set()
        self.log.info("[gpulab] %s: %s", self._log_name, message)

    # -- progress --------------------------------------------------------------------------
    async def progress(self):
        """Our events as they happen, then the backend's own. JupyterHub stops iterating when
        the spawn finishes."""
        sent = 0
        backend_done = False
        while True:
            while sent < len(self._gpulab_events):
                yield self._gpulab_events[sent]
                sent += 1
            if not backend_done and self.gpulab_phase.started:
                backend_done = True
                async for event in super().progress():
                    yield event
                continue
            self._gpulab_wakeup.clear()
            try:
                await asyncio.wait_for(self._gpulab_wakeup.wait(), timeout=1)
            except asyncio.TimeoutError:
                pass
