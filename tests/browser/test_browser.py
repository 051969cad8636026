"""A person and an admin in a real browser (Debian's Chromium, driven by Playwright).

The story: an admin approves a new user and gives her a 2-GPU override; she signs in, sees the
spawn form with free GPUs and her quota, starts "Minimal" with 2 GPUs for 4 hours, watches the
progress page (gpulab's own words on its status line), lands in JupyterLab (its tab says her GPUs
and time left), opens her quota page, sees her server with its GPUs, cost and time left on the
hub's home page and stops it there. The admin puts people in groups before they sign in (a list
and a CSV file) and reloads gpulab.yaml from the settings page (a bad file, then a good one).
Screenshots of each page go to docs/screenshots/. The queue's Stop button and signing in through
an identity provider have files of their own (test_browser_queue.py, test_browser_sso.py).
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import pytest

from hub_plugins.spawners.local.spawner import LAB_CONFIG
from tests.support.browser import new_page, shot, sign_in, sign_up
from tests.support.hubproc import ROOT, Hub
from tests.support.polling import gpulab_rows

pytestmark = [pytest.mark.browser, pytest.mark.hub]

UNTIL = (dt.date.today() + dt.timedelta(days=30)).isoformat()

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
            # the wrapper runs the hub's own environment: enable gpulab's JupyterLab extension as a
            # profile whose environment has gpulab installed does (README, Profiles)
            data["env"] = {**(data.get("env") or {}), "JUPYTER_CONFIG_PATH": LAB_CONFIG}
        (root / p.name).write_text(yaml.safe_dump(data))
    for d in (root, env, env / "bin"):
        d.chmod(0o755)  # servers run as their own system users when the tests run as root
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, local_backend, slow_profiles):
    hub = Hub(tmp_path_factory.mktemp("hub"), inventory="4xA100-80GB", profiles_dir=str(slow_profiles),
              quotas={"default": {"max_gpus": 1, "max_servers": 2}, "groups": {"researcher": {"max_gpus": 2}}},
              local=dict(local_backend), extra={"billing": {"rates": {"*": 1.25}},
                                                # the form is offered once a mail server is set
                                                "notifications": {"smtp": {"host": "127.0.0.1", "port": 2525},
                                                                  "webhooks": {"allowed_hosts": ["hooks.example.org"]}}})
    hub.start(timeout=240)
    yield hub
    hub.close()


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
    nina.select_option("#gpulab-runtime", "4h")
    # a link that starts the same choice (JupyterHub 6 spawn links)
    link = nina.inner_text("#gpulab-link-url")
    assert "/hub/spawn?opt-profile=minimal&opt-gpus=2&opt-gpu_type=A100-80GB" in link and "opt-runtime=4h" in link
    nina.mouse.move(0, 0)  # no hover highlight in the picture
    nina.locator("body").focus()
    shot(nina, "spawn-form", full_page=True)

    # the progress page, while JupyterLab starts (Minimal takes 11 s more here, see slow_profiles)
    nina.get_by_role("button", name="Start").click()
    nina.wait_for_url(re.compile(r"/hub/spawn-pending/nina"))
    # gpulab's latest message is the status line in plain sight; the backend's own ("Spawning
    # server...") goes to the smaller line below it
    nina.wait_for_function("document.getElementById('gpulab-detail').textContent.includes('Spawning server')",
                           timeout=60_000)
    assert nina.inner_text("#progress-message") == "Starting JupyterLab (profile 'Minimal') ..."
    assert nina.is_visible("#progress-message") and not nina.eval_on_selector("#progress-details", "d => d.open")
    log = nina.eval_on_selector("#progress-log", "e => e.textContent")
    assert log.index("Reserved GPUs 0,1 (2 A100-80GB GPUs)") < log.index("Starting JupyterLab (profile 'Minimal')")
    shot(nina, "progress")

    nina.wait_for_url(re.compile(r"/user/nina/lab"), timeout=60_000)
    nina.wait_for_selector(".jp-LabShell", timeout=120_000)
    nina.wait_for_selector(".jp-Launcher", timeout=60_000)
    # JupyterLab's tab says what this server holds and when it stops
    nina.wait_for_function("document.title.includes('gpulab')", timeout=60_000)
    # (time left as the server last heard it from the hub: at most a few seconds old here)
    assert re.match(r"gpulab · 2 A100-80GB GPUs · (3 h 5\d|4 h 00) min left · 2\.50 EUR/h - JupyterLab",
                    nina.title()), nina.title()
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

    # the hub's home page: her server with its profile, GPUs, state, cost so far and time left
    nina.goto(f"{hub.url}/hub/home")
    row = nina.locator("#gpulab-servers tr.gpulab-server")
    row.wait_for()
    cells = [c.strip() for c in row.locator("td").all_inner_texts()]
    assert cells[:4] == ["default", "Minimal", "2 A100-80GB GPUs", "Running"], cells
    assert re.fullmatch(r"\d+\.\d\d EUR", cells[4]) and re.fullmatch(r"3 h 5\d min", cells[5]), cells
    nina.mouse.move(0, 0)
    shot(nina, "home")
    # and she stops it there
    nina.click("#gpulab-stop-default")
    nina.wait_for_selector("#gpulab-servers tr.gpulab-empty:has-text('Nothing is running')", timeout=60_000)
    hub.wait_gone("nina")


def test_a_person_chooses_email_and_webhook_notifications_on_the_usage_page(browser, hub):
    page = new_page(browser)
    sign_up(page, hub, "admin")  # (already there when the test above ran: then this is refused)
    sign_in(page, hub, "admin")
    page.goto(f"{hub.url}/services/billing/")
    page.wait_for_selector("#notifications")
    # amounts of GPUs read as on the hub's pages ("1 GPU", "2 GPUs"; it said "1.0 GPUs")
    assert re.search(r"Limit: (unlimited|1 GPU|\d+ GPUs) at a time .* in use: (0 GPUs|1 GPU|\d+ GPUs)",
                     page.inner_text("body")), page.inner_text("body")[:500]
    page.fill("input[name=email]", "ada@lab.example")
    assert "hooks.example.org" in page.inner_text("form[action$=notifications]")  # where a webhook may go
    page.fill("input[name=webhook]", "https://hooks.example.org/services/T0/B0/ada")
    page.uncheck("input[name=events][value=stopped]")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(re.compile(r"/services/billing/#notifications"))
    assert page.input_value("input[name=email]") == "ada@lab.example"
    assert page.is_checked("input[name=events][value=queue_started]")
    assert not page.is_checked("input[name=events][value=stopped]")
    assert "saved" in page.inner_text("form[action$=notifications]")
    shot(page, "notifications")
    rows = {r["user_name"]: r for r in gpulab_rows(hub, "gpulab_notify_prefs", order_by=None)}
    assert rows["admin"]["email"] == "ada@lab.example"
    assert rows["admin"]["events"] == "queue_started,stop_warning,budget_warning"
    assert rows["admin"]["webhook"] == "https://hooks.example.org/services/T0/B0/ada"
    # a webhook to a host the admin did not allow is refused with what to change
    page.fill("input[name=webhook]", "https://hooks.example.org.evil.com/x")
    page.get_by_role("button", name="Save").click()
    page.wait_for_load_state()
    assert "must go to a host this hub allows: hooks.example.org" in page.inner_text("body")
    page.goto(f"{hub.url}/services/billing/")
    assert page.input_value("input[name=webhook]") == "https://hooks.example.org/services/T0/B0/ada"  # kept
    # a bad address is refused with what to change, and the saved one stays
    page.fill("input[name=email]", "ada at lab")
    page.evaluate("document.querySelector('input[name=email]').type = 'text'")  # past the browser's own check
    page.get_by_role("button", name="Save").click()
    page.wait_for_load_state()
    assert "must be one address like" in page.inner_text("body")
    assert {r["user_name"]: r for r in gpulab_rows(hub, "gpulab_notify_prefs", order_by=None)}["admin"]["email"] == "ada@lab.example"


def test_admin_puts_people_in_groups_and_reloads_settings(browser, hub):
    if hub.server_model("nina"):  # left by the story above if it failed
        hub.stop_server("nina")
    admin = new_page(browser)
    sign_in(admin, hub, "admin")
    admin.goto(f"{hub.url}/services/quotas/admin")
    # people into a quota group before they ever sign in
    admin.fill("#m-group", "researcher")
    admin.fill("#m-users", "omar, pia")
    admin.click("#add-members button[type=submit]")
    admin.wait_for_selector("#people-result")
    assert "Created 2 accounts (omar, pia)" in admin.inner_text("#people-result")
    assert sorted(hub.api("GET", "/groups/researcher")[1]["users"]) == ["omar", "pia"]
    # a CSV file (pasted here; the page also takes an upload)
    admin.fill("#i-csv", "user,groups\nquinn,researcher\nrosa,student;researcher\nbad name,student\n")
    admin.click("#import-csv button[type=submit]")
    admin.wait_for_selector("#people-result")
    result = admin.inner_text("#people-result")
    assert "Created 2 accounts (quinn, rosa)" in result and "line 4: 'bad name' is not a user name" in result
    assert hub.api("GET", "/users/rosa")[1]["groups"] == ["researcher", "student"]
    admin.locator("#people").scroll_into_view_if_needed()
    shot(admin, "admin-people")

    # gpulab.yaml changed with a typo: the settings page says why and nothing changes
    good = hub.config_path.read_text()
    hub.config["quotas"]["groups"]["researcher"] = {"max_gpus": 3, "max_gpu": 4}
    hub.write_config()
    admin.goto(f"{hub.url}/hub/gpulab/settings")
    admin.click("#reload")
    admin.wait_for_selector("#reload-outcome")
    assert "quotas.groups.researcher: unknown key 'max_gpu'" in admin.inner_text("#reload-outcome")
    shot(admin, "settings-error")
    # fixed: applied at once, no restart
    hub.config["quotas"]["groups"]["researcher"] = {"max_gpus": 3}
    hub.write_config()
    admin.click("#reload")
    admin.wait_for_selector("#reload-outcome.alert-success")
    assert "Applied: quotas." in admin.inner_text("#reload-outcome")
    shot(admin, "settings-reload")
    st, body = hub.spawn("omar", {"profile": "minimal", "gpus": 3})
    assert st in (201, 202), body
    hub.wait_ready("omar", timeout=120)
    hub.stop_server("omar")
    hub.config_path.write_text(good)
