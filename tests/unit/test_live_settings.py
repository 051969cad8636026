"""gpulab.yaml reloads while gpulab runs: what applies, what waits for a restart, and a bad file
that changes nothing but says why. Real files on disk, the real loader and schema."""

from __future__ import annotations

import os
import time

import pytest
import yaml

from hub_plugins.core import GPULab
from hub_plugins.settings.live import RELOADABLE, LiveSettings, changes, merged

ROOT_PROFILES = os.path.join(os.path.dirname(__file__), "..", "..", "profiles")


def write(path, data, bump: float = 1.0):
    path.write_text(yaml.safe_dump(data))
    # a later modification time, as a save some seconds later would give it
    st = os.stat(path)
    os.utime(path, (st.st_atime + bump, st.st_mtime + bump))
    return path


BASE = {"gpus": {"inventory": "4xA100-80GB"}, "quotas": {"default": {"max_gpus": 1}, "groups": {"student": {}}},
        "billing": {"rates": {"*": 1.0}}}


@pytest.mark.parametrize("old, new, applied, restart", [
    ({"quotas": {"a": 1}}, {"quotas": {"a": 2}}, ["quotas"], []),
    ({"billing": {"rates": 1, "port": 1}}, {"billing": {"rates": 2, "port": 1}}, ["billing"], []),
    ({"billing": {"rates": 1, "port": 1}}, {"billing": {"rates": 1, "port": 2}}, [], ["billing.port"]),
    ({"billing": {"rates": 1, "port": 1}}, {"billing": {"rates": 2, "port": 2}}, ["billing"], ["billing.port"]),
    ({"culler": {"enabled": True, "policies": []}}, {"culler": {"enabled": False, "policies": []}}, [],
     ["culler.enabled"]),
    ({"hub": {"bind_url": "a"}}, {"hub": {"bind_url": "b"}}, [], ["hub"]),
    ({"backend": "local"}, {"backend": "docker"}, [], ["backend"]),
    ({"queue": {"backfill": True}, "budgets": {"x": 1}}, {"queue": {"backfill": False}, "budgets": {"x": 1}},
     ["queue"], []),
    ({"quotas": {"a": 1}}, {"quotas": {"a": 1}}, [], []),
])
def test_what_applies_and_what_needs_a_restart(old, new, applied, restart):
    assert changes(old, new) == (applied, restart)


def test_merged_keeps_what_needs_a_restart():
    running = {"hub": {"bind_url": "a"}, **{k: {"x": 1, **{p: "run" for p in v}} for k, v in RELOADABLE.items()}}
    new = {"hub": {"bind_url": "b"}, **{k: {"x": 2, **{p: "new" for p in v}} for k, v in RELOADABLE.items()}}
    out = merged(running, new)
    assert out["hub"] == {"bind_url": "a"}
    assert out["billing"] == {"x": 2, "port": "run"}
    assert out["culler"] == {"x": 2, "enabled": "run", "metrics": "run"} and out["quotas"] == {"x": 2}


def test_a_good_file_applies_at_once_and_a_bad_one_changes_nothing(tmp_path, caplog):
    path = write(tmp_path / "gpulab.yaml", {**BASE, "profiles_dir": ROOT_PROFILES})
    live = LiveSettings(path, check_every=0)
    seen = []
    live.on_change(seen.append)
    assert live.current.core.quotas.default.max_gpus == 1
    running = live.current

    write(path, {**BASE, "profiles_dir": ROOT_PROFILES, "quotas": {"default": {"max_gpus": 3}, "groups": {}},
                 "billing": {"rates": {"*": 2.5}, "port": 12345}})
    now = live.current  # the next read after the file changed sees it
    assert now is not running and now.core.quotas.default.max_gpus == 3
    assert now.core.billing.pricing.device_rate("A100-80GB", 1) == 2.5
    assert now.core.billing.port == running.core.billing.port  # a port needs a restart
    assert live.outcome.ok and live.outcome.applied == ("billing", "quotas")
    assert live.outcome.needs_restart == ("billing.port",) and "Needs a restart" in live.outcome.message
    assert seen == [now]

    caplog.clear()
    write(path, {**BASE, "profiles_dir": ROOT_PROFILES, "quotas": {"default": {"max_gpu": 5}}}, bump=2)
    assert live.current is now  # kept
    assert not live.outcome.ok and "unknown key 'max_gpu'" in live.outcome.error
    assert "running settings stay as they were" in live.outcome.message
    assert any("max_gpu" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    assert seen == [now]
    status = live.status()
    assert status["last"]["ok"] is False and status["path"] == str(path)


def test_the_file_is_looked_at_only_every_few_seconds(tmp_path):
    path = write(tmp_path / "gpulab.yaml", {**BASE, "profiles_dir": ROOT_PROFILES})
    live = LiveSettings(path, check_every=3600)
    first = live.current
    write(path, {**BASE, "profiles_dir": ROOT_PROFILES, "quotas": {"default": {"max_gpus": 2}}})
    assert live.current is first  # not looked at yet
    assert live.check() is not None and live.current.core.quotas.default.max_gpus == 2
    assert live.check() is None  # unchanged since


def test_the_hub_core_follows_the_file(tmp_path):
    path = write(tmp_path / "gpulab.yaml", {**BASE, "profiles_dir": ROOT_PROFILES})
    core = GPULab(settings_file=str(path), inventory_spec="4xA100-80GB", profiles_dir=ROOT_PROFILES,
                  db_url=f"sqlite:///{tmp_path}/g.sqlite")
    core.live.check_every = 0
    assert core.effective("ann", ["student"]).limits.max_gpus == 1
    time.sleep(0.01)
    write(path, {**BASE, "profiles_dir": ROOT_PROFILES,
                 "quotas": {"default": {"max_gpus": 1}, "groups": {"student": {"max_gpus": 2}}}})
    assert core.effective("ann", ["student"]).limits.max_gpus == 2
    assert core.pricing.device_rate("A100-80GB", 1) == 1.0
