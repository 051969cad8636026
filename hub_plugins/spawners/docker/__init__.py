"""Docker backend (``backend: docker``): see :mod:`.spawner`; pure parts in :mod:`.spec`."""

from .spawner import DockerGPUSpawner

__all__ = ["DockerGPUSpawner"]
