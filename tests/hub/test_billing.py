"""Accounting through a real hub and its billing service: per-second charges with a minimum,
crashes and restarts without lost or doubled seconds, budgets, access control, CSV, metrics."""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import os
import signal
import time

import pytest

from tests.support.polling import gpulab_rows, wait_for

pytestmark = [pytest.mark.hub, pytest.mark.slow]

RATE = 3.6  # per GPU-hour: 0.001 per GPU-second, easy to check


@pytest.fixture(scope="module")
def hub(module_hub_factory):
    h = module_hub_factory(
        inventory="4xA100-80GB",
        quotas={"default": {"max_gpus": 2, "max_servers": 3},
                "groups": {"thrifty": {"budget": 0.001}}},  # 3.6 GPU-seconds a month
        extra={"billing": {"rates": {"A100-80GB": RATE}, "cpu_rate": 0.36, "minimum_charge_seconds": 10,
                           "heartbeat_seconds": 3, "currency": "EUR"},
               "culler": {"enabled": False}},
    )
    h.wait_service("billing")
    return h


def usage_rows(hub, user=None):
    return gpulab_rows(hub, "gpulab_usage", user)


def charged(row) -> int:
    raw = (row["stopped_at"] - row["started_at"]).total_seconds()
    return max(10, math.ceil(raw))


def test_minimum_charge_then_per_second(hub):
    hub.create_users("pam")
    hub.start_server("pam", {"gpus": 2})
    hub.stop_server("pam")  # ~4 s: the 10 s minimum applies
    hub.start_server("pam", {"gpus": 1})
    time.sleep(12)
    hub.stop_server("pam")  # > 10 s: charged per second
    short, long_ = usage_rows(hub, "pam")
    # stopped with the tests' automation token (a service): recorded as such
    assert short["stop_reason"] == long_["stop_reason"] == "service" and short["stopped_by"] == "service:tests"
    assert (short["stopped_at"] - short["started_at"]).total_seconds() < 10 and charged(short) == 10
    assert charged(long_) > 12
    rep = hub.service("billing", "api/usage?user=pam").json()
    lines = sorted(rep["records"], key=lambda ln: ln["started_at"])
    assert lines[0]["gpu_seconds"] == pytest.approx(2 * 10)  # 2 GPUs x the minimum
    assert lines[1]["gpu_seconds"] == pytest.approx(charged(long_))
    assert lines[1]["cost"] == pytest.approx(RATE * charged(long_) / 3600, rel=1e-6)
    assert rep["totals"]["gpu_seconds"] == pytest.approx(20 + charged(long_))


def test_crash_and_restart_lose_and_double_nothing(hub):
    hub.create_users("cora", "dirk")
    cora = hub.start_server("cora", {"gpus": 1})
    dirk = hub.start_server("dirk", {"gpus": 1})
    time.sleep(7)  # heartbeats (every 3 s) note them alive
    hub.kill()  # kill -9 the hub: records stay open
    killed_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    os.kill(cora["state"]["pid"], signal.SIGKILL)  # cora's server dies while the hub is down
    cora_died_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    time.sleep(4)
    hub.start()
    hub.wait_service("billing")
    wait_for(lambda: hub.server_model("cora") is None, what="cora's server to be seen gone")
    c_rows, d_rows = usage_rows(hub, "cora"), usage_rows(hub, "dirk")
    assert len(c_rows) == 1 and len(d_rows) == 1  # one record each: nothing doubled
    c = c_rows[0]
    assert c["stop_reason"] == "crashed", hub.log_tail(80)
    # closed at the last moment it was seen alive: its lifeline's last heartbeat (it beats on
    # while the hub is down), within a heartbeat of when it died, never after
    assert killed_at - dt.timedelta(seconds=6) <= c["stopped_at"] <= cora_died_at
    assert d_rows[0]["stopped_at"] is None  # dirk's server survived the hub and is still charged
    hub.wait_ready("dirk")
    time.sleep(2)
    hub.stop_server("dirk")
    d = usage_rows(hub, "dirk")[0]
    # one continuous charge across the hub's death: nothing lost while the hub was down
    assert (d["stopped_at"] - d["started_at"]).total_seconds() >= 12
    assert d["stop_reason"] == "service" and dirk["state"]["spawn_id"] == d["spawn_id"]


def test_budget_refusal_says_when_to_retry(hub):
    hub.create_users("tina", groups={"thrifty": ["tina"]})
    hub.start_server("tina", {"gpus": 1})
    hub.stop_server("tina")  # 10 GPU-seconds > 3.6 budget
    st, body = hub.spawn("tina", {"gpus": 1})
    assert st == 403, body
    now = dt.datetime.now(dt.timezone.utc)
    nxt = (now.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
    assert body["message"].startswith("Your budget of 0.001 GPU-hours this month is spent (used 0.0028 GPU-hours).")
    assert f"You can start again at {nxt:%Y-%m-%d} 00:00 UTC." in body["message"]
    hub.start_server("tina", {"gpus": 0})  # a CPU-only server uses no GPU-hours: allowed
    hub.stop_server("tina")
    q = hub.service("billing", "api/quota?user=tina").json()
    assert q["budget"]["spent"] and q["budget"]["limit"] == 0.001 and q["budget"]["period"] == "month"
    assert q["budget"]["retry_at"].startswith(f"{nxt:%Y-%m-%d}")


def test_users_see_only_their_own(hub):
    hub.create_users("ann", "bob")
    hub.start_server("bob", {"gpus": 1})
    ann = hub.user_token("ann")
    for path in ("api/usage?user=bob", "api/quota?user=bob", "metrics", "admin"):
        r = hub.service("billing", path, token=ann)
        assert r.status_code == 403, (path, r.status_code, r.text[:200])
    assert hub.service("billing", "api/usage", token=ann).json()["user"] == "ann"
    gpus = hub.service("billing", "api/gpus", token=ann).json()["devices"]
    holders = {d.get("user") for d in gpus if d["state"] == "allocated"}
    assert "bob" not in holders and "another user" in holders
    st = hub.service("billing", "api/queue/bob", method="DELETE", token=ann).status_code
    assert st == 403
    assert hub.service("billing", "api/queue/bob", token=ann).status_code == 403  # was a 500
    assert hub.service("billing", "api/queue/ann", token=ann).json() == {"queue": []}
    hub.stop_server("bob")


def test_csv_export_and_metrics(hub):
    r = hub.service("billing", "api/usage?format=csv&since=2020-01-01")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert {"user", "gpu_seconds", "cost", "currency", "stop_reason", "stopped_by"} <= set(rows[0])
    assert any(row["user"] == "pam" for row in rows)
    assert hub.service("billing", "api/usage?since=yesterday").status_code == 400
    m = hub.service("billing", "metrics").text
    assert 'gpulab_gpus_total{gpu_type="A100-80GB"} 4.0' in m
    assert 'gpulab_spawn_refusals_total{reason="budget"}' in m
    assert "gpulab_gpu_seconds_total{user=\"pam\"}" in m and "gpulab_queue_wait_seconds_bucket" in m
