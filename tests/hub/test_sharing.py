"""JupyterHub's server sharing with GPUs (a real hub): the owner shares a running GPU server; the
guest uses it; the owner is billed and the owner's quota counts, the guest's does not; the guest
cannot stop it or read its costs."""

from __future__ import annotations

import re

import pytest
import requests

from tests.hub.test_form import login, signup
from tests.support.hubproc import Hub
from tests.support.polling import gpulab_rows

pytestmark = pytest.mark.hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory, local_backend):
    hub = Hub(tmp_path_factory.mktemp("hub"), inventory="2xA100-80GB", local=dict(local_backend),
              quotas={"default": {"max_gpus": 1, "max_servers": 2}}, extra={"billing": {"rates": {"*": 2.0}}})
    hub.start(timeout=240)
    yield hub
    hub.close()


def accept(hub, who, accept_url):
    """``who`` accepts a share code in the browser's way (session, form, xsrf)."""
    s, _ = login(hub, who)
    page = s.get(f"{hub.url}{accept_url}")
    assert page.status_code == 200, page.text[:300]
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    code = re.search(r'name="code" value="([^"]+)"', page.text).group(1)
    r = s.post(f"{hub.url}{accept_url}", data={"_xsrf": xsrf, "code": code}, allow_redirects=False)
    assert r.status_code == 302, r.text[:300]


def test_a_shared_server_is_the_owners(hub):
    signup(hub, "admin")
    admin, _ = login(hub, "admin")
    for name in ("alice", "bob"):
        signup(hub, name)
        assert admin.get(f"{hub.url}/hub/authorize/{name}").status_code == 200
    hub.create_users("alice", "bob")
    alice, bob = hub.user_token("alice"), hub.user_token("bob")
    hub.start_server("alice", {"gpus": 1})
    # alice shares her server with a share code (people may share their own: the 'user' role
    # has shares!user; sharing by name also needs read:users:name, which only admins hold)
    st, code = hub.api("POST", "/share-codes/alice/", {}, token=alice)
    assert st == 200, code
    accept(hub, "bob", code["accept_url"])
    assert [s["user"]["name"] for s in hub.api("GET", "/shares/alice/", token=alice)[1]["items"]] == ["bob"]
    # bob uses it: the server's API answers him (JupyterLab, its terminals and kernels: her GPU)
    r = requests.get(f"{hub.url}/user/alice/api/status", headers={"Authorization": f"token {bob}"}, timeout=30)
    assert r.status_code == 200, r.text[:200]
    # the owner's quota counts: bob's own quota is untouched, he can start his own GPU server
    assert hub.service("billing", "api/quota", token=bob).json()["in_use"]["gpus"] == 0
    assert hub.service("billing", "api/quota", token=alice).json()["in_use"]["gpus"] == 1
    assert hub.spawn("alice", {"gpus": 1}, server="second", token=alice)[0] == 403  # her quota is used
    hub.start_server("bob", {"gpus": 1})
    # the owner is billed: one record each, alice's for her shared server
    records = gpulab_rows(hub, "gpulab_usage")
    assert sorted((r["user_name"], r["gpu_count"]) for r in records) == [("alice", 1), ("bob", 1)]
    # the guest may use it, not stop it or read what it costs
    assert hub.api("DELETE", "/users/alice/server", token=bob)[0] in (403, 404)
    assert hub.api("GET", "/gpulab/users/alice/servers", token=bob)[0] == 404
    assert hub.service("billing", "api/usage?user=alice", token=bob).status_code == 403
    # revoking the share leaves the server running, billed to alice
    assert hub.api("PATCH", "/shares/alice/", {"user": "bob"}, token=alice)[0] == 200
    assert hub.api("GET", "/shares/alice/", token=alice)[1]["items"] == []
    assert hub.server_model("alice")["ready"]
    hub.stop_server("alice")
    hub.stop_server("bob")
