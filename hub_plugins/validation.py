"""One validation layer for every input surface (pure): the REST spawn body and the spawn form
(``request.py``), the billing and quotas services' query parameters and JSON bodies.

Every check returns the clean value or raises :class:`InputError`, whose message names the field,
says what is expected and shows (a bounded piece of) what was sent, and whose ``status`` is the
HTTP status to answer with (400, 413 or 415). Numbers are finite and bounded (no NaN, Infinity or
1e308 where a bounded value is meant), digits are ASCII (``int("١")`` is 1 in Python: refused here),
text has a length limit, and nothing a person sends can make a check raise anything else.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Any

DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII only; 18 digits always fit an int64 and convert fast
DECIMAL = re.compile(r"[0-9]{1,15}(\.[0-9]{1,15})?")
MAX_BODY = 64 * 1024  # a spawn request or an override is a few hundred bytes
JSON_TYPES = ("application/json",)
# `curl -d '{...}'` labels its body form-encoded unless told otherwise; the README's examples and
# the scripts written from them send JSON that way, so the label is accepted when the body is JSON
# (a real form body fails the JSON parse with a 400). Any other label (text/plain, ...) is a 415.
CURL_DEFAULT = "application/x-www-form-urlencoded"


class InputError(ValueError):
    """Input a person must fix; the message says how. ``status``: the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def shown(value: Any, limit: int = 40) -> str:
    """``value`` as a message quotes it: repr, cut to ``limit`` characters (inputs can be 10 MB)."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    try:
        text = repr(value)
    except ValueError:  # ints past Python's digit limit cannot be printed
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def or_list(items) -> str:
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def names_list(names, limit: int = 5) -> str:
    """At most ``limit`` quoted names (unknown keys can be thousands)."""
    names = list(names)
    out = ", ".join(shown(n, 30) for n in names[:limit])
    return out + (f" and {len(names) - limit} more" if len(names) > limit else "")


# -- numbers ----------------------------------------------------------------------------------
def whole_number(value: Any, name: str, lo: int, hi: int) -> int:
    """An integer in [lo, hi]: a JSON integer, a float with no fraction, or a string of ASCII
    digits (form fields are strings)."""
    expected = f"'{name}' must be a whole number from {lo} to {hi}, got {shown(value)}."
    if isinstance(value, bool) or value is None:
        raise InputError(expected)
    if isinstance(value, str):
        text = value.strip()
        if not DIGITS.fullmatch(text):
            raise InputError(expected)
        value = int(text)
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise InputError(expected)
        value = int(value)
    if not isinstance(value, int) or not lo <= value <= hi:
        raise InputError(expected)
    return value


def number(value: Any, name: str, lo: float, hi: float, *, lo_open: bool = False) -> float | int:
    """A finite number in [lo, hi] (or (lo, hi] with ``lo_open``); strings of ASCII decimals
    are accepted (form fields)."""
    low = f"above {lo:g}" if lo_open else f"from {lo:g}"
    expected = f"'{name}' must be a number {low} to {hi:g}, got {shown(value)}."
    if isinstance(value, bool) or value is None:
        raise InputError(expected)
    if isinstance(value, str):
        text = value.strip()
        if not DECIMAL.fullmatch(text):
            raise InputError(expected)
        value = float(text)
        if value.is_integer():
            value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > 64:
            raise InputError(expected)
    elif not isinstance(value, float) or not math.isfinite(value):
        raise InputError(expected)
    if value < lo or value > hi or (lo_open and value == lo):
        raise InputError(expected)
    return value


def finite_tree(value: Any, name: str, depth: int = 0) -> None:
    """Refuse NaN/Infinity anywhere in a JSON value (and absurd nesting)."""
    if depth > 20:
        raise InputError(f"'{name}' is nested too deeply.")
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"'{name}' must be a finite number, got {shown(value)}.")
    if isinstance(value, dict):
        for k, v in value.items():
            finite_tree(v, f"{name}.{k}" if depth else str(k), depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            finite_tree(v, f"{name}[{i}]", depth + 1)


# -- text -------------------------------------------------------------------------------------
def text(value: Any, name: str, max_len: int, *, pattern: str | None = None, what: str = "",
         allow_empty: bool = False) -> str:
    """A string of at most ``max_len`` characters (matching ``pattern`` if given)."""
    what = what or f"text of at most {max_len} characters"
    if not isinstance(value, str):
        raise InputError(f"'{name}' must be {what}, got {shown(value)}.")
    if len(value) > max_len:
        raise InputError(f"'{name}' must be at most {max_len} characters, got {len(value)}.")
    if not value and not allow_empty:
        raise InputError(f"'{name}' must not be empty: give {what}.")
    if value and pattern is not None and not re.fullmatch(pattern, value):
        raise InputError(f"'{name}' must be {what}, got {shown(value)}.")
    return value


def choice(value: Any, name: str, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"'{name}' must be {or_list(choices)}, got {shown(value)}.")
    return value


def flag(value: Any, name: str) -> bool:
    """true/false (JSON), 'on' (a checked box), 'true'/'false'/'1'/'0'/'yes'/'no' (strings)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("on", "true", "1", "yes"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("off", "false", "0", "no", ""):
        return False
    raise InputError(f"'{name}' must be true or false, got {shown(value)}.")


_DURATION = re.compile(r"(?:([0-9]{1,6})h)?\s*(?:([0-9]{1,6})m)?")


def duration(value: Any, name: str, lo: int, hi: int, example: str) -> int | None:
    """Seconds, from a number of seconds or '2h', '90m', '1h30m'. None or '' = not set."""
    if value is None or value == "":
        return None
    seconds = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, int) or (math.isfinite(value) and value.is_integer()):
            seconds = int(value) if abs(value) < 10**12 else None
    elif isinstance(value, str):
        t = value.strip().lower()
        if DIGITS.fullmatch(t):
            seconds = int(t)
        else:
            m = _DURATION.fullmatch(t)
            if m and (m.group(1) or m.group(2)):
                seconds = int(m.group(1) or 0) * 3600 + int(m.group(2) or 0) * 60
    if seconds is None or not lo <= seconds <= hi:
        raise InputError(f"'{name}' must be a duration {example}, got {shown(value)}.")
    return seconds


def iso_time(value: str, name: str, default: dt.datetime) -> dt.datetime:
    """An ISO date or date-time (UTC when no zone is given); '' = ``default``."""
    if not value:
        return default
    expected = f"'{name}' must be a date or time such as 2026-11-01 or 2026-11-01T12:00, got {shown(value)}."
    if not isinstance(value, str) or len(value) > 40 or not value.isascii():
        raise InputError(expected)
    try:
        t = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise InputError(expected) from None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


# -- bodies -----------------------------------------------------------------------------------
def _reject_constant(name: str):
    raise InputError(f"The body contains {name}; numbers must be finite (JSON has no NaN or Infinity).")


def json_body(body: bytes | None, content_type: str | None, max_bytes: int = MAX_BODY, default=None) -> Any:
    """Parse a request body that must be JSON: size first (413), then the content type (415:
    absent or application/json), then the JSON itself, with no NaN/Infinity (400)."""
    if not body:
        return default
    if len(body) > max_bytes:
        raise InputError(f"The request body is {len(body):,} bytes; at most {max_bytes:,} are accepted.", 413)
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind and kind not in JSON_TYPES and kind != CURL_DEFAULT and not kind.endswith("+json"):
        raise InputError(f"Send the body as JSON with the header 'Content-Type: application/json' "
                         f"(got {shown(kind, 60)}).", 415)
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except InputError:
        raise
    except (ValueError, RecursionError):  # bad UTF-8 or JSON, or ints past Python's digit limit
        raise InputError("The request body is not valid JSON, e.g. {\"user\": \"ann\", \"max_gpus\": 2}.") from None
    finite_tree(data, "body")
    return data
