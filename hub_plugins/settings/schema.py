"""The schema of ``gpulab.yaml`` and of ``profiles/*.yaml`` (JSON Schema, validated on load).

Every mapping is closed (``additionalProperties: false``) so a misspelt key is an error that names
the key, never a silently ignored setting. Defaults live in :data:`DEFAULTS`, one place.
"""

from __future__ import annotations

NAME = r"^[A-Za-z0-9][A-Za-z0-9._@-]*$"  # hub user / group names we accept in config
PROFILE_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
SIZE = r"^[0-9]+(\.[0-9]+)?[KMGT]?i?B?$"
GPU_TYPE = r"^[A-Za-z0-9][A-Za-z0-9._-]*(:([0-9]+g\.[0-9]+gb(\+me)?|shared))?$"

_amount = {"type": ["number", "null"], "minimum": 0}
_names_or_all = {
    "description": "'*' (all) or a list of names",
    "oneOf": [
        {"const": "*"},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True},
        {"type": "null"},
    ]
}

LIMITS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "max_gpus": {**_amount, "description": "GPU-equivalents at a time, summed over all servers"},
        "max_gpus_per_server": {**_amount, "description": "GPU-equivalents in one server"},
        "max_servers": {"type": ["integer", "null"], "minimum": 0},
        "profiles": {**_names_or_all, "description": "'*' (all) or a list of profile names"},
        "gpu_types": {**_names_or_all, "description": "'*' (all) or a list of GPU type names"},
        "cpu_limit": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "mem_limit": {"type": ["string", "integer", "null"], "pattern": SIZE},
    },
}

OVERRIDE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["user", "expires", "reason"],
    "properties": {
        "user": {"type": "string", "pattern": NAME},
        "expires": {"type": ["string", "null"], "format": "date"},
        "reason": {"type": "string", "minLength": 1},
        "approved_by": {"type": "string"},
        **LIMITS["properties"],
    },
}

TOKEN = {
    "type": "string",
    "description": "a token of at least 32 characters, or 'env:VAR' / 'file:/path' to read it",
    "anyOf": [{"pattern": "^(env|file):.+$"}, {"minLength": 32, "pattern": "^[A-Za-z0-9_-]+$"}],
}

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
                "log_level": {"enum": ["DEBUG", "INFO", "WARN", "ERROR", "CRITICAL"]},
                "concurrent_spawn_limit": {"type": "integer", "minimum": 0},
                "poll_interval": {"type": "integer", "minimum": 1, "maximum": 3600},
                "start_timeout": {"type": "integer", "minimum": 5},
                "http_timeout": {"type": "integer", "minimum": 5},
            },
        },
        "backend": {"enum": ["local", "docker", "slurm", "kubernetes"]},
        "profiles_dir": {"type": "string", "minLength": 1},
        "default_profile": {"type": "string", "pattern": PROFILE_NAME},
        "gpus": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "inventory": {"type": "string", "minLength": 1},
                "max_per_server": {"type": "integer", "minimum": 0, "maximum": 16},
                "refresh_seconds": {"type": "integer", "minimum": 1},
            },
        },
        "auth": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "kind": {"enum": ["native"]},
                "native": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "open_signup": {"type": "boolean"},
                        "minimum_password_length": {"type": "integer", "minimum": 8},
                        "check_common_password": {"type": "boolean"},
                        "allowed_failed_logins": {"type": "integer", "minimum": 0},
                        "seconds_before_next_try": {"type": "integer", "minimum": 0},
                    },
                },
            },
        },
        "local": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "system_users": {"enum": ["auto", "never"]},
                "system_user_prefix": {"type": "string", "pattern": r"^[a-z_][a-z0-9_-]{0,15}$"},
                "home_root": {"type": "string", "minLength": 1},
            },
        },
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
                    "additionalProperties": {"anyOf": [LIMITS, {"type": "null"}]},
                },
                "overrides": {"type": ["array", "null"], "items": OVERRIDE},
            },
        },
    },
}

DEFAULTS = {
    "hub": {
        "bind_url": "http://127.0.0.1:8000",
        "hub_bind_url": "http://127.0.0.1:8081",
        "proxy_api_url": "http://127.0.0.1:8001",
        "state_dir": "state",
        "db_url": None,
        "admin_users": ["admin"],
        "api_tokens": {},
        "log_level": "INFO",
        "concurrent_spawn_limit": 100,
        "poll_interval": 10,
        "start_timeout": 120,
        "http_timeout": 60,
    },
    "backend": "local",
    "profiles_dir": "../profiles",
    "default_profile": "minimal",
    "gpus": {"inventory": "auto", "max_per_server": 4, "refresh_seconds": 30},
    "auth": {
        "kind": "native",
        "native": {
            "open_signup": False,
            "minimum_password_length": 10,
            "check_common_password": True,
            "allowed_failed_logins": 5,
            "seconds_before_next_try": 300,
        },
    },
    "local": {"system_users": "auto", "system_user_prefix": "jupyter-", "home_root": "/home"},
    "docker": {
        "host": None,
        "pull_policy": "never",
        "name_prefix": "gpulab",
        "home_mount": "/home/jovyan",
        "shm_size": None,
        "pids_limit": 16384,
        "remove_orphans": True,
        "orphan_grace_seconds": 10,
    },
    "mlflow": {
        "enabled": True,
        "port": None,
        "backend_store_uri": None,
        "artifacts_destination": None,
        "tracking_uri": None,
        "token_lifetime_days": 90,
        "gpu_metrics": False,
        "gpu_metrics_interval": 10,
    },
    "quotas": {
        "resolve": "most_generous",
        "enforcement": "hard",
        "default": {"max_gpus": 1, "max_servers": 2},
        "groups": {},
        "overrides": [],
    },
}

PROFILE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["display_name"],
    "properties": {
        "display_name": {"type": "string", "minLength": 1, "maxLength": 80},
        "description": {"type": "string", "maxLength": 500},
        "order": {"type": "integer"},
        "default": {"type": "boolean"},
        "image": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?$"},
        "default_url": {"type": "string", "pattern": r"^/[A-Za-z0-9/._-]*$"},
        "local": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "prefix": {"type": "string", "minLength": 1,
                           "description": "a Python environment with jupyterhub-singleuser; '{hub}' = the hub's own"},
                "args": {"type": "array", "items": {"type": "string"}},
            },
        },
        "gpus": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "counts": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0, "maximum": 16},
                    "minItems": 1,
                    "uniqueItems": True,
                },
                "default": {"type": "integer", "minimum": 0, "maximum": 16},
                "types": {
                    "oneOf": [
                        {"const": "*"},
                        {"type": "array", "items": {"type": "string", "pattern": GPU_TYPE}, "minItems": 1},
                    ]
                },
            },
        },
        "resources": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "cpu_limit": {"type": "number", "exclusiveMinimum": 0},
                "cpu_guarantee": {"type": "number", "exclusiveMinimum": 0},
                "mem_limit": {"type": ["string", "integer"], "pattern": SIZE},
                "mem_guarantee": {"type": ["string", "integer"], "pattern": SIZE},
            },
        },
        "groups": _names_or_all,
        "env": {
            "type": "object",
            "propertyNames": {"pattern": r"^[A-Z_][A-Z0-9_]*$"},
            "additionalProperties": {"type": "string"},
        },
    },
}
