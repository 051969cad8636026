"""The admin page's "add an override" form -> the JSON body the API takes (pure).

Form fields are strings; empty means "not set". Lists are comma-separated.
"""

from __future__ import annotations

from hub_plugins.validation import InputError, number, whole_number

from .core import AdminError

# The bounds of the quotas schema (LIMITS): the same numbers the API and gpulab.yaml accept.
NUMBERS = {"max_gpus": (0, 4096), "max_gpus_per_server": (0, 4096), "cpu_limit": (0, 4096)}
WHOLE = {"max_servers": (0, 10000)}
LISTS = ("profiles", "gpu_types")


def form_to_override(form: dict[str, str]) -> dict:
    body: dict = {}
    for key, value in form.items():
        value = (value or "").strip()
        if not value:
            continue
        if key in NUMBERS or key in WHOLE:
            try:
                if key in WHOLE:
                    body[key] = whole_number(value, key, *WHOLE[key])
                else:
                    body[key] = number(value, key, *NUMBERS[key], lo_open=key == "cpu_limit")
            except InputError as e:
                raise AdminError(e.status, str(e)) from None
        elif key in LISTS:
            body[key] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            body[key] = value
    if "expires" not in body:
        raise AdminError(400, "Give the override an expiry date (the last day it applies is the day before).")
    body.setdefault("user", "")
    body.setdefault("reason", "")
    return body
