"""The ``notifications`` section of ``gpulab.yaml``: how gpulab sends email and which chat
servers people's webhooks may reach (people choose on their usage page whether and what to
receive; defaults in ``schema_defaults.py``)."""

from __future__ import annotations

from .schema_auth import _URL, _closed

# a host name or an IPv4 address, or an IPv6 one in brackets, with an optional port
_HOST = r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$"

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
    # people type webhook URLs; only these hosts are ever called (hub_plugins/notify/webhook.py)
    "webhooks": _closed({
        "allowed_hosts": {"type": "array", "maxItems": 100, "uniqueItems": True,
                          "items": {"type": "string", "pattern": _HOST},
                          "description": "the chat servers people's webhooks may go to, e.g. hooks.slack.com or "
                                         "chat.example.org:8065 (exact names; a port other than the scheme's "
                                         "own must be given); empty: no webhooks"},
        "require_https": {"type": "boolean", "description": "refuse http:// webhooks (keep true outside tests)"},
        "timeout_seconds": {"type": "number", "minimum": 1, "maximum": 60,
                            "description": "how long one POST may take before it is tried again later"},
    }),
})
