"""``gpulab.yaml``: schema, loading and translation into traitlets config."""

from .apply import apply_all
from .errors import ConfigError
from .loader import config_path, load

__all__ = ["ConfigError", "apply_all", "config_path", "load"]
