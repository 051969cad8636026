"""The SLURM spawner's decisions on job states a single-node test cluster cannot easily produce
(preemption with requeue, suspension, an unreachable controller, a job held by an admin), with
SLURM's commands replaced by recorded answers. (The real cluster: tests/hub/test_slurm.py.)"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import pytest
from jupyterhub.spawner import SpawnException
from traitlets.config import Config

from hub_plugins.core import GPULab
from hub_plugins.spawners.slurm import cli
from hub_plugins.spawners.slurm.jobs import JobRecord, JobView
from hub_plugins.spawners.slurm.spawner import SlurmGPUSpawner

ROOT = Path(__file__).resolve().parents[2]


class FakeSlurm:
    def __init__(self, views):
        self.views = list(views)  # what squeue answers, in order (the last one repeats)
        self.cancelled: list[str] = []

    async def squeue_job(self, job_id):
        view = self.views.pop(0) if len(self.views) > 1 else self.views[0]
        if view is None:
            raise cli.SlurmUnavailable("squeue failed (exit 1): Unable to contact slurm controller")
        return view

    async def job_record(self, job_id):
        return JobRecord(job_id, state="PREEMPTED", end=dt.datetime(2026, 11, 22, 12, 0), exit_code="0:15")

    async def cancel(self, job_id, prefix=None):
        self.cancelled.append(job_id)

    async def pending_ids(self, partition):
        return ["7", "42"]

    async def default_partition(self):
        return "main"


@pytest.fixture
def make(tmp_path, monkeypatch):
    GPULab.clear_instance()
    c = Config()
    c.GPULab.inventory_spec = "4xA100-80GB"
    c.GPULab.placement = "engine"
    c.GPULab.db_url = f"sqlite:///{tmp_path}/gpulab.sqlite"
    c.GPULab.profiles_dir = str(ROOT / "profiles")
    c.SlurmGPUSpawner.queue_poll_interval = 0.01
    c.SlurmGPUSpawner.poll_cache_seconds = 0

    def make(views):
        fake = FakeSlurm(views)
        for name in ("squeue_job", "job_record", "cancel", "pending_ids", "default_partition"):
            monkeypatch.setattr(cli, name, getattr(fake, name))
        user = SimpleNamespace(id=1, name="ann", groups=[])
        s = SlurmGPUSpawner(user=user, config=c, hub=None,
                            orm_spawner=SimpleNamespace(name="", server=None, state=None))
        s.job_id = "42"
        s.slurm_job = {"job_id": "42", "started": "2026-11-22T11:00:00"}
        return s, fake

    yield make
    GPULab.clear_instance()


@pytest.mark.parametrize("state", ["RUNNING", "COMPLETING", "SUSPENDED"])
async def test_a_running_or_suspended_job_is_alive(make, state):
    s, fake = make([JobView(state)])
    assert await s.poll() is None and fake.cancelled == []


async def test_an_unreachable_controller_is_not_a_dead_server(make):
    s, fake = make([None])
    assert await s.poll() is None


async def test_a_requeued_job_ends_its_server_and_is_cancelled(make):
    s, fake = make([JobView("PENDING", "BeginTime")])
    assert await s.poll() == 1
    assert fake.cancelled == ["42"]
    assert s.get_state()["slurm_job"]["end_state"] == "PREEMPTED"  # for usage records


async def test_a_pending_job_during_start_is_not_dead(make):
    s, fake = make([JobView("PENDING", "Resources")])
    s._slurm_starting = True
    assert await s.poll() is None and fake.cancelled == []


async def test_a_gone_job_ends_its_server_with_how_it_ended(make):
    s, fake = make([JobView("")])
    assert await s.poll() == 1
    job = s.get_state()["slurm_job"]
    assert (job["end_state"], job["ended"], job["exit_code"]) == ("PREEMPTED", "2026-11-22T12:00:00", "0:15")


async def test_waiting_shows_reasons_once_each_and_a_hopeless_job_fails_at_once(make):
    s, fake = make([JobView("PENDING", "Priority"), JobView("PENDING", "Priority"),
                    JobView("PENDING", "Resources", dt.datetime(2030, 1, 1, 9, 0)), JobView("PENDING", "JobHeldAdmin")])
    with pytest.raises(SpawnException) as e:
        await s._wait_running()
    assert e.value.status_code == 409 and "held by an administrator [JobHeldAdmin]" in e.value.message
    lines = [ev["message"] for ev in s._gpulab_events]
    assert len(lines) == 2, lines  # the same reason is not repeated
    assert "[Priority]; position 2 of 2 waiting in partition" in lines[0]
    assert "[Resources]" in lines[1] and "estimated start Tue 01 Jan 09:00" in lines[1]
