"""The ``queue`` section of ``gpulab.yaml``: waiting for GPUs, its order, and borrowing idle GPUs
beyond quota (defaults in ``schema_defaults.py``; the rules in ``hub_plugins/queue/``)."""

from __future__ import annotations

QUEUE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "enabled": {"type": "boolean"},
        "default": {"type": "boolean", "description": "the form's 'wait in the queue' checkbox"},
        "max_wait_hours": {"type": "number", "exclusiveMinimum": 0},
        "fair_share_days": {"type": "integer", "minimum": 0},
        "backfill": {"type": "boolean"},
        "reserve_after_minutes": {"type": "number", "minimum": 0,
                                  "description": "no longer used: the head of the queue holds a "
                                                 "reservation at once (accepted for old files)"},
        "age_after_hours": {"type": ["number", "null"], "exclusiveMinimum": 0,
                            "description": "a request that has waited this long goes before fair "
                                           "share (oldest first); null: fair share alone"},
        "lost_after_seconds": {"type": "number", "minimum": 1,
                               "description": "a waiting request nobody looked at for this long lost its "
                                              "spawn (hub restart): the culler starts it again"},
        "borrowing": {
            "type": "object",
            "additionalProperties": False,
            "description": "servers beyond quota on GPUs nobody within quota waits for (REST "
                           "'preemptible': true), taken back when someone within quota waits",
            "properties": {
                "enabled": {"type": "boolean"},
                "groups": {"type": "array", "items": {"type": "string", "minLength": 1},
                           "uniqueItems": True,
                           "description": "hub groups whose members may borrow; empty: nobody"},
                "rate_factor": {"type": "number", "minimum": 0,
                                "description": "a borrowed server's price is the usual rate times this "
                                               "(0.5: half price)"},
                "grace_minutes": {"type": "number", "minimum": 0,
                                  "description": "between the warning and the stop of a reclaimed "
                                                 "server (fractions allowed)"},
                "reclaim_after_minutes": {"type": "number", "minimum": 0,
                                          "description": "a request within quota waits this long before "
                                                         "borrowed servers are reclaimed for it"},
            },
        },
    },
}
