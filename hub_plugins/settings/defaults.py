"""Completing a section of gpulab.yaml from :data:`schema.DEFAULTS`, the one place defaults live.

The loader completes the whole file; code that is handed one section in part (``c.GPULab.billing
= {...}`` in a test, a service given an older file) completes it here, so no module carries a
default of its own (``data.get("port", 10101)``) that could drift from the schema's.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from .schema import CULL_POLICY_DEFAULTS, DEFAULTS


def deep_merge(base: Mapping, over: Mapping | None) -> dict:
    """``over`` on top of ``base``: mappings merged key by key, anything else (lists) replaced."""
    out = copy.deepcopy(dict(base))
    for k, v in (over or {}).items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def section(name: str, data: Mapping | None = None) -> dict:
    """The ``name`` section with the keys ``data`` leaves out taken from DEFAULTS."""
    return deep_merge(DEFAULTS[name], data)


def cull_policy(data: Mapping) -> dict:
    """One ``culler.policies`` item with the keys it leaves out taken from the defaults."""
    return deep_merge(CULL_POLICY_DEFAULTS, data)
