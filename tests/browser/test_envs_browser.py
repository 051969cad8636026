"""Environments in a real browser: a profile shown as being installed becomes selectable in the
open form, without a reload; VS Code and JupyterLab's GPU dashboard, for the screenshots in
docs/screenshots/."""

from __future__ import annotations

import fcntl
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import requests
import yaml

from hub_plugins.spawn.profiles import load_dir
from tests.envs.conftest import pytorch_env, vscode_env  # noqa: F401 - fixtures (the built environments)
from tests.support.browser import new_page, shot, sign_in, sign_up
from tests.support.hubproc import ROOT, TEST_ENVS_DIR, Hub

pytestmark = [pytest.mark.browser, pytest.mark.hub]

# a small real environment: jupyterhub's singleuser with JupyterLab, the hub's versions
TINY = {"display_name": "Tiny", "description": "JupyterLab {jupyterlab}, built while you watch", "order": 5,
        "environment": {"as_of": "2026-11-29", "pip": ["jupyterhub==6.1.1", "jupyterlab==4.6.6"]},
        "gpus": {"counts": [0]}}


@pytest.fixture
def installing_hub(tmp_path_factory, local_backend):
    """A hub whose 'envs' service builds the Tiny profile's environment into an empty directory."""
    root = Path(tempfile.mkdtemp(prefix="gpulab-envs-browser-", dir="/var/tmp"))
    root.chmod(0o755)  # the servers' system users reach the environment
    profiles, envs = root / "profiles", root / "envs"
    profiles.mkdir()
    shutil.copy(ROOT / "profiles" / "minimal.yaml", profiles)
    (profiles / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    hub = Hub(tmp_path_factory.mktemp("hub"), inventory="1xA100-80GB", profiles_dir=str(profiles),
              local=dict(local_backend), extra={"environments": {"dir": str(envs), "build_missing": True}})
    yield hub, envs, load_dir(profiles).get("tiny")
    hub.close()
    shutil.rmtree(root, ignore_errors=True)


def test_profile_being_installed_becomes_selectable(browser, installing_hub):
    hub, envs, tiny = installing_hub
    # hold the environment's lock, as a `make envs` building it would: the hub's service waits
    # for it, and the form says the profile is waiting to be installed
    (envs / ".gpulab").mkdir(parents=True)
    lock = open(envs / ".gpulab" / f"{tiny.environment.dirname}.lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    hub.start()
    page = new_page(browser)
    sign_up(page, hub, "admin")
    sign_in(page, hub, "admin")
    page.wait_for_selector("#gpulab-form")
    card = page.locator('.profile-card[data-profile="tiny"]')
    assert page.is_disabled("#profile-tiny")
    page.wait_for_function("() => !document.querySelector('.profile-card[data-profile=tiny] .gpulab-install').hidden",
                           timeout=30_000)
    assert "Waiting to be installed" in card.inner_text()
    # once the service has started, it waits for the lock: the form says so (refreshed every 3 s)
    page.wait_for_function("() => /another environment is being built first/.test(document.querySelector("
                           "'.profile-card[data-profile=tiny] .gpulab-why').textContent)", timeout=60_000)
    fcntl.flock(lock, fcntl.LOCK_UN)  # the service's build starts now
    lock.close()
    # the page refreshes its model every 10 s: the real build's progress shows, then the profile
    # is enabled, in the same page (no reload)
    page.wait_for_function("() => /step [0-9] of [0-9]/.test(document.querySelector("
                           "'.profile-card[data-profile=tiny] .gpulab-why').textContent)", timeout=120_000)
    page.locator("body").focus()
    shot(page, "env-installing")
    text = card.inner_text()
    assert re.search(r"Being installed \(step \d of 3: .*, \d+ (min \d+ )?s so far\)", text), text
    page.wait_for_function("() => !document.getElementById('profile-tiny').disabled || /failed/.test("
                           "document.querySelector('.profile-card[data-profile=tiny] .gpulab-why').textContent)",
                           timeout=300_000)
    assert not page.is_disabled("#profile-tiny"), card.inner_text()
    assert "installed" not in card.inner_text() and card.locator(".gpulab-install").is_hidden()
    assert "GB on disk" in card.inner_text() or "MB on disk" in card.inner_text()  # admins see the size
    page.check("#profile-tiny")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(r"/user/admin/lab"), timeout=120_000)
    page.wait_for_selector(".jp-LabShell", timeout=120_000)
    assert hub.server_model("admin")["state"]["profile"] == "tiny"
    assert (envs / tiny.environment.dirname / ".gpulab-env.json").exists()
    hub.stop_server("admin")


@pytest.mark.envs
@pytest.mark.slow
def test_vscode_and_gpu_dashboard_screenshots(browser, hub_factory, pytorch_env, vscode_env):
    hub = hub_factory(inventory="2xA100-80GB", quotas={"default": {"max_gpus": 2, "max_servers": 2}},
                      extra={"environments": {"dir": TEST_ENVS_DIR}})
    page = new_page(browser)
    sign_up(page, hub, "admin")
    sign_in(page, hub, "admin")
    # VS Code, started from the form: the profile's default URL is /user/<name>/vscode/
    page.wait_for_selector("#gpulab-form")
    page.check("#profile-vscode")
    page.click("label[for=gpus-1]")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(r"/user/admin/vscode/"), timeout=180_000)
    page.wait_for_selector(".monaco-workbench", timeout=120_000)
    time.sleep(3)  # the workbench settles (welcome page)
    # its terminal has the server's GPUs
    page.keyboard.press("Control+Shift+P")
    page.keyboard.type("Terminal: Create New Terminal")
    page.wait_for_timeout(1000)
    page.keyboard.press("Enter")
    page.wait_for_selector(".xterm-helper-textarea", state="attached", timeout=60_000)
    time.sleep(3)  # the shell starts
    page.locator(".xterm-helper-textarea").last.focus()  # the terminal gets the keys, not the chat box
    page.keyboard.press("Enter")  # the first keys may arrive before the shell reads them
    time.sleep(1)
    # (VS Code's terminal may swallow the first word typed into a fresh shell: a sacrificial one)
    page.keyboard.type("true; printenv CUDA_VISIBLE_DEVICES GPULAB_PROFILE | tee terminal.txt", delay=40)
    page.keyboard.press("Enter")
    # the terminal draws on a canvas: read what it wrote through the server's contents API
    seen, deadline = "", time.monotonic() + 30
    while "vscode" not in seen and time.monotonic() < deadline:
        r = requests.get(f"{hub.url}/user/admin/api/contents/terminal.txt", timeout=10,
                         headers={"Authorization": f"token {hub.token}"})
        seen = r.json().get("content") or "" if r.status_code == 200 else ""
        time.sleep(0.5)
    assert seen.split() == ["0", "vscode"], seen  # CUDA_VISIBLE_DEVICES: the GPU the form asked for
    time.sleep(1)
    shot(page, "vscode")
    hub.stop_server("admin")
    # JupyterLab in the PyTorch profile, with the GPU dashboard's panel open
    hub.start_server("admin", {"profile": "pytorch", "gpus": 1}, timeout=240)
    page.goto(f"{hub.url}/user/admin/lab")
    page.wait_for_selector(".jp-Launcher", timeout=120_000)
    tab = page.locator(".jp-SideBar [title*='GPU Dashboards'], .jp-SideBar [data-id*='nvdashboard']").first
    tab.click()
    page.get_by_text("Machine Resources").click()  # the CPU/memory panel works without a GPU
    page.wait_for_timeout(5000)
    no = page.get_by_role("button", name="No", exact=True)  # "get notified about Jupyter news?"
    if no.count():
        no.first.click()
    shot(page, "gpu-dashboard")
