"""The spawn form with engine placement (SLURM, Kubernetes): a GPU count that is not free now
but fits a node is offered, with a note that it queues; one no node can hold is not (pure)."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction
from pathlib import Path

import pytest

from hub_plugins.spawn.form import FormContext, form_model
from hub_plugins.gpu.availability import TypeAvailability
from hub_plugins.spawn.profiles import load_dir
from hub_plugins.quota import QuotaConfig, resolve

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_dir(ROOT / "profiles", "minimal")
NOW = dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc)


def avail(free: int, largest: int, per_host: int) -> list[TypeAvailability]:
    return [TypeAvailability("A100-80GB", "gpu", 8, free, largest, Fraction(1), 81920, per_host)]


def choices(queue: bool, free: int, largest: int, per_host: int, max_gpus=4):
    eff = resolve(QuotaConfig.from_config({"default": {"max_gpus": max_gpus}}), "ann", [], NOW)
    m = form_model(FormContext(CATALOG, eff, [], avail(free, largest, per_host), [], engine_queue=queue))
    minimal = next(p for p in m["profiles"] if p["name"] == "minimal")
    pick = lambda cs: {c["count"]: (c["ok"], c["why"]) for c in cs}  # noqa: E731
    return pick(minimal["choices"]["A100-80GB"]), pick(minimal["choices"][""])


@pytest.mark.parametrize("queue, free, largest, per_host, max_gpus, count, want", [
    # gpulab places devices: what is not free now is refused
    (False, 1, 1, 4, 4, 2, (False, "only 1 free")),
    (False, 0, 0, 4, 4, 1, (False, "none free")),
    # a scheduler places them: it queues what fits a node, refuses what fits none
    (True, 1, 1, 4, 4, 2, (True, "queues: only 1 free now")),
    (True, 0, 0, 4, 4, 4, (True, "queues: none free now")),
    (True, 8, 4, 4, 4, 4, (True, "")),
    (True, 8, 4, 4, 4, 3, (True, "")),
    (True, 0, 0, 2, 4, 3, (False, "no node has 3 (at most 2)")),
    # the quota still decides
    (True, 0, 0, 4, 2, 3, (False, "over your quota (2 GPUs left)")),
])
def test_counts_offered(queue, free, largest, per_host, max_gpus, count, want):
    by_type, any_type = choices(queue, free, largest, per_host, max_gpus)
    assert by_type[count] == want
    assert any_type[count] == want  # "any type" says the same when there is one type
