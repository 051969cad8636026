"""Quotas: limits resolved per user (``limits``) and the decision on a request (``decision``)."""

from .decision import Ask, Decision, ServerUse, check, headroom, server_label
from .limits import Effective, Limits, Override, QuotaConfig, override_from_config, resolve

__all__ = [
    "Ask", "Decision", "Effective", "Limits", "Override", "QuotaConfig", "ServerUse",
    "check", "headroom", "override_from_config", "resolve", "server_label",
]
