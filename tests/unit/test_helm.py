"""helm-values/values.yaml: up to date with its sources, valid for the z2jh chart's schema, its
profileList equal to what gpulab's spawner applies, and its hub config loading gpulab."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
import yaml

from tests.support import kube  # noqa: I001  (sets $KUBECONFIG before kubespawner is imported)

from kubernetes_asyncio.client import ApiClient
from kubespawner import KubeSpawner
from traitlets.config import Config

from hub_plugins.core import GPULab
from hub_plugins.spawners.kubernetes import helm
from hub_plugins.spawners.kubernetes.spawner import KubeGPUSpawner

ROOT = Path(__file__).resolve().parents[2]
# The chart's schema and defaults, kept outside the project (../shared/data/z2jh, see its README);
# GPULAB_Z2JH_DIR may point elsewhere.
Z2JH = Path(os.environ.get("GPULAB_Z2JH_DIR") or ROOT.parent / "shared" / "data" / "z2jh")


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(helm.OUTPUT.read_text())


def test_committed_values_are_up_to_date():
    assert helm.OUTPUT.read_text() == helm.generate(), "helm-values/values.yaml is out of date: run `make helm-values`"
    assert helm.main(["--check"]) == 0


def merge(base, over):
    """Helm's merge of user values over chart defaults: maps merge, everything else replaces."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def test_values_validate_against_the_z2jh_chart_schema(values):
    if not (Z2JH / "values.schema.yaml").exists():
        pytest.skip(f"the z2jh chart schema is not here ({Z2JH}/values.schema.yaml; set GPULAB_Z2JH_DIR): "
                    "helm-values/values.yaml was NOT validated")
    schema = yaml.safe_load((Z2JH / "values.schema.yaml").read_text())
    defaults = yaml.safe_load((Z2JH / "values.yaml").read_text())
    merged = merge(defaults, values)
    jsonschema.validators.validator_for(schema)(schema).validate(merged)
    # and the schema does catch mistakes (a misspelt key)
    broken = merge(merged, {"singleuser": {"storage": {"capacty": "10Gi"}}})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validators.validator_for(schema)(schema).validate(broken)


def test_values_wire_gpulab_into_the_chart(values):
    hub, single = values["hub"], values["singleuser"]
    assert hub["db"]["type"] == "postgres" and hub["db"]["url"].startswith("postgresql+psycopg://")
    assert hub["extraEnv"]["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "gpulab-postgres"
    assert "configure(c)" in hub["extraConfig"]["gpulab"]
    compile(hub["extraConfig"]["gpulab"], "extraConfig", "exec")
    assert hub["services"]["billing"]["command"] == ["python3", "-m", "services.billing"]
    assert hub["services"]["billing"]["url"].endswith(":10101")
    assert hub["services"]["culler"]["command"] == ["python3", "-m", "services.culler"]
    assert hub["services"]["mlflow"]["url"].endswith(":10102")
    assert {r["services"][0] for r in hub["loadRoles"].values()} == {"billing", "culler", "mlflow"}
    assert hub["services"]["mlflow"]["command"][3:5] == ["serve", "--state-dir"]  # its required arguments
    for svc in hub["services"].values():  # 'hub' is the Service's name: listen on the pod's addresses
        assert svc["environment"]["GPULAB_SERVICE_BIND"] == "0.0.0.0"
    from hub_plugins.settings.apply import BILLING_SCOPES, CULLER_SCOPES  # the same least scopes as on one machine
    assert hub["loadRoles"]["gpulab-billing"]["scopes"] == list(BILLING_SCOPES)
    assert hub["loadRoles"]["gpulab-culler"]["scopes"] == list(CULLER_SCOPES)
    assert values["cull"] == {"enabled": False}  # gpulab's GPU-aware culler replaces the chart's
    profiles = sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml"))
    assert [p["slug"] for p in single["profileList"]] == ["minimal", "pytorch", "tensorflow", "vscode"]
    assert sorted(k.removeprefix("gpulab-profile-") for k in hub["extraFiles"] if k.startswith("gpulab-profile-")) == profiles


def test_hub_config_in_the_values_loads_gpulab(values, tmp_path):
    """Lay the extraFiles out as the hub pod sees them and run the extraConfig's function."""
    for f in values["hub"]["extraFiles"].values():
        path = tmp_path / f["mountPath"].lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f["stringData"])
    c = Config()
    c.JupyterHub.db_url = values["hub"]["db"]["url"]  # what the chart's own config sets first
    from hub_plugins.spawners.kubernetes.hubconfig import configure

    cfg = configure(c, str(tmp_path / values["hub"]["extraEnv"]["GPULAB_CONFIG"].lstrip("/")))
    assert cfg["backend"] == "kubernetes"
    assert c.JupyterHub.spawner_class == "gpulab-kubernetes" and c.GPULab.placement == "engine"
    assert c.GPULab.db_url == values["hub"]["db"]["url"]
    assert c.KubeGPUSpawner.pvc_name_template == "claim-{username}"
    assert c.KubeGPUSpawner.storage_capacity == values["singleuser"]["storage"]["capacity"]
    assert type(c.GPULab.capacity_reader).__name__ == "KubeCapacity"
    assert c.HubCollector.sweep_minutes == 60  # the hub's garbage-collector pacing, as on one host


@pytest.fixture
def core_config(tmp_path):
    GPULab.clear_instance()
    c = Config()
    c.GPULab.db_url = f"sqlite:///{tmp_path}/gpulab.sqlite"
    c.GPULab.profiles_dir = str(ROOT / "profiles")
    c.GPULab.placement = "engine"
    c.GPULab.inventory_spec = "4xA100-80GB@n1, 1xA100-80GB+mig(3g.40gb, 4*1g.10gb)@n2, 4xT4-16GB@n3, 1xT4-16GB+shared(4)@n4"
    c.GPULab.quotas = {"default": {"max_gpus": 8}}
    c.KubeGPUSpawner.gpu_types = [{"name": "A100-80GB", "product": "NVIDIA-A100-SXM4-80GB"},
                                  {"name": "T4-16GB", "product": "Tesla-T4"},
                                  {"name": "T4-16GB:shared", "product": "Tesla-T4-SHARED"}]
    c.KubeGPUSpawner.gpu_tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    yield c
    GPULab.clear_instance()


def _user(name="ann"):
    return SimpleNamespace(id=7, name=name, groups=[], url=f"/user/{name}/")


def _pod_facts(pod: dict) -> dict:
    c = pod["spec"]["containers"][0]
    return {"image": c["image"], "resources": c["resources"], "nodeSelector": pod["spec"].get("nodeSelector"),
            "tolerations": pod["spec"].get("tolerations")}


async def test_profile_list_applied_by_kubespawner_equals_what_gpulab_applies(values, core_config):
    """For every profile and GPU option of the values: plain KubeSpawner applying the
    profileList choice builds the same pod (image, resources, node selector, tolerations) as
    gpulab's spawner granting the same request."""
    gpu_types = {c["name"]: c for c in yaml.safe_load(helm.SOURCE.read_text())["kubernetes"]["gpu_types"]}
    profile_list = values["singleuser"]["profileList"]
    checked = 0
    async with ApiClient() as api:
        for entry in profile_list:
            for key, choice in entry["profile_options"]["gpus"]["choices"].items():
                plain = KubeSpawner(_mock=True, user=_user(), config=Config(), profile_list=profile_list,
                                    orm_spawner=SimpleNamespace(name="", server=None, state=None))
                plain.user_options = {"profile": entry["slug"], "gpus": key}
                await plain.load_user_options()
                native = _pod_facts(api.sanitize_for_serialization(await plain.get_pod_manifest()))

                count = int(key.split("x-")[0]) if key != "none" else 0
                gpu_type = next((n for n in gpu_types if key == f"{count}x-{helm._slug(n)}"), "")
                ours = KubeGPUSpawner(_mock=True, user=_user(), config=core_config,
                                      orm_spawner=SimpleNamespace(name="", server=None, state=None))
                ours.user_options = {"profile": entry["slug"], "gpus": count, **({"gpu_type": gpu_type} if count else {})}
                try:
                    await ours.run_pre_spawn_hook()
                except Exception as e:  # a MIG count beyond what the simulated nodes have
                    assert "No node of the cluster has" in str(e), (entry["slug"], key, e)
                    continue
                mine = _pod_facts(api.sanitize_for_serialization(await ours.get_pod_manifest()))
                await ours.run_post_stop_hook()
                assert mine == native, (entry["slug"], key)
                checked += 1
    assert checked >= 30
