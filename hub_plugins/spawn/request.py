"""Turn ``user_options`` (REST JSON body or the spawn form) into a validated spawn request (pure).

``user_options`` is user input: every key is checked, unknown keys are refused, and each error
says what to change. The same function serves the REST API and the form, so both behave alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..gpu.devices import valid_type_name
from .profiles import Catalog, Profile

# Keys a request may carry. Later features add theirs here (e.g. "queue").
KNOWN_KEYS = ("profile", "gpus", "gpu_type")


class RequestError(ValueError):
    """A request a person must fix; the message says how."""


@dataclass(frozen=True)
class SpawnRequest:
    profile: Profile
    gpus: int
    gpu_type: str | None  # None: let the hub choose among allowed types (only when gpus > 0)
    extras: tuple[tuple[str, Any], ...] = ()  # validated keys of later features

    def extra(self, key: str, default=None):
        return dict(self.extras).get(key, default)


def _or_list(items) -> str:
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def parse_gpus(value, max_per_server: int) -> int:
    if isinstance(value, bool) or value is None:
        raise RequestError(f"'gpus' must be a whole number from 0 to {max_per_server}, got {value!r}.")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= max_per_server:
        raise RequestError(f"'gpus' must be a whole number from 0 to {max_per_server}, got {value!r}.")
    return value


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
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise RequestError(
            f"Unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}. "
            f"Allowed: {', '.join(allowed)}."
        )

    name = options.get("profile", catalog.default)
    if not isinstance(name, str) or not name:
        raise RequestError(f"'profile' must be a profile name: {_or_list(catalog.names)}.")
    profile = catalog.get(name)
    if profile is None:
        raise RequestError(f"Unknown profile '{name[:64]}'. Available: {', '.join(catalog.names)}.")

    gpus = profile.gpu_default if "gpus" not in options else parse_gpus(options["gpus"], max_per_server)
    if gpus not in profile.gpu_counts:
        raise RequestError(
            f"Profile '{profile.name}' allows {_or_list(profile.gpu_counts)} GPUs; you asked for {gpus}."
        )

    gpu_type = options.get("gpu_type")
    if gpu_type in ("", None) or gpus == 0:
        gpu_type = None
    else:
        if not isinstance(gpu_type, str) or not valid_type_name(gpu_type):
            raise RequestError(f"'gpu_type' must be a GPU type name such as 'A100-80GB', got {gpu_type!r:.80}.")
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


_RUNTIME = re.compile(r"^(?:(\d+)h)?\s*(?:(\d+)m)?$")
MIN_RUNTIME, MAX_RUNTIME = 5 * 60, 30 * 24 * 3600


def parse_flag(value) -> bool:
    """'queue': true/false (JSON), 'on' (a checked box), 'true'/'false'/'1'/'0' (strings)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("on", "true", "1", "yes"):
        return True
    if isinstance(value, str) and value.lower() in ("off", "false", "0", "no", ""):
        return False
    raise RequestError(f"'queue' must be true or false, got {value!r:.40}.")


def parse_runtime(value) -> int | None:
    """'runtime': seconds (a number) or '2h', '90m', '1h30m'. None/'' = until you stop it."""
    if value in (None, ""):
        return None
    seconds = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = int(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit():
            seconds = int(text)
        else:
            m = _RUNTIME.match(text)
            if m and (m.group(1) or m.group(2)):
                seconds = int(m.group(1) or 0) * 3600 + int(m.group(2) or 0) * 60
    if seconds is None or not MIN_RUNTIME <= seconds <= MAX_RUNTIME:
        raise RequestError(
            f"'runtime' must be a duration from 5 minutes to 30 days, such as '2h', '90m' or 7200 "
            f"(seconds), got {value!r:.40}."
        )
    return seconds


def parse_project(value) -> str:
    if not isinstance(value, str) or not re.match(r"^[a-z0-9][a-z0-9-]{0,62}$", value):
        raise RequestError(f"'project' must be a project name, got {value!r:.40}.")
    return value


# The keys every backend accepts beyond profile/gpus/gpu_type (``GPUSpawnerMixin``).
STANDARD_EXTRAS = {"queue": parse_flag, "runtime": parse_runtime, "project": parse_project}


def from_form(form_data: dict[str, list[str]]) -> dict[str, Any]:
    """Form fields arrive as lists of strings; keep single values, drop empty ones."""
    out: dict[str, Any] = {}
    for key, values in form_data.items():
        if key.startswith("_"):  # e.g. _xsrf
            continue
        vals = [v for v in values if v != ""]
        if not vals:
            continue
        out[key] = vals[0] if len(vals) == 1 else vals
    return out
