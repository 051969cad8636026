"""Turn ``user_options`` (REST JSON body or the spawn form) into a validated spawn request (pure).

``user_options`` is user input: every key is checked, unknown keys are refused, and each error
says what to change. The same function serves the REST API and the form, so both behave alike.
The checks themselves (whole numbers, ASCII digits, durations, lengths) are ``validation.py``'s,
shared with the services.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..gpu.devices import valid_type_name
from .profiles import Catalog, Profile
from ..validation import InputError, duration, flag, names_list, or_list, shown, text, whole_number

# Keys a request may carry. Later features add theirs here (e.g. "queue").
KNOWN_KEYS = ("profile", "gpus", "gpu_type")


# A request a person must fix; the message says how (one error type for every input surface).
RequestError = InputError


@dataclass(frozen=True)
class SpawnRequest:
    profile: Profile
    gpus: int
    gpu_type: str | None  # None: let the hub choose among allowed types (only when gpus > 0)
    extras: tuple[tuple[str, Any], ...] = ()  # validated keys of later features

    def extra(self, key: str, default=None):
        return dict(self.extras).get(key, default)


_or_list = or_list


def parse_gpus(value, max_per_server: int) -> int:
    return whole_number(value, "gpus", 0, max_per_server)


def parse(
    options: dict[str, Any] | None,
    catalog: Catalog,
    hub_types: list[str],
    max_per_server: int = 4,
    extra_keys: dict[str, Any] | None = None,
) -> SpawnRequest:
    """Validate ``options``. ``extra_keys`` maps further allowed keys to validators
    (callables that return the clean value or raise RequestError)."""
    extra_keys = extra_keys or {}
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise RequestError("The request body must be a JSON object such as {\"profile\": \"minimal\", \"gpus\": 1}.")
    allowed = (*KNOWN_KEYS, *extra_keys)
    unknown = sorted((k for k in options if k not in allowed), key=str)
    if unknown:
        raise RequestError(
            f"Unknown option{'s' if len(unknown) > 1 else ''} {names_list(unknown)}. "
            f"Allowed: {', '.join(allowed)}."
        )

    name = options.get("profile", catalog.default)
    if not isinstance(name, str) or not name:
        raise RequestError(f"'profile' must be a profile name: {_or_list(catalog.names)}.")
    profile = catalog.get(name)
    if profile is None:
        raise RequestError(f"Unknown profile {shown(name, 64)}. Available: {', '.join(catalog.names)}.")

    gpus = profile.gpu_default if "gpus" not in options else parse_gpus(options["gpus"], max_per_server)
    if gpus not in profile.gpu_counts:
        raise RequestError(
            f"Profile '{profile.name}' allows {_or_list(profile.gpu_counts)} GPUs; you asked for {gpus}."
        )

    gpu_type = options.get("gpu_type")
    if gpu_type in ("", None):
        gpu_type = None
    else:
        if not isinstance(gpu_type, str) or len(gpu_type) > 128 or not valid_type_name(gpu_type):
            raise RequestError(f"'gpu_type' must be a GPU type name such as 'A100-80GB', got {shown(gpu_type, 80)}.")
        if gpus == 0:
            raise RequestError(f"'gpu_type' is for GPU servers: ask for 1 or more GPUs of {gpu_type}, "
                               "or leave 'gpu_type' out for a CPU-only server.")
        if gpu_type not in hub_types:
            have = ", ".join(hub_types) if hub_types else "no GPUs"
            raise RequestError(f"Unknown GPU type '{gpu_type}'. This hub has: {have}.")
        if not profile.allows_type(gpu_type):
            raise RequestError(
                f"Profile '{profile.name}' does not run on {gpu_type}; it allows: "
                f"{', '.join(sorted(profile.gpu_types or []))}."
            )
    if gpus and not hub_types:
        raise RequestError(f"This hub has no GPUs right now; ask for 0 GPUs (you asked for {gpus}).")

    extras = []
    for key, check in extra_keys.items():
        if key in options:
            extras.append((key, check(options[key])))
    return SpawnRequest(profile, gpus, gpu_type, tuple(extras))


MIN_RUNTIME, MAX_RUNTIME = 5 * 60, 30 * 24 * 3600


def parse_flag(value) -> bool:
    """'queue': true/false (JSON), 'on' (a checked box), 'true'/'false'/'1'/'0' (strings)."""
    return flag(value, "queue")


def parse_runtime(value) -> int | None:
    """'runtime': seconds (a number) or '2h', '90m', '1h30m'. None/'' = until you stop it."""
    return duration(value, "runtime", MIN_RUNTIME, MAX_RUNTIME,
                    "from 5 minutes to 30 days, such as '2h', '90m' or 7200 (seconds)")


def parse_project(value) -> str:
    return text(value, "project", 63, pattern=r"[a-z0-9][a-z0-9-]{0,62}", what="a project name")


def parse_preemptible(value) -> bool:
    """'preemptible': a JSON boolean only. Unlike 'queue' no strings: asking to be stoppable by
    others is a choice a typo must not make (the form's checked box arrives as True, see
    :func:`from_form`)."""
    if isinstance(value, bool):
        return value
    raise RequestError(f"'preemptible' must be true or false (a JSON boolean), got {shown(value)}. "
                       "Send true to borrow idle GPUs beyond your quota (the server may be stopped when "
                       "others need them), or leave it out.")


# The keys every backend accepts beyond profile/gpus/gpu_type (``GPUSpawnerMixin``).
STANDARD_EXTRAS = {"queue": parse_flag, "runtime": parse_runtime, "project": parse_project,
                   "preemptible": parse_preemptible}
# the form's checkboxes that only REST's JSON booleans may otherwise set: a checked box is "on"
FORM_BOOLEANS = ("preemptible",)


def from_form(form_data: dict[str, list[str]]) -> dict[str, Any]:
    """Form fields arrive as lists of strings; keep single values, drop empty ones. The form's
    type select stays filled when 0 GPUs are picked: there it means nothing, so it is dropped
    (a REST request naming a type with 0 GPUs is refused)."""
    out: dict[str, Any] = {}
    for key, values in form_data.items():
        if key.startswith("_"):  # e.g. _xsrf
            continue
        vals = [v for v in values if v != ""]
        if not vals:
            continue
        out[key] = vals[0] if len(vals) == 1 else vals
    if out.get("gpus") == "0":
        out.pop("gpu_type", None)
    for key in FORM_BOOLEANS:
        if key in out:
            out[key] = out[key] == "on"
    return out
