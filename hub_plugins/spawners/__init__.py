"""Spawners: the GPU mixin (``mixin``) and the backends that apply its allocations."""

from .local import LocalGPUSpawner
from .mixin import GPUSpawnerMixin

__all__ = ["GPUSpawnerMixin", "LocalGPUSpawner"]
