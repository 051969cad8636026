"""Which profile images the engine has (cached: the spawn form asks for every profile)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def missing_image_message(image: str) -> str:
    return f"image {image} is not built; run `make images` (or ask an admin to)"


def unreachable_message(error: Exception) -> str:
    return (f"the Docker engine is not reachable ({error}); start it, or set docker.host in "
            "gpulab.yaml to its socket")


class ImageCache:
    """The engine's image tags, listed at most every ``ttl`` seconds.

    Called from the spawn form (in a worker thread) and from request parsing (on the event loop):
    one cheap local API call per ``ttl``, never one per profile."""

    def __init__(self, client: Callable, ttl: float = 10):
        self._client = client
        self.ttl = ttl
        self._lock = threading.Lock()
        self._tags: set[str] = set()
        self._problem = ""
        self._at = float("-inf")

    def refresh(self) -> None:
        try:
            tags = set()
            for img in self._client().images():
                tags.update(img.get("RepoTags") or ())
            self._tags, self._problem = tags, ""
        except Exception as e:  # engine down, permission denied, ...
            self._tags, self._problem = set(), unreachable_message(e)
        self._at = time.monotonic()

    def present(self, image: str) -> tuple[bool, str]:
        """(present, problem): problem is set when the engine cannot be asked."""
        with self._lock:
            if time.monotonic() - self._at > self.ttl or (image not in self._tags and not self._problem
                                                          and time.monotonic() - self._at > 1):
                # a missing image is re-checked after a second: `make images` may just have built it
                self.refresh()
            return image in self._tags, self._problem
