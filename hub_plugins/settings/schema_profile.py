"""The schema of one profile file, ``profiles/<name>.yaml`` (loaded by ``hub_plugins/profiles.py``)."""

from __future__ import annotations

from ..envs.spec import NPM_VERSION, PIN
from .patterns import GPU_TYPE, SIZE, names_or_all

# The profile's environment, exact pins (hub_plugins/envs/spec.py): the local environment, the
# Docker image and its tag are all made from it.
ENVIRONMENT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["pip", "as_of"],
    "properties": {
        "python": {"type": "string", "pattern": r"^3\.[0-9]{1,2}$",
                   "description": "the system Python (python3.X) the environment is made from"},
        "as_of": {"type": "string", "format": "date", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
                  "description": "dependencies of the pins resolve as the registries stood on this day"},
        "version_of": {"type": "string", "minLength": 1, "description": "whose version starts the image tag"},
        "pip": {"type": "array", "minItems": 1, "uniqueItems": True,
                "items": {"type": "string", "pattern": PIN.pattern},
                "description": "exact pins, name==version"},
        "npm": {"type": "object", "propertyNames": {"pattern": r"^(@[a-z0-9-]+/)?[a-z0-9][a-z0-9._-]*$"},
                "additionalProperties": {"type": "string", "pattern": NPM_VERSION},
                "description": "npm package -> exact version; 'node' (Node.js from npm) is installed first"},
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
        "groups": names_or_all,
        "env": {
            "type": "object",
            "propertyNames": {"pattern": r"^[A-Z_][A-Z0-9_]*$"},
            "additionalProperties": {"type": "string"},
        },
        "environment": ENVIRONMENT,
    },
}
