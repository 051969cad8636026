"""The backend seam is real: a second, trivial backend gets the whole GPU behaviour (validation,
quota, placement, release, progress, state) from the mixin and only says how to apply it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from jupyterhub.spawner import Spawner, SpawnException
from traitlets.config import Config

from hub_plugins.core import GPULab
from hub_plugins.spawners.mixin import GPUSpawnerMixin
from hub_plugins.spawners.recovery import check_after_restart
from hub_plugins.store.usage import UsageStore

ROOT = Path(__file__).resolve().parents[2]


class DeviceFileBackend(Spawner):
    """A plain JupyterHub spawner that knows nothing about GPUs: it 'runs' a server by writing
    what it was told to apply into a file."""

    applied: dict = {}
    running = False

    async def start(self):
        Path(self.config.DeviceFile.path).write_text(json.dumps(self.applied))
        self.running = True
        return "http://127.0.0.1:1"

    async def stop(self, now=False):
        self.running = False

    async def poll(self):
        return None if self.running else 0


class TrivialSpawner(GPUSpawnerMixin, DeviceFileBackend):
    """The whole GPU integration of this backend: how to apply an allocation."""

    gpulab_backend = "device-file"

    def gpulab_apply(self, allocation, profile):
        self.applied = {"devices": allocation.visible_ids, "profile": profile.name}

    def gpulab_device_env(self, allocation):
        return {"DEVICE_FILE_IDS": ";".join(allocation.visible_ids)}


@pytest.fixture
def config(tmp_path):
    GPULab.clear_instance()
    c = Config()
    c.GPULab.inventory_spec = "4xA100-80GB"
    c.GPULab.db_url = f"sqlite:///{tmp_path}/gpulab.sqlite"
    c.GPULab.profiles_dir = str(ROOT / "profiles")
    c.GPULab.quotas = {"default": {"max_gpus": 2}, "groups": {"staff": {"max_gpus": 4}}}
    c.DeviceFile.path = str(tmp_path / "devices.json")
    yield c
    GPULab.clear_instance()


def make(config, uid, name, groups=(), server=""):
    user = SimpleNamespace(id=uid, name=name, groups=[SimpleNamespace(name=g) for g in groups])
    s = TrivialSpawner(user=user, config=config, hub=None)
    s.orm_spawner = SimpleNamespace(name=server, server=None, state=None)
    return s


async def test_trivial_backend_gets_gpus_quota_and_release(config):
    a = make(config, 1, "ann", ["staff"])
    a.user_options = {"profile": "minimal", "gpus": 3}
    await a.run_pre_spawn_hook()
    assert a.applied == {"devices": ["0", "1", "2"], "profile": "minimal"}
    await a.start()
    assert json.loads(Path(config.DeviceFile.path).read_text())["devices"] == ["0", "1", "2"]
    env = a.gpulab_env()
    assert env["DEVICE_FILE_IDS"] == "0;1;2" and env["GPULAB_GPUS"] == "0,1,2"
    assert "CUDA_VISIBLE_DEVICES" not in env  # the backend decides how devices are selected
    assert {"gpus": ["0", "1", "2"], "gpu_type": "A100-80GB"}.items() <= a.get_state().items()
    messages = [e["message"] for e in a._gpulab_events]
    assert messages[0] == "Reserved GPUs 0,1,2 (3 A100-80GB GPUs)"

    b = make(config, 2, "bob")
    b.user_options = {"gpus": 2}
    with pytest.raises(SpawnException) as e:
        await b.run_pre_spawn_hook()
    assert e.value.status_code == 409 and "1 of 4 is free" in e.value.message

    await a.stop()
    await a.run_post_stop_hook()
    await b.run_pre_spawn_hook()
    assert b.applied["devices"] == ["0", "1"]


@pytest.mark.parametrize(
    "options, status, fragment",
    [
        ({"gpus": 3}, 403, "the default quota allows 2 GPUs"),
        ({"gpus": 9}, 400, "from 0 to 4"),
        ({"profile": "x"}, 400, "Unknown profile 'x'"),
    ],
)
async def test_refusals_are_the_same_for_every_backend(config, options, status, fragment):
    s = make(config, 3, "cat")
    s.user_options = options
    with pytest.raises(SpawnException) as e:
        await s.run_pre_spawn_hook()
    assert e.value.status_code == status and fragment in e.value.message
    assert GPULab.instance(config=config).allocator.snapshot().servers == []


async def test_env_providers_add_to_every_backend(config):
    seen = []

    async def provider(spawner, allocation, profile):
        seen.append((spawner.user.name, allocation.count, profile.name))
        return {"EXTRA_TOKEN": f"for-{spawner.user.name}"}

    config.GPULab.env_providers = [provider, lambda s, a, p: {"SYNC": "1"}]
    s = make(config, 4, "dee")
    s.user_options = {"gpus": 1}
    await s.run_pre_spawn_hook()
    env = s.gpulab_env()
    assert env["EXTRA_TOKEN"] == "for-dee" and env["SYNC"] == "1" and env["GPULAB_GPU_COUNT"] == "1"
    assert seen == [("dee", 1, "minimal")]


async def test_a_cluster_request_no_node_could_hold_is_refused_before_anything_is_reserved(config):
    """Where the scheduler places GPUs, the never-fits check runs while the spec is resolved:
    before a reservation is written, the same for every engine backend."""
    config.GPULab.placement = "engine"
    config.GPULab.inventory_spec = "2xA100-80GB@n1, 2xA100-80GB@n2"
    config.GPULab.quotas = {"default": {"max_gpus": 4}}
    s = make(config, 5, "eve")
    s.user_options = {"gpus": 3}
    with pytest.raises(SpawnException) as e:
        await s.run_pre_spawn_hook()
    assert e.value.status_code == 409 and "No node of the cluster has 3 A100-80GB GPUs" in e.value.message
    assert "Ask for 2 or fewer" in e.value.message
    assert GPULab.instance(config=config).allocator.snapshot().servers == []
    s.user_options = {"gpus": 2}
    await s.run_pre_spawn_hook()
    assert s.gpulab_spec.name == "minimal" and s.gpulab_allocation.count == 2


async def test_every_backend_borrows_and_says_so(config):
    config.GPULab.queue_settings = {"borrowing": {"enabled": True, "groups": ["staff"]}}
    a = make(config, 1, "ann", ["staff"])
    a.user_options = {"profile": "minimal", "gpus": 4, "preemptible": True}
    await a.run_pre_spawn_hook()  # within her quota, but she asked to be preemptible: borrowed
    assert a.gpulab_allocation.borrowed
    assert any("Borrowed beyond your quota" in e["message"] for e in a._gpulab_events)
    b = make(config, 2, "bob", ["student"])
    b.user_options = {"profile": "minimal", "gpus": 1, "preemptible": True}
    with pytest.raises(SpawnException) as e:
        await b.run_pre_spawn_hook()
    assert e.value.status_code == 403 and "Only members of 'staff'" in e.value.message
    b.user_options = {"profile": "minimal", "gpus": 1, "preemptible": "yes"}
    with pytest.raises(SpawnException) as e:
        await b.run_pre_spawn_hook()
    assert e.value.status_code == 400 and "'preemptible' must be true or false" in e.value.message


@pytest.mark.parametrize("started, where", [
    (("127.0.0.1", 8001), "http://127.0.0.1:8001"),
    (("", 8001), "http://127.0.0.1:8001"),  # all interfaces: probed (and adopted) on loopback
    (("0.0.0.0", "8001"), "http://127.0.0.1:8001"),
    (("10.0.0.5", 9000), "http://10.0.0.5:9000"),
    ("http://node7:8888/", "http://node7:8888"),
])
def test_where_a_started_server_listens(config, started, where):
    assert TrivialSpawner(config=config).gpulab_listen_url(started) == where


OLD_STATE = {"spawn_id": "s-1", "gpus": ["2", "3"], "gpu_type": "A100-80GB", "profile": "minimal",
             "gpu_devices": ["host:2", "host:3"]}


@pytest.mark.parametrize("saved, ids", [
    (OLD_STATE, ("2", "3")),  # saved by a hub before gpu_ids: the ids under `gpus` only
    ({**OLD_STATE, "gpu_ids": ["2", "3"]}, ("2", "3")),
    ({**OLD_STATE, "gpu_ids": [], "gpus": []}, ()),  # engine placement: the scheduler picked them
])
def test_a_saved_state_is_read_whichever_hub_saved_it(config, saved, ids):
    s = TrivialSpawner(config=config)
    s.load_state(saved)
    assert s.gpulab_held.gpu_ids == ids and s.gpulab_holding == "s-1"
    assert s.gpulab_phase.up  # a server whose state was saved had started: charged while alive
    state = s.get_state()
    # written under gpu_ids, and still under gpus: the key admins read and older hubs expect
    assert state["gpu_ids"] == state["gpus"] == list(ids)
    assert {k: state[k] for k in ("spawn_id", "gpu_type", "profile", "gpu_devices")} == {
        k: saved[k] for k in ("spawn_id", "gpu_type", "profile", "gpu_devices")}


def test_a_state_without_a_spawn_id_holds_nothing(config):
    s = TrivialSpawner(config=config)
    s.load_state({"gpus": ["0"]})
    assert s.gpulab_held is None and not s.gpulab_phase.holds


async def _up_then_stopped(config, monkeypatch, uid, name, note):
    """A server started and stopped at once, while the note that it is up is still being
    written (``note`` replaces the usage store's ``mark_ready``)."""
    core = GPULab.instance(config=config)
    monkeypatch.setattr(UsageStore, "mark_ready", note)
    s = make(config, uid, name)
    s.user_options = {"gpus": 1}
    await s.run_pre_spawn_hook()
    await s.start()
    (rec,) = core.usage.records(name)
    await s.stop()
    await s.run_post_stop_hook()
    (closed,) = core.usage.records(name)
    return s, rec, closed


async def test_a_server_stopped_before_its_ready_note_is_written_is_still_charged_from_when_it_was_up(config, monkeypatch):
    """The note that a server is up is written after the spawn has answered (one trip fewer to
    the worker threads on its path); its release waits for it, so the record is closed after it
    has its start, not as a server that never came up (not charged)."""
    real = UsageStore.mark_ready
    writes = []

    def slow_note(store, spawn_id, at=None):
        time.sleep(0.3)
        real(store, spawn_id, at)
        writes.append(time.monotonic())

    t0 = time.monotonic()
    s, rec, closed = await _up_then_stopped(config, monkeypatch, 5, "eve", slow_note)
    assert rec.ready_at is None  # the spawn answered before the note
    assert writes and writes[0] - t0 >= 0.3  # ... which the release waited for
    assert closed.ready_at is not None and closed.stopped_at >= closed.ready_at
    assert closed.stop_reason == "user"


async def test_a_ready_note_that_failed_is_written_at_the_release(config, monkeypatch):
    def failing_note(store, spawn_id, at=None):
        raise OSError("database away for a moment")

    s, rec, closed = await _up_then_stopped(config, monkeypatch, 6, "fay", failing_note)
    assert rec.ready_at is None
    assert closed.ready_at is not None and closed.stop_reason == "user"  # charged, from when it was up


async def test_a_running_server_whose_ready_note_a_dead_hub_never_wrote_is_charged_after_the_restart(
        config, monkeypatch):
    """The hub died after the spawn answered and before the note was written: the restarted
    hub's check of the recorded, running server writes it."""
    core = GPULab.instance(config=config)
    monkeypatch.setattr(UsageStore, "mark_ready", lambda store, spawn_id, at=None: None)  # never written
    s = make(config, 7, "gus")
    s.user_options = {"gpus": 1}
    await s.run_pre_spawn_hook()
    await s.start()
    assert core.usage.records("gus")[0].ready_at is None

    restarted = make(config, 7, "gus")
    restarted.load_state(s.get_state())
    assert await check_after_restart(restarted, None) is None  # still running
    (rec,) = core.usage.records("gus")
    assert rec.ready_at is not None and rec.stopped_at is None
