"""The real-hardware check's own helpers, without a hub: the GPU-only sample reader (it broke on
its first run on a GPU, 2026-11-30) and ``--python-env`` (a GPU image's own PyTorch)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time

import sqlalchemy as sa

from hub_plugins.spawn.profiles import load_dir
from hub_plugins.store.models import Base, GPUSample
from tools import gpu_check
from tools.gpu_check_sharing import ROOT, adopt_env, share_samples


class _Hub:
    def __init__(self, url: str):
        self.gpulab_db_url = url


def test_share_samples_reads_sqlite_s_text_timestamps(tmp_path):
    hub = _Hub(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    eng = sa.create_engine(hub.gpulab_db_url)
    Base.metadata.create_all(eng, tables=[GPUSample.__table__])
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    with eng.begin() as c:
        c.execute(sa.insert(GPUSample), [
            {"device_key": "gpu0", "at": now - dt.timedelta(seconds=120), "util": 1.0},   # before `since`
            {"device_key": "gpu0", "at": now - dt.timedelta(seconds=2), "util": 97.0},
            {"device_key": "gpu0", "at": now, "util": 3.0},
            {"device_key": "gpu1", "at": now, "util": 55.0},                            # another device
        ])
    eng.dispose()
    assert share_samples(hub, "gpu0", time.time() - 60) == [97.0, 3.0]
    assert share_samples(hub, "gpu0", time.time() + 60) == []


def test_python_env_runs_one_profile_from_an_existing_environment(tmp_path):
    prefix = tmp_path / "image-env"
    out = adopt_env(str(prefix), "pytorch", tmp_path / "profiles")
    ours, stock = load_dir(out), load_dir(ROOT / "profiles")
    assert ours.get("pytorch").local_prefix == str(prefix)
    assert stock.get("pytorch").local_prefix.startswith("{envs}/")
    for p in stock:
        if p.name != "pytorch":  # the others untouched
            assert dataclasses.replace(ours.get(p.name), path=p.path) == p
    assert ours.get("pytorch").gpu_counts == stock.get("pytorch").gpu_counts


def test_python_env_needs_the_single_user_server_there(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "RESULTS", [])
    assert gpu_check.ensure_envs(str(tmp_path), ["pytorch"], False, str(tmp_path)) == {"pytorch": False}
    assert gpu_check.RESULTS[-1]["result"] == "FAIL" and "jupyterhub-singleuser" in gpu_check.RESULTS[-1]["detail"]
    (tmp_path / "bin").mkdir()
    script = tmp_path / "bin" / "jupyterhub-singleuser"
    script.write_text("#!/bin/sh\n")
    os.chmod(script, 0o755)
    assert gpu_check.ensure_envs(str(tmp_path), ["pytorch"], False, str(tmp_path)) == {"pytorch": True}


class _Logged:
    def __init__(self, path):
        self.log_path = path


def test_devices_restricted_reads_what_the_hub_said(tmp_path):
    from hub_plugins.isolation import Enforcer

    log = tmp_path / "hub.log"
    cases = [
        (Enforcer(kind="cgroup v1", controls=frozenset({"memory", "cpu", "devices"})), True),
        (Enforcer(kind="cgroup v2", controls=frozenset({"memory", "cpu"}),
                  problem="cgroup v2 without systemd: GPU devices are not restricted"), False),
        (Enforcer(kind="none", controls=frozenset(), problem="cgroup v2 without systemd: GPU devices"), False),
    ]
    for enforcer, want in cases:
        log.write_text(f"[I 2026-11-30 spawner:83] {enforcer.summary()}\n")
        assert gpu_check.devices_restricted(_Logged(log)) is want, enforcer.summary()
