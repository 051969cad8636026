"""A profile whose environment fails to build, through a real hub and its real 'envs' service (uv
cannot find the pinned version): admins are told the error and where the log is, users that the
profile is unavailable and the admins have been told; nobody can start it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from hub_plugins.envs.manager import EnvDir
from hub_plugins.spawn.profiles import load_dir
from tests.support.hubproc import ROOT
from tests.support.polling import wait_for

pytestmark = [pytest.mark.hub]

BROKEN = {"display_name": "Broken", "gpus": {"counts": [0]},
          "environment": {"as_of": "2026-11-29", "pip": ["jupyterhub==0.0.1"]}}  # no such release


@pytest.fixture
def hub(hub_factory):
    root = Path(tempfile.mkdtemp(prefix="gpulab-envs-hub-", dir="/var/tmp"))
    profiles = root / "profiles"
    profiles.mkdir()
    shutil.copy(ROOT / "profiles" / "minimal.yaml", profiles)
    (profiles / "broken.yaml").write_text(yaml.safe_dump(BROKEN))
    h = hub_factory(profiles_dir=str(profiles),
                    extra={"environments": {"dir": str(root / "envs"), "build_missing": True}})
    h.create_users("ann", "admin")
    yield h, EnvDir(root / "envs"), load_dir(profiles).get("broken")
    shutil.rmtree(root, ignore_errors=True)


def test_failed_build_told_to_admins_not_to_users(hub):
    h, envdir, broken = hub
    wait_for(lambda: envdir.read_state(broken.environment).state == "failed", timeout=180, what="the build to fail")
    st = envdir.read_state(broken.environment)
    assert "installing the Python packages failed" in st.error and "jupyterhub==0.0.1" in st.error, st.error
    code, body = h.spawn("ann", {"profile": "broken"}, token=h.user_token("ann"))
    assert code == 400 and body["message"] == \
        "Profile 'broken' cannot start here: unavailable, the admins have been told", body
    code, body = h.spawn("admin", {"profile": "broken"}, token=h.user_token("admin"))
    assert code == 400 and "its environment failed to build: installing the Python packages failed" in body["message"]
    assert envdir.log_file(broken.environment) in body["message"] and "make envs PROFILES=broken" in body["message"]
    assert "[gpulab envs] envs: broken FAILED: installing the Python packages failed" in h.log_path.read_text()
    assert h.spawn("ann", {"profile": "minimal"}, token=h.user_token("ann"))[0] in (201, 202)  # the rest works
