"""Cull decisions as a pure function of (servers, samples, policy, now), table-driven."""

import datetime as dt

import pytest

from services.culler.decide import Policy, Server, Settings, decide

NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.timezone.utc)
M = dt.timedelta(minutes=1)

GPU = Policy("gpu", gpu_idle_minutes=30, inactive_minutes=480, startup_grace_minutes=10, match_gpu=True)
CPU = Policy("cpu", gpu_idle_minutes=None, inactive_minutes=480, startup_grace_minutes=10, match_gpu=False)
STUDENT = Policy("student", gpu_idle_minutes=15, inactive_minutes=60, match_groups=frozenset({"student"}))
SETTINGS = Settings(policies=(STUDENT, GPU, CPU))


def srv(**kw):
    base = dict(user="ann", name="", gpu_count=1, ready_at=NOW - 120 * M, last_activity=NOW - 1 * M,
                gpu_samples=True)
    base.update(kw)
    return Server(**base)


@pytest.mark.parametrize(
    "server, allocated, expect",
    [
        # GPU idle 31 min, user active in the browser: GPU-idle still culls
        (srv(gpu_idle_since=NOW - 31 * M), 0.5, ("cull", "gpu_idle")),
        (srv(gpu_idle_since=NOW - 20 * M), 0.5, None),  # 67%: no warning yet
        (srv(gpu_idle_since=NOW - 25 * M), 0.5, ("warn", "gpu_idle")),  # 83%
        (srv(gpu_idle_since=NOW - 29 * M), 0.5, ("warn", "gpu_idle")),  # 97%
        (srv(gpu_idle_since=NOW - 16 * M), 0.9, ("cull", "gpu_idle")),  # scarce: 30 -> 15 min
        (srv(gpu_idle_since=None), 0.5, None),  # GPU busy
        (srv(gpu_idle_since=NOW - 60 * M, gpu_samples=False), 0.5, None),  # cannot measure (MIG, no DCGM)
        (srv(gpu_idle_since=NOW - 60 * M, ready_at=NOW - 5 * M), 0.5, None),  # start-up grace
        (srv(gpu_idle_since=NOW - 60 * M, keep_alive_at=NOW - 3 * 60 * M), 0.5, None),  # keep-alive
        (srv(gpu_idle_since=NOW - 60 * M, keep_alive_at=NOW - 25 * 60 * M), 0.5, ("cull", "gpu_idle")),  # too old
        # a keep-alive that held it off until a minute ago (removed, or just too old): the idle
        # clock starts there, so the warnings come first (it was culled at once)
        (srv(gpu_idle_since=NOW - 60 * M, kept_until=NOW - 1 * M), 0.5, None),
        (srv(gpu_idle_since=NOW - 60 * M, kept_until=NOW - 26 * M), 0.5, ("warn", "gpu_idle")),
        (srv(gpu_idle_since=NOW - 60 * M, kept_until=NOW - 31 * M), 0.5, ("cull", "gpu_idle")),
        (srv(gpu_count=0, gpu_samples=False, ready_at=NOW - 600 * M, last_activity=NOW - 481 * M,
             kept_until=NOW - 5 * M), 0.5, None),
        # CPU-only server: activity rules only
        (srv(gpu_count=0, gpu_samples=False, ready_at=NOW - 600 * M, last_activity=NOW - 481 * M), 0.5,
         ("cull", "inactive")),
        (srv(gpu_count=0, gpu_samples=False, ready_at=NOW - 600 * M, last_activity=NOW - 481 * M,
             cpu_busy_at=NOW - 5 * M), 0.5, None),
        # per-group policy: students get 15 min GPU idle
        (srv(groups=("student",), gpu_idle_since=NOW - 16 * M), 0.5, ("cull", "gpu_idle")),
        # runtime chosen at spawn
        (srv(runtime_limit=dt.timedelta(hours=2), gpu_idle_since=None), 0.5, ("cull", "runtime")),
        (srv(runtime_limit=dt.timedelta(hours=2.2), gpu_idle_since=None), 0.5, ("warn", "runtime")),
        (srv(ready_at=None), 0.5, None),  # still starting
    ],
)
def test_decide(server, allocated, expect):
    actions = decide([server], SETTINGS, NOW, allocated)
    got = (actions[0].kind, actions[0].reason) if actions else None
    assert got == expect


def test_warn_once_per_step():
    s = srv(gpu_idle_since=NOW - 25 * M)
    first = decide([s], SETTINGS, NOW, 0.5)[0]
    assert first.kind == "warn" and first.tag == "gpu_idle:0.8" and round(first.minutes_left) == 5
    assert "will be stopped in 5 min: its GPUs were idle for 30 min" in first.message
    again = decide([srv(gpu_idle_since=NOW - 25 * M, warned="gpu_idle:0.8")], SETTINGS, NOW, 0.5)
    assert again == []
    later = decide([srv(gpu_idle_since=NOW - 29 * M, warned="gpu_idle:0.8")], SETTINGS, NOW, 0.5)
    assert later[0].tag == "gpu_idle:0.95"


def test_budget_enforced_after_grace_only_when_enabled():
    s = srv(gpu_idle_since=None, budget_spent_since=NOW - 31 * M)
    assert decide([s], SETTINGS, NOW, 0.5) == []  # enforcement off by default
    on = Settings(policies=SETTINGS.policies, budget_grace=dt.timedelta(minutes=30))
    assert [(a.kind, a.reason) for a in decide([s], on, NOW, 0.5)] == [("cull", "budget")]


def test_from_config():
    st = Settings.from_config({"policies": [{"name": "g", "match": {"gpu": True, "profiles": ["pytorch"]},
                                             "gpu_idle_minutes": 20}], "scarcity": {"above": 0.7, "factor": 0.25}},
                              {"enforce_running": True, "grace_minutes": 5})
    assert st.policies[0].match_profiles == {"pytorch"} and st.scarcity_factor == 0.25
    assert st.budget_grace == dt.timedelta(minutes=5)
