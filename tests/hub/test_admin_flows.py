"""An admin's work on a real hub, without restarts: quota groups exist at start-up (with their
listed members), people are put in groups before they first sign in (quotas service REST, with
the admin's own rights), a CSV file of people and groups is imported, and gpulab.yaml reloads in
the hub and its services (a good file applies, a bad one changes nothing and says why)."""

from __future__ import annotations

import pytest
import requests
import yaml

from tests.support.hubproc import Hub
from tests.support.polling import gpulab_rows, wait_for

pytestmark = pytest.mark.hub

QUOTAS = {"default": {"max_gpus": 1, "max_servers": 2},
          "groups": {"student": {"max_gpus": 1, "members": ["zoe", "Yan"]}, "researcher": {"max_gpus": 2}}}


@pytest.fixture(scope="module")
def hub(tmp_path_factory, local_backend):
    hub = Hub(tmp_path_factory.mktemp("hub"), inventory="4xA100-80GB", local=dict(local_backend), quotas=QUOTAS,
              extra={"culler": {"interval_seconds": 2}})
    hub.start(timeout=240)
    hub.wait_service("quotas", "api/me")
    # the culler (no URL) is not waited for by the hub: it must be running before the file changes
    wait_for(lambda: "culler] culler: every" in hub.log_path.read_text(), 120, "the culler to start")
    yield hub
    hub.close()


def quotas(hub, method, path, token=None, **kw):
    return hub.service("quotas", path, method=method, token=token, **kw)


def test_quota_groups_exist_at_start_up_with_their_members(hub):
    st, group = hub.api("GET", "/groups/student")
    assert st == 200 and sorted(group["users"]) == ["yan", "zoe"]  # accounts made before they sign in
    assert hub.api("GET", "/groups/researcher")[1]["users"] == []
    assert hub.api("GET", "/users/zoe")[1]["groups"] == ["student"]


def test_people_go_into_a_group_before_their_first_sign_in(hub):
    r = quotas(hub, "POST", "api/groups/researcher/users", json={"users": ["Ann", "zoe"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["created"] == ["ann"] and body["added"] == {"researcher": ["ann", "zoe"]}
    assert body["without_quota"] == [] and "Note" not in body["message"]
    assert sorted(hub.api("GET", "/groups/researcher")[1]["users"]) == ["ann", "zoe"]
    # her quota already says so (the group's limits apply at her first spawn)
    me = quotas(hub, "GET", "api/users/ann").json()
    assert me["quota_groups"] == ["researcher"] and me["limits"]["max_gpus"] == 2
    # people may not do it (nor to themselves); nor may a bad name pass
    hub.create_users("mallory")
    r = quotas(hub, "POST", "api/groups/researcher/users", token=hub.user_token("mallory"), json={"users": ["mallory"]})
    assert r.status_code == 403 and "mallory" not in hub.api("GET", "/groups/researcher")[1]["users"]
    r = quotas(hub, "POST", "api/groups/researcher/users", json={"users": ["../etc"]})
    assert r.status_code == 400 and "is not a user name" in r.json()["errors"][0]


def test_a_csv_file_of_people_and_groups(hub):
    csv = "user,groups,email\nbea,student,bea@lab.example\ncid,student;researcher,\ndan,,\nbad name,student,\n"
    r = requests.post(f"{hub.url}/services/quotas/api/import", data=csv, timeout=60,
                      headers={"Authorization": f"token {hub.token}", "Content-Type": "text/csv"})
    assert r.status_code == 200, r.text  # done for the good rows; the bad one is named
    body = r.json()
    assert body["created"] == ["bea", "cid", "dan"] and body["added"] == {"researcher": ["cid"],
                                                                         "student": ["bea", "cid"]}
    assert body["errors"] == ["line 5: 'bad name' is not a user name (letters, digits, '.', '_', '@', '-')"]
    assert not body["ok"] and "Created 3 accounts" in body["message"]
    assert hub.api("GET", "/users/cid")[1]["groups"] == ["researcher", "student"]
    # a group the file names that does not exist yet is created
    r = quotas(hub, "POST", "api/import", json={"csv": "eli,vision-lab\n"})
    assert r.status_code == 200 and hub.api("GET", "/groups/vision-lab")[1]["users"] == ["eli"]
    # and said to have no quota (a typo of a quota group's name would be the same)
    assert r.json()["without_quota"] == ["vision-lab"] and "group vision-lab has no quota" in r.json()["message"]


def rewrite(hub, change):
    cfg = yaml.safe_load(hub.config_path.read_text())
    change(cfg)
    hub.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def test_a_good_file_reloads_everywhere_without_a_restart(hub):
    hub.create_users("gus")
    hub.api("POST", "/groups/student/users", {"users": ["gus"]})
    st, body = hub.spawn("gus", {"gpus": 2})
    assert st == 403 and "group 'student' allows 1 GPU" in body["message"]

    def more(cfg):
        cfg["quotas"]["groups"]["student"]["max_gpus"] = 2
        cfg["billing"]["rates"] = {"*": 1.5}
        cfg["culler"]["keep_alive_max_hours"] = 12

    rewrite(hub, more)
    st, out = hub.api("POST", "/gpulab/settings/reload")
    assert st == 200 and out["ok"] and out["applied"] == ["billing", "culler", "quotas"], out
    # the hub: the next spawn gets the new quota and price, no restart
    hub.start_server("gus", {"gpus": 2})
    try:
        assert [a["user_name"] for a in hub.allocations()].count("gus") == 2
        # the services follow the file within seconds (billing's quota API; the culler's log)
        wait_for(lambda: hub.service("billing", "api/quota?user=gus").json()["limits"]["max_gpus"] == 2, 30,
                 "the billing service to reload")
        wait_for(lambda: "culler] gpulab: reloaded" in hub.log_path.read_text(), 30, "the culler to reload")
        # the new price: 2 GPUs x 1.50 an hour (a record keeps the price it started with)
        assert gpulab_rows(hub, "gpulab_usage", "gus")[-1]["rate_per_hour"] == 3.0
    finally:
        hub.stop_server("gus")


def test_a_bad_file_keeps_the_running_settings_and_says_why(hub):
    def typo(cfg):
        cfg["quotas"]["groups"]["student"]["max_gpu"] = 4

    rewrite(hub, typo)
    st, out = hub.api("POST", "/gpulab/settings/reload")
    assert st == 400 and not out["ok"], out
    assert "quotas.groups.student: unknown key 'max_gpu'" in out["error"] and "running settings stay" in out["message"]
    assert hub.api("GET", "/gpulab/settings")[1]["last"]["ok"] is False
    assert "running settings stay as they were" in hub.log_path.read_text()
    # still the running quota (2 for students), in the hub and in billing
    assert hub.spawn("gus", {"gpus": 2})[0] in (201, 202)
    hub.wait_ready("gus")
    assert hub.service("billing", "api/quota?user=gus").json()["limits"]["max_gpus"] == 2
    hub.stop_server("gus")
    # people may not reload, nor see the settings
    hub.create_users("pia")
    assert hub.api("POST", "/gpulab/settings/reload", token=hub.user_token("pia"))[0] == 403


def test_what_needs_a_restart_is_named_and_kept(hub):
    def port(cfg):
        cfg["quotas"]["groups"]["student"].pop("max_gpu", None)
        cfg["hub"]["poll_interval"] = 3

    rewrite(hub, port)
    st, out = hub.api("POST", "/gpulab/settings/reload")
    assert st == 200 and out["needs_restart"] == ["hub"] and "Needs a restart to take effect: hub." in out["message"]
