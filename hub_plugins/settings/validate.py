"""JSON-Schema validation with messages that name the key: ``quotas.default.max_gpus: -1 is
less than the minimum of 0``."""

from __future__ import annotations

import datetime as dt
import math

from jsonschema import Draft202012Validator, FormatChecker, validators

from ..validation import shown
from .errors import ConfigError

_formats = FormatChecker()


@_formats.checks("date", raises=ValueError)
def _is_date(value) -> bool:
    # YAML turns 2026-12-01 into a date already; a string must be ISO too.
    if isinstance(value, (dt.date, dt.datetime)) or not isinstance(value, str):
        return True  # null ("never expires") and non-strings are the type check's business
    dt.date.fromisoformat(value)
    return True


def _dotted(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _explain(err) -> tuple[list, str]:
    """(key path, message) for one validation error."""
    path = list(err.absolute_path)
    desc = err.schema.get("description") if isinstance(err.schema, dict) else None
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        allowed = ", ".join(sorted(err.schema.get("properties", {})))
        return path, f"unknown key{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))} (allowed: {allowed})"
    if err.validator in ("anyOf", "oneOf") and err.context:
        # explain the branch that matched the value's type, not "is not of type 'null'"
        relevant = [e for e in err.context if e.relative_path or e.validator not in ("type", "const")]
        best = max(relevant, key=lambda e: len(e.relative_path), default=None)
        if best is not None and (best.relative_path or not desc):
            _, message = _explain(best)
            return path + list(best.relative_path), message
        if desc:
            return path, f"{err.instance!r} is not valid: expected {desc}"
    if err.validator == "pattern":
        return path, f"{shown(err.instance)} is not in the expected form" + (f": {desc}" if desc else "")
    if err.validator == "maxLength":
        return path, f"must be at most {err.validator_value} characters, got {len(err.instance)}"
    if err.validator in ("maxItems", "maxProperties"):
        return path, f"must have at most {err.validator_value} entries, got {len(err.instance)}"
    # jsonschema quotes the whole value: a 100 KB value must not make a 100 KB message
    return path, err.message if len(err.message) <= 300 else err.message[:300] + "..."


def _finite_number(checker, value) -> bool:
    # JSON Schema's 'number' admits NaN and Infinity (YAML's .nan, Python's json): a limit of NaN
    # compares false with everything, so it would pass every 'minimum' and break every decision
    return Draft202012Validator.TYPE_CHECKER.is_type(value, "number") and (
        not isinstance(value, float) or math.isfinite(value))


class _DateAwareValidator:
    """YAML dates are date objects, which JSON Schema's 'string' type rejects; numbers are finite."""

    def __init__(self, schema):
        checker = Draft202012Validator.TYPE_CHECKER.redefine_many({
            "string": lambda _c, v: isinstance(v, (str, dt.date)),
            "number": _finite_number,
        })
        cls = validators.extend(Draft202012Validator, type_checker=checker)
        self.v = cls(schema, format_checker=_formats)

    def errors(self, data):
        return sorted(self.v.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))


def validate(data, schema, where: str) -> None:
    """Raise ConfigError listing every problem (at most 10) with its key path."""
    errors = _DateAwareValidator(schema).errors(data)
    if not errors:
        return
    lines = []
    for e in errors[:10]:
        path, message = _explain(e)
        lines.append(f"  {_dotted(path)}: {message}")
    more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
    raise ConfigError(f"{where} is not valid:\n" + "\n".join(lines) + more)
