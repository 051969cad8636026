"""200 concurrent spawn requests for 8 simulated GPUs through a real hub: never one device twice.
On SQLite and on PostgreSQL (the hub's own database and gpulab's tables both on it)."""

from __future__ import annotations

import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

pytestmark = [pytest.mark.hub, pytest.mark.slow]

N = 200


@pytest.fixture(params=["sqlite", "postgres"])
def hub(request, hub_factory):
    db_url = None
    if request.param == "postgres":
        db_url = request.getfixturevalue("pg").create_db(f"hub_{random.getrandbits(40):x}")
    return hub_factory(inventory="8xA100-80GB", db_url=db_url,
                       quotas={"default": {"max_gpus": 1, "max_servers": 1}})


def outcome(hub, user, timeout=180):
    """'ready' or 'refused' for a spawn the API accepted (202: still deciding under load)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = hub.server_model(user)
        if s is None:
            return "refused"
        if s.get("ready"):
            return "ready"
        time.sleep(0.3)
    raise AssertionError(f"{user}'s spawn neither started nor failed in {timeout}s")


def test_200_concurrent_spawns_never_share_a_gpu(hub):
    users = [f"u{i:03d}" for i in range(N)]
    st, body = hub.api("POST", "/users", {"usernames": users})
    assert st == 201, body
    with ThreadPoolExecutor(N) as pool:
        results = list(pool.map(lambda u: (u, *hub.spawn(u, {"profile": "minimal", "gpus": 1})), users))
    codes = Counter(st for _, st, _ in results)
    assert set(codes) <= {201, 202, 409}, (codes, [b for _, st, b in results if st not in (201, 202, 409)][:3],
                                           hub.log_tail())
    # under load some answers come back 202 (still deciding): follow those to their end
    with ThreadPoolExecutor(50) as pool:
        late = dict(pool.map(lambda u: (u, outcome(hub, u)), [u for u, st, _ in results if st == 202]))
    started = [u for u, st, _ in results if st == 201 or late.get(u) == "ready"]
    assert len(started) == 8, (codes, Counter(late.values()))
    refused = [b for _, st, b in results if st == 409]
    assert all(b["message"].startswith("Not enough free GPUs for 1 A100-80GB GPU right now: 0 of 8 are free")
               for b in refused), refused[:2]
    # every refusal, early or late, was a capacity refusal (the hub records each one)
    eng = sa.create_engine(hub.gpulab_db_url)
    with eng.connect() as c:
        kinds = Counter((r.kind, r.reason) for r in c.execute(sa.text("SELECT kind, reason FROM gpulab_events")))
    eng.dispose()
    assert kinds[("refused", "capacity")] == N - 8, kinds
    gpus = [hub.wait_ready(u, timeout=120)["state"]["gpus"] for u in started]
    flat = [g for ids in gpus for g in ids]
    assert sorted(flat) == [str(i) for i in range(8)]  # each of the 8 GPUs exactly once
    rows = hub.allocations()
    assert len(rows) == 8 and len({r["device_key"] for r in rows}) == 8
    assert sorted(r["user_name"] for r in rows) == sorted(started)
