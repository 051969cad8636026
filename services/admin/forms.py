"""The admin page's "add an override" form -> the JSON body the API takes (pure).

Form fields are strings; empty means "not set". Lists are comma-separated.
"""

from __future__ import annotations

from .core import AdminError

NUMBERS = {"max_gpus": float, "max_gpus_per_server": float, "max_servers": int, "cpu_limit": float}
LISTS = ("profiles", "gpu_types")


def form_to_override(form: dict[str, str]) -> dict:
    body: dict = {}
    for key, value in form.items():
        value = (value or "").strip()
        if not value:
            continue
        if key in NUMBERS:
            try:
                number = NUMBERS[key](value)
            except ValueError:
                kind = "a whole number" if NUMBERS[key] is int else "a number"
                raise AdminError(400, f"'{key}' must be {kind}, got {value!r}.") from None
            body[key] = int(number) if isinstance(number, float) and number.is_integer() else number
        elif key in LISTS:
            body[key] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            body[key] = value
    if "expires" not in body:
        raise AdminError(400, "Give the override an expiry date (the last day it applies is the day before).")
    body.setdefault("user", "")
    body.setdefault("reason", "")
    return body
