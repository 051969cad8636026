"""Every duration gpulab.yaml takes is bounded: a key named ``*_seconds``, ``*_minutes``,
``*_hours``, ``*_days`` or ``*timeout`` is at most ten years unless its schema says less.

Python's dates end in the year 9999 and its timedeltas at 999,999,999 days, so a value the
schema let through (``queue.age_after_hours: 1.0e+20``) raised OverflowError far from the file:
at start-up a failed poll made the hub stop every running server; on a reload, settings that
said "applied" broke each culler round and each queued spawn. Bounded here, such a value is a
config error that names its key, like any other."""

from __future__ import annotations

LONGEST_S = 10 * 366 * 86400  # ten years: longer than anything a lab sets, far from any overflow
UNITS = (("_seconds", 1), ("_minutes", 60), ("_hours", 3600), ("_days", 86400), ("timeout", 1))


def _unit(key: str) -> int | None:
    return next((n for suffix, n in UNITS if key.endswith(suffix)), None)


def _numeric(schema: dict) -> bool:
    types = schema.get("type")
    types = types if isinstance(types, list) else [types]
    return "number" in types or "integer" in types


def bound_durations(schema) -> None:
    """Give each duration in ``schema`` (a JSON schema, changed in place) a maximum."""
    if isinstance(schema, list):
        for item in schema:
            bound_durations(item)
        return
    if not isinstance(schema, dict):
        return
    for key, sub in (schema.get("properties") or {}).items():
        unit = _unit(key)
        if unit and isinstance(sub, dict) and _numeric(sub) and "maximum" not in sub:
            sub["maximum"] = LONGEST_S // unit
    for value in schema.values():
        if isinstance(value, (dict, list)):
            bound_durations(value)
