"""The ``notifications`` section of ``gpulab.yaml``: how gpulab sends email (people choose on
their usage page whether and what to receive; defaults in ``schema_defaults.py``)."""

from __future__ import annotations

from .schema_auth import _URL, _closed

NOTIFICATIONS = _closed({
    "enabled": {"type": "boolean", "description": "send notifications at all (email needs smtp.host too)"},
    "poll_seconds": {"type": "number", "minimum": 1, "maximum": 3600,
                     "description": "how often the notifier looks for new events"},
    "hub_url": {"description": "the address people open, for links in messages; null: hub.bind_url",
                "anyOf": [{"type": "null"}, _URL]},
    "budget_warn_at": {"anyOf": [{"type": "null"}, {"type": "number", "exclusiveMinimum": 0, "maximum": 1}],
                       "description": "tell people when this share of their personal budget is spent; null: never"},
    "give_up_after_minutes": {"type": "number", "minimum": 1, "maximum": 10080,
                              "description": "a message that could not be sent for this long is dropped"},
    "smtp": _closed({
        "host": {"type": ["string", "null"], "pattern": r"^[A-Za-z0-9.:\[\]-]{1,253}$",
                 "description": "the mail server; null: no email"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "ssl": {"type": "boolean", "description": "connect with TLS (port 465)"},
        "starttls": {"type": "boolean", "description": "upgrade to TLS after connecting (port 587)"},
        "username": {"type": ["string", "null"], "minLength": 1, "maxLength": 255},
        "password_file": {"type": ["string", "null"], "minLength": 1,
                          "description": "a file holding the password (never the password in this file)"},
        "sender": {"type": "string", "minLength": 3, "maxLength": 254, "pattern": r"^[^\r\n]+$",
                   "description": "the From line, e.g. 'gpulab <gpulab@example.org>'"},
        "timeout_seconds": {"type": "number", "minimum": 1, "maximum": 300},
    }),
})
