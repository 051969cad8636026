"""The defaults of ``gpulab.yaml``: what every key the file leaves out means, in one place.

Kept beside the schema (``schema.py`` re-exports :data:`DEFAULTS`); the loader completes a file
from here and ``defaults.section`` completes a section handed in part. ``test_defaults`` checks
that these defaults validate against the schema and have its keys, so the two cannot drift apart.
"""

from __future__ import annotations

from .schema_cluster import CLUSTER_DEFAULTS

DEFAULTS = {
    "hub": {
        "bind_url": "http://127.0.0.1:8000",
        "hub_bind_url": "http://127.0.0.1:8081",
        "proxy_api_url": "http://127.0.0.1:8001",
        "state_dir": "state",
        "db_url": None,
        "admin_users": ["admin"],
        "api_tokens": {},
        "api_token_scopes": {},
        "log_level": "INFO",
        "concurrent_spawn_limit": 100,
        "poll_interval": 10,
        "start_timeout": 120,
        "http_timeout": 60,
        "slow_spawn_seconds": 3,
        "gc_sweep_minutes": 60,
        "sqlite_synchronous": "normal",
    },
    "backend": "local",
    "profiles_dir": None,
    "default_profile": "minimal",
    "gpus": {"inventory": "auto", "max_per_server": 4, "refresh_seconds": 30, "sharing": []},
    "auth": {
        "kind": "native",
        "native": {
            "open_signup": False,
            "minimum_password_length": 10,
            "check_common_password": True,
            "allowed_failed_logins": 5,
            "seconds_before_next_try": 300,
        },
        "group_map": {},
        "allowed_groups": [],
        "admin_groups": [],
        "keep_unmapped_groups": False,
        "allowed_users": [],
        "allow_all": False,
        "refresh_seconds": None,
        "roles": {},
    },
    "local": {"system_users": "auto", "system_user_prefix": "jupyter-", "home_root": "/home", "limits": "auto",
              "port_range": "auto"},
    "billing": {
        "currency": "EUR",
        "rates": {"*": 0},
        "cpu_rate": 0,
        "minimum_charge_seconds": 60,
        "port": 10101,
        "heartbeat_seconds": 60,
        "on_accounting_failure": "open",
        "grid_intensity_g_per_kwh": 300,
        "nominal_power_watts": {"*": 300},
    },
    "budgets": {
        "unit": "gpu_hours",
        "period": "month",
        "refill_per_day": 0,
        "enforce_running": False,
        "grace_minutes": 30,
        "projects": {},
    },
    "culler": {
        "enabled": True,
        "interval_seconds": 60,
        "gpu_idle_threshold": 5,
        "cpu_idle_threshold": 10,
        "policies": [
            {"name": "gpu", "match": {"gpu": True}, "gpu_idle_minutes": 30, "inactive_minutes": 480,
             "max_age_hours": None, "startup_grace_minutes": 10},
            {"name": "cpu", "match": {"gpu": False}, "gpu_idle_minutes": None, "inactive_minutes": 480,
             "max_age_hours": None, "startup_grace_minutes": 10},
        ],
        "scarcity": {"above": 0.8, "factor": 0.5},
        "warn_at": [0.8, 0.95],
        "keep_alive_max_hours": 24,
        "keep_samples_hours": 6,
        "external_cullers": ["idle-culler"],
        "webhooks": {"default": None, "groups": {}, "users": {}},
        "metrics": {"source": "auto", "simulated_file": None, "prometheus_url": None},
    },
    "queue": {
        "enabled": True,
        "default": True,
        "max_wait_hours": 24,
        "fair_share_days": 7,
        "backfill": True,
        "reserve_after_minutes": 10,
        "age_after_hours": 6,
        "lost_after_seconds": 120,
        "borrowing": {
            "enabled": False,
            "groups": [],
            "rate_factor": 1.0,
            "grace_minutes": 5,
            "reclaim_after_minutes": 10,
        },
    },
    "docker": {
        "host": None,
        "pull_policy": "never",
        "name_prefix": "gpulab",
        "home_mount": "/home/jovyan",
        "shm_size": None,
        "pids_limit": 16384,
        "remove_orphans": True,
        "orphan_grace_seconds": 10,
        "mps": {"enabled": False, "uid": 1000, "image": None,
                "control_command": ["nvidia-cuda-mps-control", "-f"]},
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
    "services": {"quotas": {"enabled": True, "url": "auto"}},
    "environments": {"dir": "auto", "build_missing": True},
    "notifications": {
        "enabled": True,
        "poll_seconds": 5,
        "hub_url": None,
        "give_up_after_minutes": 60,
        "budget_warn_at": 0.8,
        "smtp": {"host": None, "port": 25, "ssl": False, "starttls": False, "username": None,
                 "password_file": None, "sender": "gpulab <gpulab@localhost>", "timeout_seconds": 10},
        "webhooks": {"allowed_hosts": [], "require_https": True, "timeout_seconds": 10},
    },
}

DEFAULTS.update(CLUSTER_DEFAULTS)

# What a ``culler.policies`` item leaves out (only ``name`` is required): the keys of one item.
CULL_POLICY_DEFAULTS = {"name": "default", "match": {}, "gpu_idle_minutes": 30, "inactive_minutes": 480,
                        "max_age_hours": None, "startup_grace_minutes": 10}
