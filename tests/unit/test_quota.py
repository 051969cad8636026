"""Quota resolution (groups, default, overrides) and decisions, with the messages people read."""

import datetime as dt
from fractions import Fraction

import pytest

from hub_plugins.quota import Ask, QuotaConfig, ServerUse, check, headroom, resolve

NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.timezone.utc)

CFG = QuotaConfig.from_config({
    "default": {"max_gpus": 1, "max_servers": 2},
    "groups": {
        "student": {"max_gpus": 1, "profiles": ["minimal", "pytorch"], "gpu_types": ["A100-80GB:1g.10gb"]},
        "researcher": {"max_gpus": 2, "max_gpus_per_server": 2, "max_servers": 4},
        "staff": {"max_gpus": 4, "max_servers": 1},
    },
    "overrides": [
        {"user": "ann", "max_gpus": 3, "expires": "2026-12-01", "reason": "paper deadline"},
        {"user": "bob", "max_gpus": 4, "expires": "2026-11-01", "reason": "expired"},
        {"user": "cat", "max_gpus": 2, "expires": "2026-11-23", "reason": "a"},
        {"user": "cat", "max_gpus": 3, "expires": "2026-11-30", "reason": "b"},
        {"user": "cat", "max_gpus": 1, "expires": "2026-11-30", "reason": "c"},
    ],
})


@pytest.mark.parametrize(
    "user, groups, resolve_policy, field, value, source",
    [
        ("x", [], "most_generous", "max_gpus", 1, "the default quota"),
        ("x", ["unknown-group"], "most_generous", "max_gpus", 1, "the default quota"),
        ("x", ["student"], "most_generous", "max_gpus", 1, "group 'student'"),
        ("x", ["student"], "most_generous", "max_servers", 2, "group 'student'"),  # inherits default
        ("x", ["student", "researcher"], "most_generous", "max_gpus", 2, "group 'researcher'"),
        ("x", ["student", "researcher"], "least_generous", "max_gpus", 1, "group 'student'"),
        ("x", ["researcher", "staff"], "most_generous", "max_servers", 4, "group 'researcher'"),
        ("x", ["researcher", "staff"], "most_generous", "max_gpus", 4, "group 'staff'"),
        ("x", ["staff", "student"], "first_match", "max_gpus", 1, "group 'student'"),  # config order
        ("x", ["researcher", "staff"], "first_match", "max_gpus", 2, "group 'researcher'"),
        ("ann", ["student"], "most_generous", "max_gpus", 3, "your override until 2026-12-01"),
        ("bob", ["student"], "most_generous", "max_gpus", 1, "group 'student'"),  # expired
        ("cat", [], "most_generous", "max_gpus", 3, "your override until 2026-11-30"),
    ],
)
def test_resolution(user, groups, resolve_policy, field, value, source):
    cfg = QuotaConfig(CFG.default, CFG.groups, resolve_policy, "hard", CFG.overrides)
    eff = resolve(cfg, user, groups, NOW)
    assert getattr(eff.limits, field) == value
    assert eff.source(field) == source


def test_profile_and_type_sets_combine():
    eff = resolve(CFG, "x", ["student", "researcher"], NOW)
    assert eff.limits.profiles is None and eff.limits.gpu_types is None  # researcher: all
    eff = resolve(QuotaConfig(CFG.default, CFG.groups, "least_generous"), "x", ["student", "researcher"], NOW)
    assert eff.limits.profiles == {"minimal", "pytorch"}


def test_override_expires_at_midnight_utc():
    before = dt.datetime(2026, 11, 30, 23, 59, tzinfo=dt.timezone.utc)
    after = dt.datetime(2026, 12, 1, 0, 0, tzinfo=dt.timezone.utc)
    assert resolve(CFG, "ann", [], before).limits.max_gpus == 3
    assert resolve(CFG, "ann", [], after).limits.max_gpus == 1


def ask(n, name="new", profile="minimal", gpu_type="A100-80GB", weight=1):
    return Ask(name, profile, gpu_type, n, Fraction(weight) * n)


def use(name, n, weight=1):
    return ServerUse(name, "minimal", "A100-80GB", n, Fraction(weight) * n)


@pytest.mark.parametrize(
    "groups, request_, usage, allowed, reason, message",
    [
        (["student"], ask(1, gpu_type="A100-80GB:1g.10gb", weight=Fraction(1, 7)), [], True, "", ""),
        (["researcher"], ask(3), [use("exp1", 1)], False, "per_server",
         "You asked for 3 GPUs for one server; group 'researcher' allows 2 GPUs per server."),
        (["researcher"], ask(2), [use("exp1", 1)], False, "gpus",
         "You asked for 2 GPUs; group 'researcher' allows 2 GPUs at a time and you use 1 (server 'exp1'). "
         "Stop a server or ask an admin for an override."),
        ([], ask(1), [use("", 1)], False, "gpus",
         "You asked for 1 GPU; the default quota allows 1 GPU at a time and you use 1 (server 'default')."),
        ([], ask(2), [], False, "gpus", "you use none. Ask for fewer GPUs or ask an admin for an override."),
        # nothing running: never told to stop a server
        ([], ask(1), [use("a", 0)], True, "", ""),
        ([], ask(0), [use("a", 1)], True, "", ""),  # CPU-only servers need no GPU quota
        ([], ask(0), [use("a", 1), use("b", 0)], False, "servers",
         "You already run 2 servers ('a', 'b'); the default quota allows 2 at a time."),
        (["student"], ask(1, profile="tensorflow", gpu_type="A100-80GB:1g.10gb", weight=Fraction(1, 7)), [],
         False, "profile", "Profile 'tensorflow' is not available to you (group 'student' allows: minimal, pytorch)"),
        (["student"], ask(1), [], False, "gpu_type",
         "GPU type 'A100-80GB' is not available to you (group 'student' allows: A100-80GB:1g.10gb)"),
        # slices and whole GPUs share one limit: 6/7 + 1/7 = 1 fits, one more slice does not
        (["student"], ask(1, gpu_type="A100-80GB:1g.10gb", weight=Fraction(1, 7)),
         [use("a", 6, Fraction(1, 7))], True, "", ""),
        (["student"], ask(2, gpu_type="A100-80GB:1g.10gb", weight=Fraction(1, 7)),
         [use("a", 6, Fraction(1, 7))], False, "gpus", "2 A100-80GB:1g.10gb MIG slices (0.29 GPU)"),
    ],
)
def test_decisions(groups, request_, usage, allowed, reason, message):
    d = check(request_, resolve(CFG, "x", groups, NOW), usage)
    assert d.allowed is allowed
    assert d.reason == reason
    assert message in d.message


def test_soft_enforcement_allows_amounts_with_warning_but_not_profiles():
    eff = resolve(CFG, "x", [], NOW)
    d = check(ask(2), eff, [use("a", 1)], enforcement="soft")
    assert d.allowed and d.over_quota and "Over quota (soft limit)" in d.warnings[0]
    eff = resolve(CFG, "x", ["student"], NOW)
    d = check(ask(1, profile="tensorflow"), eff, [], enforcement="soft")
    assert not d.allowed and d.reason == "profile"


def test_no_server_allowed_is_not_told_to_stop_one():
    eff = resolve(QuotaConfig.from_config({"default": {"max_servers": 0}}), "ann", [], NOW)
    d = check(ask(0), eff, [])
    assert not d.allowed and d.message == "The default quota allows no servers. Ask an admin for an override."


def test_headroom():
    eff = resolve(CFG, "x", ["researcher"], NOW)
    assert headroom(eff, [use("a", 1)]) == 1
    assert headroom(eff, []) == 2  # per-server cap
    eff = resolve(QuotaConfig.from_config({"default": {"max_gpus": None}}), "x", [], NOW)
    assert headroom(eff, [use("a", 3)]) is None
