"""A GPULab core in the test process: a fresh SQLite database, a simulated inventory and the
repository's profiles, for tests of the core's decisions without a hub."""

from __future__ import annotations

import contextlib
from pathlib import Path

from traitlets.config import Config

from hub_plugins.core import GPULab

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def gpulab_core(tmp_path: Path, inventory: str = "4xA100-80GB", **traits):
    """``traits``: GPULab options (``quotas``, ``billing``, ``queue_settings``...)."""
    GPULab.clear_instance()
    c = Config()
    c.GPULab.inventory_spec = inventory
    c.GPULab.db_url = f"sqlite:///{tmp_path}/gpulab.sqlite"
    c.GPULab.profiles_dir = str(ROOT / "profiles")
    for name, value in traits.items():
        setattr(c.GPULab, name, value)
    try:
        yield GPULab(config=c)
    finally:
        GPULab.clear_instance()
