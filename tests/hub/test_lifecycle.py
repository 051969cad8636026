"""Nothing leaks: failed starts, hub restarts, kill -9 of the hub, servers dying while it is down."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import stat
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.hubproc import ROOT
from tests.support.polling import wait_for

pytestmark = pytest.mark.hub


def held(hub):
    return sorted((a["user_name"], a["server_name"], a["visible_id"]) for a in hub.allocations())


@pytest.fixture(scope="module")
def broken_profiles():
    """A profile whose server exits at once (a broken environment), next to the real ones.
    Lives under /tmp with open permissions so per-user system accounts can run it."""
    d = Path(tempfile.mkdtemp(prefix="gpulab-profiles-", dir="/tmp"))
    d.chmod(0o755)
    for p in (ROOT / "profiles").glob("*.yaml"):
        shutil.copy(p, d)
    env = d / "broken-env" / "bin"
    env.mkdir(parents=True)
    exe = env / "jupyterhub-singleuser"
    exe.write_text("#!/bin/sh\necho 'broken environment: no jupyter here' >&2\nexit 3\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    for p in (d / "broken-env", d / "broken-env" / "bin"):
        p.chmod(0o755)
    (d / "broken.yaml").write_text(
        f"display_name: Broken\nlocal:\n  prefix: {d / 'broken-env'}\ngpus:\n  counts: [0, 1, 2]\n"
    )
    yield str(d)
    shutil.rmtree(d, ignore_errors=True)


async def test_failed_start_releases_at_once(inprocess_hub, broken_profiles):
    hub = await inprocess_hub(profiles_dir=broken_profiles, quotas={"default": {"max_gpus": 2}})
    await hub.aio.create_users("fay")
    t0 = time.monotonic()
    st, body = await hub.aio.spawn("fay", {"profile": "broken", "gpus": 2})
    assert st == 500, body
    assert "The server exited while starting (exit status 3)" in body["message"]
    assert time.monotonic() - t0 < 15  # not after http_timeout (60 s)
    assert await asyncio.to_thread(held, hub) == [] and await hub.aio.server_model("fay") is None
    # the GPUs are really free again
    await hub.aio.start_server("fay", {"profile": "minimal", "gpus": 2})
    assert [g for _, _, g in await asyncio.to_thread(held, hub)] == ["0", "1"]


def test_restart_keeps_running_servers_and_their_gpus(hub_factory):
    hub = hub_factory(quotas={"default": {"max_gpus": 2}})
    hub.create_users("ada", "ben")
    ada = hub.start_server("ada", {"gpus": 2})
    hub.terminate()  # clean shutdown: servers keep running (cleanup_servers = False)
    assert os.path.exists(f"/proc/{ada['state']['pid']}")
    hub.start()
    again = hub.wait_ready("ada")
    assert again["state"]["gpus"] == ["0", "1"] and again["state"]["pid"] == ada["state"]["pid"]
    assert held(hub) == [("ada", "", "0"), ("ada", "", "1")]
    ben = hub.start_server("ben", {"gpus": 2})
    assert ben["state"]["gpus"] == ["2", "3"]  # ada's GPUs were not handed out again


def test_restart_over_an_older_hubs_state_keeps_its_servers(hub_factory):
    """A hub before ``gpu_ids`` saved a server's device ids under ``gpus`` only: a newer hub
    started over its database keeps the server and its GPUs."""
    hub = hub_factory(quotas={"default": {"max_gpus": 2}})
    hub.create_users("old", "new")
    old = hub.start_server("old", {"gpus": 2})
    assert old["state"]["gpu_ids"] == old["state"]["gpus"] == ["0", "1"]
    hub.terminate()
    with sqlite3.connect(hub.state_dir / "jupyterhub.sqlite") as db:  # as the older hub saved it
        for sid, raw in db.execute("SELECT id, state FROM spawners WHERE state LIKE '%gpu_ids%'").fetchall():
            state = json.loads(raw)
            del state["gpu_ids"]
            db.execute("UPDATE spawners SET state = ? WHERE id = ?", (json.dumps(state), sid))
    hub.start()
    again = hub.wait_ready("old")
    assert again["state"]["gpus"] == ["0", "1"] and again["state"]["pid"] == old["state"]["pid"]
    assert held(hub) == [("old", "", "0"), ("old", "", "1")]
    assert hub.start_server("new", {"gpus": 2})["state"]["gpu_ids"] == ["2", "3"]


def test_kill_9_hub_then_servers_die_while_it_is_down(hub_factory):
    hub = hub_factory(quotas={"default": {"max_gpus": 2}})
    hub.create_users("cy", "di", "ed")
    cy = hub.start_server("cy", {"gpus": 2})
    di = hub.start_server("di", {"gpus": 1})
    hub.kill()  # kill -9: no shutdown code runs
    os.kill(cy["state"]["pid"], signal.SIGKILL)  # cy's server dies while the hub is down
    hub.start()
    wait_for(lambda: hub.server_model("cy") is None, what="cy's server to be seen gone")
    assert held(hub) == [("di", "", di["state"]["gpus"][0])]  # cy's GPUs are back, di's kept
    assert hub.wait_ready("di")["state"]["pid"] == di["state"]["pid"]
    ed = hub.start_server("ed", {"gpus": 2})
    assert set(ed["state"]["gpus"]) & set(di["state"]["gpus"]) == set()


def test_allocation_without_a_server_is_reconciled(hub_factory):
    """A hub killed between clearing a server and releasing its GPUs leaves a row behind:
    the next hub frees it before handing out GPUs."""
    from hub_plugins.gpu.simulated import parse_spec
    from hub_plugins.store.allocator import Allocator, Owner
    from hub_plugins.store.db import Database

    hub = hub_factory(quotas={"default": {"max_gpus": 4}})
    hub.create_users("gus", "hal")
    hub.start_server("gus", {"gpus": 1})
    uid = hub.servers_table()[0]["user_id"]  # JupyterHub's id for gus, as our table keeps it
    hub.stop_server("gus")
    hub.kill()
    db = Database(hub.gpulab_db_url)
    Allocator(db).allocate(Owner(uid, "gus", "ghost"), "minimal", "A100-80GB", 4, parse_spec("4xA100-80GB"))
    db.dispose()
    assert len(held(hub)) == 4
    hub.start()
    hal = hub.start_server("hal", {"gpus": 4})
    assert sorted(hal["state"]["gpus"]) == ["0", "1", "2", "3"]
    assert {u for u, _, _ in held(hub)} == {"hal"}
