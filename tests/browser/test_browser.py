"""A person and an admin in a real browser (Debian's Chromium, driven by Playwright).

The story: an admin approves a new user and gives her a 2-GPU override; she signs in, sees the
spawn form with free GPUs and her quota, starts "Minimal" with 2 GPUs, watches the progress
page, lands in JupyterLab, and opens her quota page. With an identity provider, a person signs
in through the provider's page. Screenshots of each page go to docs/screenshots/.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import require
from tests.support.hubproc import ROOT, Hub
from tests.support.idp import OIDCProvider, django_oidc_available

pytestmark = [pytest.mark.browser, pytest.mark.hub]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = ROOT / "docs" / "screenshots"
PASSWORD = "correct-horse-battery"
UNTIL = (dt.date.today() + dt.timedelta(days=30)).isoformat()
# per shared/recipes/browser.md: no background traffic on a closed network
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    require(CHROMIUM is not None, "Chromium (Debian package chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "Playwright for Python (pip: playwright)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def new_page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    ctx.set_default_timeout(30_000)
    return ctx.new_page()


def shot(page, name: str, full_page: bool = False) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


@pytest.fixture(scope="module")
def slow_profiles():
    """The shipped profiles, with Minimal taking 11 s more to start (as a large image does): the
    hub shows the progress page to spawns that take longer than 10 s (JupyterHub's
    slow_spawn_timeout); quicker ones go straight to JupyterLab."""
    import sys
    import tempfile

    import yaml

    # outside pytest's private tmp dir: the servers' system users must reach the wrapper
    root = Path(tempfile.mkdtemp(prefix="gpulab-profiles-", dir="/tmp"))
    env = root / "slow-env"
    (env / "bin").mkdir(parents=True)
    wrapper = env / "bin" / "jupyterhub-singleuser"
    wrapper.write_text(f'#!/bin/sh\nsleep 11\nexec {Path(sys.prefix) / "bin" / "jupyterhub-singleuser"} "$@"\n')
    wrapper.chmod(0o755)
    for p in (ROOT / "profiles").glob("*.yaml"):
        data = yaml.safe_load(p.read_text())
        if p.stem == "minimal":
            data["local"]["prefix"] = str(env)
        (root / p.name).write_text(yaml.safe_dump(data))
    for d in (root, env, env / "bin"):
        d.chmod(0o755)  # servers run as their own system users when the tests run as root
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, local_backend, slow_profiles):
    hub = Hub(tmp_path_factory.mktemp("hub"), inventory="4xA100-80GB", profiles_dir=str(slow_profiles),
              quotas={"default": {"max_gpus": 1, "max_servers": 2}, "groups": {"researcher": {"max_gpus": 2}}},
              local=dict(local_backend))
    hub.start()
    yield hub
    hub.close()


def sign_up(page, hub, name):
    page.goto(f"{hub.url}/hub/signup")
    page.fill("#username_input", name)
    if page.locator("#email_input").count():
        page.fill("#email_input", f"{name}@lab.example")
    page.fill("#password_input", PASSWORD)
    page.fill("#password_confirmation_input", PASSWORD)
    page.click("#signup_submit")
    page.wait_for_load_state()


def sign_in(page, hub, name, screenshot=None):
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", name)
    page.fill("#password_input", PASSWORD)
    if screenshot:
        shot(page, screenshot)
    page.click("#login_submit")
    page.wait_for_load_state()


def test_admin_approves_and_grants_then_person_spawns_two_gpus(browser, hub):
    admin = new_page(browser)
    sign_up(admin, hub, "admin")  # listed in admin_users: approved at sign-up
    sign_in(admin, hub, "admin")

    nina = new_page(browser)
    sign_up(nina, hub, "nina")
    sign_in(nina, hub, "nina")
    assert "has not been authorized by an administrator yet" in nina.content()

    # the admin approves her on /hub/authorize
    admin.goto(f"{hub.url}/hub/authorize")
    row = admin.locator("tr", has_text="nina")
    row.get_by_role("button", name="Authorize").click()
    admin.wait_for_load_state()
    assert admin.locator("tr", has_text="nina").get_by_role("button", name="Unauthorize").count() == 1

    # she signs in: the default quota (1 GPU) is not enough for her experiment
    sign_in(nina, hub, "nina", screenshot="login")
    nina.wait_for_selector("#gpulab-form")
    assert "Limit: 1 GPU at a time" in nina.inner_text("#gpulab-quota")
    assert nina.is_disabled("#gpus-2")

    # the stock admin page lists her (users, groups and servers are managed there)
    admin.goto(f"{hub.url}/hub/admin")
    admin.wait_for_selector("text=nina", timeout=60_000)

    # the admin gives her a 2-GPU override on the quotas admin page (OAuth through the hub)
    admin.goto(f"{hub.url}/services/quotas/admin")
    admin.fill("#f-user", "nina")
    admin.fill("#f-max_gpus", "2")
    admin.fill("#f-expires", UNTIL)
    admin.fill("#f-reason", "thesis experiments")
    admin.fill("#f-approved_by", "prof. ada")
    admin.click("#add-override button[type=submit]")
    admin.wait_for_selector("#done")
    assert "applies from the user's next spawn" in admin.inner_text("#done")
    assert "nina" in admin.inner_text("#overrides") and "max_gpus: 2" in admin.inner_text("#overrides")
    shot(admin, "admin-overrides")

    # her form, reloaded: free GPUs and her quota, with where it comes from
    nina.reload()
    nina.wait_for_selector("#gpulab-form")
    quota = " ".join(nina.inner_text("#gpulab-quota").split())
    assert "Limit: 2 GPUs at a time" in quota and f"your override until {UNTIL}" in quota, quota
    assert "thesis experiments" in quota
    free = nina.inner_text("#gpulab-free")
    assert re.search(r"A100-80GB\s+4\s+4", free), free
    nina.check("#profile-minimal")
    nina.select_option("#gpulab-gpu-type", "A100-80GB")
    nina.click("label[for=gpus-2]")
    assert nina.is_checked("#gpus-2")
    nina.mouse.move(0, 0)  # no hover highlight in the picture
    nina.locator("body").focus()
    shot(nina, "spawn-form", full_page=True)

    # the progress page, while JupyterLab starts (Minimal takes 11 s more here, see slow_profiles)
    nina.get_by_role("button", name="Start").click()
    nina.wait_for_url(re.compile(r"/hub/spawn-pending/nina"))
    nina.wait_for_selector("text=Starting JupyterLab (profile 'Minimal') ...", state="attached", timeout=60_000)
    nina.eval_on_selector("#progress-details", "d => d.open = true")  # the event log, unfolded
    log = nina.inner_text("#progress-log")
    assert log.index("Reserved GPUs 0,1 (2 A100-80GB GPUs)") < log.index("Starting JupyterLab (profile 'Minimal')")
    shot(nina, "progress")

    nina.wait_for_url(re.compile(r"/user/nina/lab"), timeout=60_000)
    nina.wait_for_selector(".jp-LabShell", timeout=120_000)
    nina.wait_for_selector(".jp-Launcher", timeout=60_000)
    shot(nina, "jupyterlab")
    server = hub.server_model("nina")
    assert server["ready"] and server["state"]["gpus"] == ["0", "1"]

    # her quota page: groups, limits with their source, usage, the override
    nina.goto(f"{hub.url}/services/quotas/")
    nina.wait_for_selector("#limits")
    assert "2 GPUs" in nina.inner_text("#limits") and "your override until" in nina.inner_text("#limits")
    assert "2 GPUs in use" in nina.inner_text("#usage")
    assert "thesis experiments" in nina.inner_text("#overrides") and "prof. ada" in nina.inner_text("#overrides")
    assert nina.locator("#nav-admin").count() == 0  # no admin link for her
    shot(nina, "my-quota")
    nina.goto(f"{hub.url}/services/quotas/admin")
    assert "Only hub admins manage quota overrides" in nina.inner_text("body")
    hub.stop_server("nina")


def test_sign_in_through_an_identity_provider(browser, tmp_path_factory, local_backend):
    require(django_oidc_available(), "an OpenID Connect provider (pip: django, django-oidc-provider)")
    idp = OIDCProvider(tmp_path_factory.mktemp("idp"))
    auth = {"kind": "oidc",
            "oidc": {"issuer": idp.issuer, "client_id": idp.client_id, "client_secret": f"file:{idp.secret_file}",
                     "login_service": "Lab SSO"},
            "group_map": {"ds-researchers": ["researcher"]}, "allowed_groups": ["ds-researchers"]}
    hub = Hub(tmp_path_factory.mktemp("hub"), extra={"auth": auth}, local=dict(local_backend),
              quotas={"default": {"max_gpus": 1}, "groups": {"researcher": {"max_gpus": 2}}})
    try:
        idp.start([f"{hub.url}/hub/oauth_callback"],
                  [{"name": "omar", "password": "omar-pass-1", "groups": ["ds-researchers"]},
                   {"name": "pia", "password": "pia-pass-1", "groups": ["sales"]}])
        hub.start()
        page = new_page(browser)
        page.goto(f"{hub.url}/hub/login")
        shot(page, "login-sso")
        page.get_by_text("Sign in with Lab SSO").click()
        page.fill("#id_username", "omar")
        page.fill("#id_password", "omar-pass-1")
        page.click("#idp-submit")
        page.wait_for_selector("#gpulab-form")
        assert "Limit: 2 GPUs at a time (group 'researcher')" in " ".join(page.inner_text("#gpulab-quota").split())

        other = new_page(browser)
        other.goto(f"{hub.url}/hub/oauth_login")
        other.fill("#id_username", "pia")
        other.fill("#id_password", "pia-pass-1")
        other.click("#idp-submit")
        other.wait_for_load_state()
        body = other.inner_text("body")
        assert "403" in body and "this hub is only for members of ds-researchers" in body
        shot(other, "not-allowed")
    finally:
        hub.close()
        idp.stop()


@pytest.fixture(autouse=True, scope="module")
def _no_proxy_env():
    # a proxy setting in the environment would send the browser's loopback traffic elsewhere
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.lower() in ("http_proxy", "https_proxy")}
    yield
    os.environ.update(saved)
