"""The schema of ``gpulab.yaml`` (JSON Schema, validated on load); the ``auth`` section is in
``schema_auth.py``, the cluster sections in ``schema_cluster.py``, a profile file's schema in
``schema_profile.py``.

Every mapping is closed (``additionalProperties: false``) so a misspelt key is an error that names
the key, never a silently ignored setting. Defaults live in ``schema_defaults.py``, one place
(re-exported here as :data:`DEFAULTS`).
"""

from __future__ import annotations

from .patterns import GPU_TYPE, NAME, PROFILE_NAME, SIZE  # noqa: F401 - re-exported
from .patterns import AMOUNT, names_or_all
from .schema_auth import _URL, AUTH, _closed
from .schema_cluster import KUBERNETES, SLURM
from .schema_defaults import CULL_POLICY_DEFAULTS, DEFAULTS  # noqa: F401 - re-exported
from .schema_notify import NOTIFICATIONS
from .schema_queue import QUEUE
from .schema_bounds import bound_durations
from .schema_profile import PROFILE_SCHEMA  # noqa: F401 - re-exported

# Every limit is bounded: 1e308 GPUs is not a limit but a typo (null means unlimited).
LIMITS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "max_gpus": {**AMOUNT, "maximum": 4096, "description": "GPU-equivalents at a time, summed over all servers"},
        "max_gpus_per_server": {**AMOUNT, "maximum": 4096, "description": "GPU-equivalents in one server"},
        "max_servers": {"type": ["integer", "null"], "minimum": 0, "maximum": 10000},
        "profiles": {**names_or_all, "description": "'*' (all) or a list of profile names"},
        "gpu_types": {**names_or_all, "description": "'*' (all) or a list of GPU type names"},
        "cpu_limit": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 4096},
        "mem_limit": {"type": ["string", "integer", "null"], "pattern": SIZE, "maxLength": 24,
                      "minimum": 0, "maximum": 2**60},
        "budget": {**AMOUNT, "maximum": 1e12, "description": "per budget period, in budgets.unit (null = unlimited)"},
        "max_runtime_hours": {**AMOUNT, "maximum": 8784, "description": "longest runtime a user may choose at spawn"},
    },
}

# a quota group: its limits, and optionally the people in it (JupyterHub's load_groups adds them
# at start-up, creating accounts that have not signed in yet; it never removes anyone)
GROUP = {
    **LIMITS,
    "properties": {
        **LIMITS["properties"],
        "members": {"type": "array", "items": {"type": "string", "pattern": NAME}, "uniqueItems": True,
                    "description": "hub users put in this group at start-up (native sign-in only)"},
    },
}

OVERRIDE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["user", "expires", "reason"],
    "properties": {
        "user": {"type": "string", "pattern": NAME, "maxLength": 255},
        "expires": {"type": ["string", "null"], "format": "date", "maxLength": 10},
        "reason": {"type": "string", "minLength": 1, "maxLength": 500},
        "approved_by": {"type": "string", "maxLength": 255, "description": "who approved it (at most 255 characters)"},
        **LIMITS["properties"],
    },
}

TOKEN = {
    "type": "string",
    "description": "a token of at least 32 characters, or 'env:VAR' / 'file:/path' to read it",
    "anyOf": [{"pattern": "^(env|file):.+$"}, {"minLength": 32, "pattern": "^[A-Za-z0-9_-]+$"}],
}

SERVICES = _closed({
    "quotas": _closed({
        "enabled": {"type": "boolean"},
        "url": {"description": "'auto' (a free port on 127.0.0.1) or where the service listens",
                "anyOf": [{"const": "auto"}, _URL]},
    }),
})

ENVIRONMENTS = _closed({
    "dir": {"type": "string", "minLength": 1,
            "description": "where the profiles' environments are built (local backend); 'auto' = "
                           "/opt/gpulab/envs when the hub runs as root, else ~/.local/share/gpulab/envs"},
    "build_missing": {"type": "boolean",
                      "description": "the hub builds missing environments in the background (its 'envs' service)"},
})

GPULAB_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "hub": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "bind_url": {"type": "string", "pattern": r"^https?://[^/\s]+(/.*)?$"},
                "hub_bind_url": {"type": "string", "pattern": r"^https?://[^/\s]+(/.*)?$"},
                "proxy_api_url": {"type": "string", "pattern": r"^https?://[^/\s]+/?$"},
                "state_dir": {"type": "string", "minLength": 1},
                "db_url": {"type": ["string", "null"], "pattern": r"^(sqlite|postgresql)(\+\w+)?://"},
                "admin_users": {"type": "array", "items": {"type": "string", "pattern": NAME}},
                "api_tokens": {
                    "type": "object",
                    "propertyNames": {"pattern": r"^[a-z0-9][a-z0-9-]*$"},
                    "additionalProperties": TOKEN,
                },
                "api_token_scopes": {
                    "type": "object",
                    "description": "api_tokens name -> the only scopes it gets (default: the admin role)",
                    "additionalProperties": {"type": "array", "items": {"type": "string", "minLength": 1},
                                             "minItems": 1, "uniqueItems": True},
                },
                "log_level": {"enum": ["DEBUG", "INFO", "WARN", "ERROR", "CRITICAL"]},
                "concurrent_spawn_limit": {"type": "integer", "minimum": 0},
                "poll_interval": {"type": "integer", "minimum": 1, "maximum": 3600},
                "start_timeout": {"type": "integer", "minimum": 5},
                "http_timeout": {"type": "integer", "minimum": 5},
                "sqlite_synchronous": {"enum": ["normal", "full"],
                                       "description": "JupyterHub's own SQLite file: sync the disk at "
                                                      "checkpoints (normal) or at every commit (full)"},
                "gc_sweep_minutes": {"type": "number", "minimum": 0, "maximum": 10080,
                                     "description": "minutes between the hub's full garbage "
                                                    "collections (0: Python's collector as it is)"},
                "slow_spawn_seconds": {"type": "number", "minimum": 0, "maximum": 60,
                                       "description": "how long a spawn request waits for the server "
                                                      "before answering 202 / showing the progress page"},
            },
        },
        "backend": {"enum": ["local", "docker", "slurm", "kubernetes"]},
        "profiles_dir": {"type": ["string", "null"], "minLength": 1,
                         "description": "null: the profiles shipped with gpulab"},
        "default_profile": {"type": "string", "pattern": PROFILE_NAME},
        "gpus": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "inventory": {"type": "string", "minLength": 1},
                "max_per_server": {"type": "integer", "minimum": 0, "maximum": 16},
                "refresh_seconds": {"type": "integer", "minimum": 1},
                "sharing": {
                    "type": "array",
                    "description": "GPUs shared by several servers, first match wins (docs/sharing.md)",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["gpus", "shares"],
                        "properties": {
                            "gpus": {
                                "description": "a GPU type ('*': every GPU), or a list of GPU indices and UUIDs",
                                "anyOf": [
                                    {"type": "string", "pattern": r"^(\*|[A-Za-z0-9][A-Za-z0-9._-]*)$"},
                                    {"type": "array", "minItems": 1, "items": {"anyOf": [
                                        {"type": "integer", "minimum": 0},
                                        {"type": "string", "pattern": r"^GPU-[0-9A-Fa-f-]+$"}]}},
                                ],
                            },
                            "shares": {"type": "integer", "minimum": 2, "maximum": 64,
                                       "description": "servers per GPU; each share weighs 1/shares GPU"},
                        },
                    },
                },
            },
        },
        "auth": AUTH,
        "local": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "system_users": {"enum": ["auto", "never"]},
                "system_user_prefix": {"type": "string", "pattern": r"^[a-z_][a-z0-9_-]{0,15}$"},
                "home_root": {"type": "string", "minLength": 1},
                "limits": {"enum": ["auto", "systemd", "cgroup", "off"],
                           "description": "how servers are held to memory, CPU and GPU devices: auto (a systemd "
                                          "scope where systemd runs the host, else the cgroup filesystem), systemd, "
                                          "cgroup or off"},
                "port_range": {"type": "string", "maxLength": 40,
                               "description": "the ports servers listen on: auto (the 10,000 just below the kernel's "
                                              "ephemeral range), LO-HI, or '' for JupyterHub's random port"},
            },
        },
        "billing": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "currency": {"type": "string", "pattern": r"^[A-Z]{3}$"},
                "rates": {
                    "type": "object",
                    "description": "price per device-hour by GPU type ('*' = types without their own)",
                    "propertyNames": {"anyOf": [{"const": "*"}, {"pattern": GPU_TYPE}]},
                    "additionalProperties": {"type": "number", "minimum": 0},
                },
                "cpu_rate": {"type": "number", "minimum": 0, "description": "price per hour of a CPU-only server"},
                "minimum_charge_seconds": {"type": "integer", "minimum": 0, "maximum": 86400},
                "port": {"type": "integer", "minimum": 1024, "maximum": 65535,
                         "description": "where the billing service listens (on 127.0.0.1)"},
                "heartbeat_seconds": {"type": "integer", "minimum": 1, "maximum": 3600},
                "on_accounting_failure": {"enum": ["open", "closed"]},
                "grid_intensity_g_per_kwh": {"type": "number", "minimum": 0},
                "nominal_power_watts": {
                    "type": "object",
                    "propertyNames": {"anyOf": [{"const": "*"}, {"pattern": GPU_TYPE}]},
                    "additionalProperties": {"type": "number", "minimum": 0},
                },
            },
        },
        "budgets": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "unit": {"enum": ["gpu_hours", "money"]},
                "period": {"type": "string", "pattern": r"^(week|month|credits|rolling:[1-9][0-9]{0,3}d)$",
                           "description": "week, month, rolling:<N>d or credits"},
                "refill_per_day": {"type": "number", "minimum": 0},
                "enforce_running": {"type": "boolean"},
                "grace_minutes": {"type": "integer", "minimum": 0},
                "projects": {
                    "type": "object",
                    "propertyNames": {"pattern": r"^[a-z0-9][a-z0-9-]{0,62}$"},
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["budget"],
                        "properties": {
                            "budget": {"type": "number", "minimum": 0},
                            "users": {"type": "array", "items": {"type": "string", "pattern": NAME}},
                            "groups": {"type": "array", "items": {"type": "string", "pattern": NAME}},
                        },
                    },
                },
            },
        },
        "culler": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean"},
                "interval_seconds": {"type": "number", "minimum": 1},
                "gpu_idle_threshold": {"type": "number", "minimum": 0, "maximum": 100,
                                       "description": "percent utilisation below which a GPU counts as idle"},
                "cpu_idle_threshold": {"type": "number", "minimum": 0},
                "policies": {
                    "type": "array",
                    "minItems": 1,
                    "description": "first match wins",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "match": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "profiles": {"type": "array", "items": {"type": "string", "pattern": PROFILE_NAME}},
                                    "groups": {"type": "array", "items": {"type": "string", "pattern": NAME}},
                                    "gpu": {"type": "boolean"},
                                },
                            },
                            "gpu_idle_minutes": {"type": ["number", "null"], "exclusiveMinimum": 0},
                            "inactive_minutes": {"type": ["number", "null"], "exclusiveMinimum": 0},
                            "max_age_hours": {"type": ["number", "null"], "exclusiveMinimum": 0},
                            "startup_grace_minutes": {"type": "number", "minimum": 0},
                        },
                    },
                },
                "scarcity": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"above": {"type": "number", "minimum": 0, "maximum": 1},
                                   "factor": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}},
                },
                "warn_at": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}},
                "keep_alive_max_hours": {"type": "number", "minimum": 0},
                "keep_samples_hours": {"type": "number", "exclusiveMinimum": 0},
                "external_cullers": {
                    "type": "array", "uniqueItems": True,
                    "items": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9-]*$"},
                    "description": "hub services that cull idle servers (e.g. the stock "
                                   "jupyterhub-idle-culler): their stops are recorded as culls",
                },
                "webhooks": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "default": {"type": ["string", "null"], "pattern": r"^https?://"},
                        "groups": {"type": "object", "additionalProperties": {"type": "string", "pattern": r"^https?://"}},
                        "users": {"type": "object", "additionalProperties": {"type": "string", "pattern": r"^https?://"}},
                    },
                },
                "metrics": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "source": {"enum": ["auto", "nvml", "simulated", "prometheus"]},
                        "simulated_file": {"type": ["string", "null"]},
                        "prometheus_url": {"type": ["string", "null"], "pattern": r"^https?://"},
                    },
                },
            },
        },
        "queue": QUEUE,
        "docker": {
            "type": "object",
            "additionalProperties": False,
            "description": "the Docker backend (backend: docker), see docs/docker.md",
            "properties": {
                "host": {"type": ["string", "null"], "pattern": r"^(unix|tcp|ssh)://",
                         "description": "engine socket; null = DOCKER_HOST or the local socket"},
                "pull_policy": {"enum": ["never", "ifnotpresent", "always"],
                                "description": "never: images are built here (make images), no registry"},
                "name_prefix": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_.-]{0,31}$",
                                "description": "containers <prefix>-<user>[--<server>], volumes <prefix>-home-<user>"},
                "home_mount": {"type": "string", "pattern": r"^/[^\s]*$"},
                "shm_size": {"type": ["string", "integer", "null"], "pattern": SIZE,
                             "description": "null = half the memory limit, at most 8G"},
                "pids_limit": {"type": "integer", "minimum": 0},
                "remove_orphans": {"type": "boolean"},
                "orphan_grace_seconds": {"type": "number", "minimum": 0},
                "mps": {
                    "type": "object",
                    "additionalProperties": False,
                    "description": "NVIDIA MPS for shared GPUs (docs/sharing.md); off: time-slicing",
                    "properties": {
                        "enabled": {"type": "boolean"},
                        "uid": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1,
                                "description": "the one UID every MPS sharer runs as (an MPS server serves one user)"},
                        "image": {"type": ["string", "null"], "minLength": 1,
                                  "description": "the daemon's image; null = the first sharer's"},
                        "control_command": {"type": "array", "minItems": 1,
                                            "items": {"type": "string", "minLength": 1},
                                            "description": "the MPS control daemon in the foreground"},
                    },
                },
            },
        },
        "mlflow": {
            "type": "object",
            "additionalProperties": False,
            "description": "MLflow tracking as a hub service at /services/mlflow/, see docs/mlflow.md",
            "properties": {
                "enabled": {"type": "boolean"},
                "port": {"type": ["integer", "null"], "minimum": 1, "maximum": 65535,
                         "description": "loopback port of the service; null = a free one at start"},
                "backend_store_uri": {"type": ["string", "null"], "pattern": r"^(sqlite|postgresql|mysql)(\+\w+)?://",
                                      "description": "null = sqlite in state_dir/mlflow"},
                "artifacts_destination": {"type": ["string", "null"], "minLength": 1,
                                          "description": "a directory or s3://... ; null = state_dir/mlflow/artifacts"},
                "tracking_uri": {"type": ["string", "null"], "pattern": r"^https?://",
                                 "description": "the URL servers use; null = hub.bind_url + /services/mlflow"},
                "token_lifetime_days": {"type": "integer", "minimum": 1, "maximum": 3650},
                "gpu_metrics": {"type": "boolean", "description": "log GPU/CPU metrics to every run"},
                "gpu_metrics_interval": {"type": "integer", "minimum": 1, "maximum": 3600},
            },
        },
        "quotas": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "resolve": {"enum": ["most_generous", "least_generous", "first_match"]},
                "enforcement": {"enum": ["hard", "soft"]},
                "default": LIMITS,
                "groups": {
                    "type": ["object", "null"],
                    "propertyNames": {"pattern": NAME},
                    "additionalProperties": {"anyOf": [GROUP, {"type": "null"}]},
                },
                "overrides": {"type": ["array", "null"], "items": OVERRIDE},
            },
        },
        "services": SERVICES,
        "environments": ENVIRONMENTS,
        "notifications": NOTIFICATIONS,
    },
}

GPULAB_SCHEMA["properties"].update(slurm=SLURM, kubernetes=KUBERNETES)
bound_durations(GPULAB_SCHEMA)
bound_durations(OVERRIDE)
