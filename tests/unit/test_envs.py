"""Profile environments, the pure parts: pins, stamps, image tags, descriptions, the build's
steps and what the form and spawners say about an environment (tables)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from hub_plugins.envs import install
from hub_plugins.envs.manager import EnvState, default_dir, resolve_prefix
from hub_plugins.envs.spec import REQUIRED, EnvSpec, Pin, image_ref
from hub_plugins.envs.status import describe
from hub_plugins.spawn.profiles import load_dir, profile_from_dict
from hub_plugins.settings.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BASE = {"as_of": "2026-11-29", "pip": ["jupyterhub==6.1.1", "torch==2.15.0"], "version_of": "torch"}


def spec(**kw) -> EnvSpec:
    return EnvSpec.from_dict("pytorch", {**BASE, **kw})


@pytest.mark.parametrize("text, name, version, extras", [
    ("torch==2.15.0", "torch", "2.15.0", ""),
    ("tensorflow[and-cuda]==2.21.0", "tensorflow", "2.21.0", "[and-cuda]"),
    ("Jupyter_Resource.Usage==1.3.0", "Jupyter_Resource.Usage", "1.3.0", ""),
])
def test_pins(text, name, version, extras):
    p = Pin.parse(text)
    assert (p.name, p.version, p.extras, str(p)) == (name, version, extras, text)


@pytest.mark.parametrize("text", ["torch", "torch>=2.15", "torch==", "torch==2.15.0; python_version>'3'", "-e ."])
def test_not_exact_pins_refused(text):
    with pytest.raises(ValueError, match="exact pin"):
        Pin.parse(text)


def test_stamp_changes_with_every_pin_and_only_then():
    a = spec()
    assert a.stamp == spec(pip=["torch==2.15.0", "jupyterhub==6.1.1"]).stamp  # order does not matter
    assert a.stamp == spec(version_of="jupyterhub").stamp  # the tag's name is not content
    others = [spec(pip=["jupyterhub==6.1.1", "torch==2.14.1"]), spec(as_of="2026-11-30"), spec(python="3.12"),
              spec(npm={"code-server": "4.139.1"}), EnvSpec.from_dict("other", {**BASE})]
    assert len({a.stamp, *(o.stamp for o in others)}) == 6
    assert re.fullmatch(r"[0-9a-f]{10}", a.stamp)
    assert a.dirname == f"pytorch-{a.stamp}" and a.tag == f"2.15.0-{a.stamp}"


@pytest.mark.parametrize("data, message", [
    ({"pip": ["torch==2.15.0", "Torch==2.14.1"]}, "pinned twice"),
    ({"version_of": "numpy"}, "version_of: 'numpy' is not one of the pinned packages"),
    ({"pip": ["torch==2.15.0"]}, "must pin jupyterhub"),
])
def test_bad_specs(data, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        spec(**data)


def test_image_ref():
    s = spec()
    assert image_ref("gpulab/pytorch", s) == f"gpulab/pytorch:2.15.0-{s.stamp}"
    assert image_ref("registry:5000/gpulab/pytorch", s) == f"registry:5000/gpulab/pytorch:2.15.0-{s.stamp}"
    assert image_ref("gpulab/pytorch:custom", s) == "gpulab/pytorch:custom"  # an explicit tag wins
    assert image_ref("gpulab/pytorch", None) == "gpulab/pytorch" and image_ref("", s) == ""


def test_profile_gets_prefix_image_and_description_from_its_pins():
    p = profile_from_dict("pytorch", {"display_name": "PyTorch", "image": "gpulab/pytorch",
                                      "description": "PyTorch {torch} on Jupyter {jupyterhub}", "environment": BASE})
    assert p.description == "PyTorch 2.15.0 on Jupyter 6.1.1"
    assert p.local_prefix == "{envs}/" + p.environment.dirname and p.image.endswith(p.environment.tag)
    explicit = profile_from_dict("x", {"display_name": "X", "local": {"prefix": "/srv/env"}, "environment": BASE})
    assert explicit.local_prefix == "/srv/env"  # an admin's own environment is used as it is
    with pytest.raises(ConfigError, match=r"\{numpy\} is not a pinned package"):
        profile_from_dict("x", {"display_name": "X", "description": "numpy {numpy}", "environment": BASE})
    with pytest.raises(ConfigError, match="environment"):
        profile_from_dict("x", {"display_name": "X", "environment": {**BASE, "pip": ["torch>=2"]}})


def test_shipped_profiles_pin_what_every_server_needs():
    """Every environment: jupyterhub as the hub runs it, JupyterLab, the MLflow client, the GPU
    dashboard, resource usage; the same versions as the hub's own environment (minimal)."""
    hub_pins = dict(line.split("#")[0].strip().split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
                    if "==" in line.split("#")[0])
    catalog = load_dir(ROOT / "profiles")
    for p in catalog:
        assert p.environment is not None, p.name
        assert not p.environment.missing_required(), (p.name, p.environment.missing_required())
        for name in ("jupyterhub", "jupyterlab", "jupyterlab-nvdashboard", "jupyter-resource-usage", "nvidia-ml-py"):
            assert p.environment.version(name) == hub_pins[name], (p.name, name)
        assert p.environment.version("mlflow-skinny") == hub_pins["mlflow[auth]"], p.name
        raw = yaml.safe_load(Path(p.path).read_text())
        assert "{" in raw["description"], f"{p.name}: the description should name versions from its pins"
    assert set(REQUIRED) <= set(catalog.get("minimal").environment.pip_versions)
    assert catalog.get("pytorch").environment.version("torch") and catalog.get("pytorch").environment.version("torchvision")
    assert catalog.get("tensorflow").environment.pip[-1].extras == "[and-cuda]"
    vscode = catalog.get("vscode")
    assert vscode.default_url == "/vscode/" and vscode.environment.npm_versions["node"].startswith("24.")
    assert {"jupyter-server-proxy", "jupyter-vscode-proxy"} <= set(vscode.environment.pip_versions)
    assert vscode.env["JUPYTER_VSCODE_PROXY_USE_SOCKET"] == "1"  # never a TCP port other users reach


def test_build_steps_in_words():
    assert [k for k, _ in install.steps(spec().as_dict())] == ["venv", "pip", "check"]
    s = spec(npm={"node": "24.9.0", "code-server": "4.139.1"}).as_dict()
    plan = install.steps(s)
    assert [k for k, _ in plan] == ["venv", "pip", "node", "npm", "check"]
    assert plan[2][1] == "Installing Node.js 24.9.0 from npm" and plan[3][1] == "Installing code-server 4.139.1 from npm"
    assert "2 Python packages (torch, jupyterhub)" in plan[1][1]  # its own packages first
    assert install.cutoff("2026-11-29").isoformat() == "2026-11-30T00:00:00+00:00"


@pytest.mark.parametrize("have, lacking", [
    ({"cc", "make", "pkg-config", "npm", "/usr/include/gssapi/gssapi.h"}, []),
    ({"cc", "make", "pkg-config", "npm"}, ["libkrb5-dev"]),
    ({"/usr/include/gssapi/gssapi.h"}, ["build-essential", "npm", "pkg-config"]),
])
def test_missing_build_tools(have, lacking):
    assert install.missing_build_tools(exists=lambda p: p in have, which=lambda t: t if t in have else None) == lacking


def test_default_dir_and_prefixes():
    assert default_dir(True, "/root") == "/opt/gpulab/envs"
    assert default_dir(False, "/home/ann") == "/home/ann/.local/share/gpulab/envs"
    assert resolve_prefix("{envs}/pytorch-abc", "/opt/gpulab/envs", "/srv/hub") == "/opt/gpulab/envs/pytorch-abc"
    assert resolve_prefix("{hub}", "/opt/gpulab/envs", "/srv/hub") == "/srv/hub"


NOW = 1_000_000.0
READY = EnvState("ready", size=5_200_000_000, path="/e/pytorch-1")
BUILDING = EnvState("building", step=2, steps=3, what="Installing 9 Python packages (torch, ...)", started=NOW - 75,
                    log="/e/.gpulab/pytorch-1.log", path="/e/pytorch-1")
FAILED = EnvState("failed", error="installing the Python packages failed (exit status 1):\nno torch==9",
                  log="/e/.gpulab/pytorch-1.log", path="/e/pytorch-1")
MISSING = EnvState("missing", path="/e/pytorch-1")


@pytest.mark.parametrize("st, admin, build, ok, why, installing, admin_note", [
    (None, False, True, True, "", None, ""),
    (READY, False, True, True, "", None, ""),
    (READY, True, True, True, "", None, "environment /e/pytorch-1: 5.2 GB on disk"),
    (BUILDING, False, True, False, "being installed (step 2 of 3: installing 9 Python packages (torch, ...), 1 min 15 s "
     "so far); it can be chosen here as soon as it is ready", {"percent": 33, "text": "step 2 of 3: installing 9 Python "
     "packages (torch, ...), 1 min 15 s so far"}, ""),
    (BUILDING, True, True, False, None, None, "building /e/pytorch-1; log: /e/.gpulab/pytorch-1.log"),
    (EnvState("queued"), False, True, False, "waiting to be installed (another environment is being built first); it "
     "can be chosen here as soon as it is ready", {"percent": 0, "text": "waiting for another build to finish"}, ""),
    (FAILED, False, True, False, "unavailable, the admins have been told", None, ""),
    (FAILED, True, True, False, "its environment failed to build: installing the Python packages failed (exit status "
     "1). The log is /e/.gpulab/pytorch-1.log; fix the cause, then run `make envs PROFILES=pytorch` or restart the hub",
     None, FAILED.error),
    (MISSING, False, True, False, "waiting to be installed (the hub builds it in the background)",
     {"percent": 0, "text": "waiting to start"}, ""),
    (MISSING, True, False, False, "its environment is not installed (/e/pytorch-1): run `make envs PROFILES=pytorch`",
     None, ""),
    (MISSING, False, False, False, "its environment is not installed yet; an admin has to install it", None, ""),
])
def test_describe(st, admin, build, ok, why, installing, admin_note):
    d = describe(st, "pytorch", admin, build, now=NOW)
    assert d["ok"] is ok
    if why is not None:
        assert d["why"] == why
    if installing is not None or why is not None:
        assert d["installing"] == installing
    assert d["admin"] == admin_note


def test_the_check_imports_what_is_pinned():
    assert install.imports(["jupyterhub==6.1.1", "mlflow-skinny==3.17.2", "tensorflow[and-cuda]==2.21.0",
                            "nvidia-ml-py==13.615.71", "Jupyter_Server_Proxy==4.6.0"]) == \
        ["jupyterhub", "mlflow", "tensorflow", "jupyter_server_proxy"]
