"""The spawn form through a person's path: sign up, approval, login, form, spawn, JupyterLab.

Plain HTTP with cookies and XSRF tokens, as a browser sends them (a real browser drives the
same pages in the browser tests)."""

from __future__ import annotations

import html
import json
import re

import pytest
import requests

pytestmark = pytest.mark.hub

PASSWORD = "correct-horse-battery"


def session_get_xsrf(s: requests.Session, url: str) -> str:
    r = s.get(url)
    assert r.status_code == 200, r.text[:500]
    return s.cookies.get("_xsrf") or re.search(r'name="_xsrf" value="([^"]+)"', r.text).group(1)


def signup(hub, name, password=PASSWORD) -> requests.Response:
    s = requests.Session()
    xsrf = session_get_xsrf(s, f"{hub.url}/hub/signup")
    return s.post(f"{hub.url}/hub/signup", data={
        "username": name, "signup_password": password, "signup_password_confirmation": password,
        "email": f"{name}@example.org", "_xsrf": xsrf})


def login(hub, name, password=PASSWORD) -> tuple[requests.Session, requests.Response]:
    s = requests.Session()
    xsrf = session_get_xsrf(s, f"{hub.url}/hub/login")
    r = s.post(f"{hub.url}/hub/login", data={"username": name, "password": password, "_xsrf": xsrf},
               allow_redirects=False)
    return s, r


def form_model(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="gpulab-model">(.*?)</script>', page, re.S)
    assert m, page[:2000]
    return json.loads(m.group(1))


@pytest.fixture(scope="module")
def hub(module_hub_factory):
    return module_hub_factory(
        inventory="4xA100-80GB, 1xA100-80GB+mig(7*1g.10gb)",
        quotas={"default": {"max_gpus": 1}, "groups": {"researcher": {"max_gpus": 2}}},
    )


@pytest.fixture(scope="module")
def admin(hub):
    r = signup(hub, "admin")
    assert "has been successfully created" in r.text or "signup" in r.url, r.text[:500]
    s, r = login(hub, "admin")
    assert r.status_code == 302, r.text[:500]
    return s


def test_signup_needs_admin_approval(hub, admin):
    signup(hub, "alice")
    _, r = login(hub, "alice")
    assert r.status_code == 200 and "has not been authorized by an administrator yet" in r.text
    r = admin.get(f"{hub.url}/hub/authorize/alice")
    assert r.status_code == 200
    _, r = login(hub, "alice", "wrong-password-1")
    assert "Invalid username or password" in r.text
    s, r = login(hub, "alice")
    assert r.status_code == 302


def test_form_shows_profiles_free_gpus_and_quota(hub, admin):
    hub.create_users("alice", groups={"researcher": ["alice"]})
    s, _ = login(hub, "alice")
    page = s.get(f"{hub.url}/hub/spawn").text
    m = form_model(page)
    profiles = {p["name"]: p for p in m["profiles"]}
    assert profiles["minimal"]["allowed"] and profiles["minimal"]["default"]
    assert not profiles["pytorch"]["allowed"] and "not installed" in profiles["pytorch"]["why_not"]
    free = {a["gpu_type"]: (a["free"], a["total"]) for a in m["free"]}
    assert free == {"A100-80GB": (4, 4), "A100-80GB:1g.10gb": (7, 7)}
    assert m["quota"]["max_gpus_text"] == "2 GPUs" and m["quota"]["sources"]["max_gpus"] == "group 'researcher'"
    counts = {c["count"]: c for c in profiles["minimal"]["choices"]["A100-80GB"]}
    assert counts[2]["ok"] and not counts[3]["ok"] and "over your quota (2 GPUs left)" in counts[3]["why"]
    # the visible page says the same in words
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    assert "Limit: 2 GPUs at a time" in " ".join(text.split())
    assert 'value="A100-80GB:1g.10gb"' in page


def test_form_spawn_to_jupyterlab(hub, admin):
    s, _ = login(hub, "alice")
    xsrf = session_get_xsrf(s, f"{hub.url}/hub/spawn")
    r = s.post(f"{hub.url}/hub/spawn", data={"profile": "minimal", "gpus": "2", "gpu_type": "A100-80GB",
                                            "_xsrf": xsrf}, allow_redirects=False)
    assert r.status_code == 302 and "/hub/spawn-pending/alice" in r.headers["Location"], r.text[:500]
    server = hub.wait_ready("alice")
    assert server["state"]["gpus"] == ["0", "1"]
    assert server["user_options"] == {"profile": "minimal", "gpus": "2", "gpu_type": "A100-80GB"}
    r = s.get(f"{hub.url}/user/alice/lab")  # OAuth through the hub, as a browser does
    assert r.status_code == 200 and "JupyterLab" in r.text
    # the form now counts the running server
    page = s.get(f"{hub.url}/hub/spawn/alice/second").text
    m = form_model(page)
    assert m["quota"]["in_use_text"] == "2 GPUs" and m["quota"]["left_text"] == "0 GPUs"
    assert {a["gpu_type"]: a["free"] for a in m["free"]}["A100-80GB"] == 2
    hub.stop_server("alice")


@pytest.mark.parametrize(
    "fields, status, message",
    [
        ({"profile": "minimal", "gpus": "3"}, 403, "You asked for 3 GPUs; group &#39;researcher&#39; allows 2 GPUs"),
        ({"profile": "minimal", "gpus": "9"}, 400, "&#39;gpus&#39; must be a whole number from 0 to 4"),
        ({"profile": "nope"}, 400, "Unknown profile &#39;nope&#39;"),
        ({"profile": "minimal", "gpus": "1", "gpu_type": "<script>"}, 400, "&#39;gpu_type&#39; must be a GPU type name"),
    ],
)
def test_form_errors_are_shown_on_the_form(hub, admin, fields, status, message):
    s, _ = login(hub, "alice")
    xsrf = session_get_xsrf(s, f"{hub.url}/hub/spawn")
    r = s.post(f"{hub.url}/hub/spawn", data={**fields, "_xsrf": xsrf}, allow_redirects=False)
    assert r.status_code == status
    assert message in r.text  # escaped: user input never becomes markup
    assert "SpawnException(reason=" not in r.text  # the message alone, not JupyterHub's log line
    assert "<script>\"" not in r.text
    assert 'id="gpulab-model"' in r.text  # the form is shown again, to fix and retry
    assert hub.server_model("alice") is None


def test_xsrf_is_enforced(hub, admin):
    s, _ = login(hub, "alice")
    r = s.post(f"{hub.url}/hub/spawn", data={"profile": "minimal"}, allow_redirects=False)
    assert r.status_code == 403 and hub.server_model("alice") is None
