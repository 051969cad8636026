"""gpulab.yaml's slurm and kubernetes sections -> traitlets config (pure update functions)."""

from __future__ import annotations

import pytest
from traitlets.config import Config

from hub_plugins.settings.errors import ConfigError
from hub_plugins.settings.apply import BACKEND_SPAWNERS, UPDATES
from hub_plugins.settings.cluster import update_kubernetes, update_slurm
from hub_plugins.settings.defaults import deep_merge
from hub_plugins.settings.schema import DEFAULTS, GPULAB_SCHEMA
from hub_plugins.settings.validate import validate


def cfg(**over):
    return deep_merge(DEFAULTS, over)


def test_backends_are_registered():
    assert BACKEND_SPAWNERS["slurm"] == "gpulab-slurm" and BACKEND_SPAWNERS["kubernetes"] == "gpulab-kubernetes"
    assert update_slurm in UPDATES and update_kubernetes in UPDATES


def test_slurm_section():
    c = Config()
    update_slurm(c, cfg(backend="slurm", slurm={"gpu_partition": "gpu", "gres_types": {"a100": "A100-80GB"},
                                                 "extra_options": ["--constraint=ib"], "time_limit": "1-00:00:00"}))
    assert c.GPULab.placement == "engine" and type(c.GPULab.capacity_reader).__name__ == "SlurmCapacity"
    assert c.GPULab.capacity_reader.partition == "gpu"
    sp = c.SlurmGPUSpawner
    assert (sp.gpu_partition, sp.partition, sp.time_limit, sp.extra_options) == ("gpu", "", "1-00:00:00", ["--constraint=ib"])
    assert sp.start_timeout == 3600 and sp.listen_ip == "0.0.0.0" and sp.create_users is False
    with pytest.raises(ConfigError, match="gpulab sets --gres itself"):
        update_slurm(Config(), cfg(backend="slurm", slurm={"extra_options": ["--gres=gpu:8"]}))
    untouched = Config()
    update_slurm(untouched, cfg(backend="local"))
    assert "GPULab" not in untouched


def test_a_simulated_inventory_keeps_the_cluster_reader_off():
    c = Config()
    update_kubernetes(c, cfg(backend="kubernetes", gpus={"inventory": "4xA100-80GB"}))
    assert c.GPULab.placement == "engine" and "capacity_reader" not in c.GPULab


@pytest.mark.parametrize("section, bad", [
    ("slurm", {"partition": "gpu\n#SBATCH --gres=gpu:8"}),
    ("slurm", {"time_limit": "8 hours"}),
    ("slurm", {"gres_types": {"a100": "not a type"}}),
    ("slurm", {"partiton": "gpu"}),
    ("kubernetes", {"gpu_types": [{"name": "A100-80GB"}]}),
    ("kubernetes", {"storage": {"capacity": "lots"}}),
])
def test_schema_refuses_bad_values(section, bad):
    with pytest.raises(ConfigError):
        validate({section: bad}, GPULAB_SCHEMA, "gpulab.yaml")
