"""Property-based tests (Hypothesis) over every input surface, against a real hub and its real
services (issue 10): whatever a person sends, the answer is a success or a 4xx whose message says
what to change, never a 5xx. Surfaces: the REST spawn body, the spawn form, the billing service's
query parameters and path, the quotas service's JSON bodies, query parameters and paths.

Values mix what is valid, what is nearly valid and what broke the hub before: NaN, Infinity,
1e308, 5,000 digits, non-ASCII digits ("١"), wrong types, long text, odd content types.
``GPULAB_FUZZ_EXAMPLES`` sets the examples per surface (default 80).
"""

from __future__ import annotations

import json
import os
import re
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hub.test_form import login, signup

pytestmark = [pytest.mark.hub, pytest.mark.slow]

EXAMPLES = int(os.environ.get("GPULAB_FUZZ_EXAMPLES", "80"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

NASTY = ["", " ", "1", "0", "2", "-1", "1.5", "\u0661", "\u0662\u0660", "\uff11", "1e308", "NaN", "Infinity",
         "-Infinity", "9" * 5000, "2h", "90m", "1h30m", "99999999h", "A100-80GB", "A100-80GB:1g.10gb", "minimal",
         "pytorch", "../etc", "x" * 300, "\u00e9" * 50, "db:1", "2026-12-01", "yesterday", "on", "true", "csv"]
numbers = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.integers(-3, 5),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -1e308, 0.5, 7200]))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=12), st.sampled_from(NASTY))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                           max_size=3), max_leaves=6)
OPTION_KEYS = ["profile", "gpus", "gpu_type", "queue", "runtime", "project"]
spawn_options = st.one_of(
    st.dictionaries(st.sampled_from(OPTION_KEYS) | st.text(max_size=8), values, max_size=5),
    st.fixed_dictionaries({}, optional={
        "profile": st.sampled_from(["minimal", "pytorch", "nope", "", 3]),
        "gpus": st.sampled_from([0, 1, 2, "1", "\u0661", 1.0, float("nan"), float("inf"), 1e308, "9" * 5000, [1]]),
        "gpu_type": st.sampled_from(["A100-80GB", "", ["x"], "V100", None, "A" * 500]),
        "queue": st.sampled_from([True, False, "on", "maybe", 1]),
        "runtime": st.sampled_from(["2h", 600, float("nan"), float("inf"), "9" * 5000, None, "\u0661h", -5]),
        "project": st.sampled_from(["x", "", "../p", "P", 7]),
    }),
)
CONTENT_TYPES = [None, "application/json", "text/plain", "application/x-www-form-urlencoded"]
RAW_BODIES = [b'{"runtime": ' + b"9" * 5000 + b"}", b'{"gpus": NaN}', b'{"gpus": Infinity}', b"not json", b"[]",
              b'"x"', b"\xff\xfe", b"{" * 50, b"null"]


def encode(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


bodies = st.one_of(spawn_options.map(encode), st.sampled_from(RAW_BODIES))


@pytest.fixture(scope="module")
def hub(module_hub_factory):
    h = module_hub_factory(inventory="2xA100-80GB", quotas={"default": {"max_gpus": 1, "max_servers": 2}},
                           extra={"culler": {"enabled": False},
                                  "notifications": {"webhooks": {"allowed_hosts": ["hooks.example.org"]}}})
    h.wait_service("billing")
    h.wait_service("quotas", "api/me")
    h.create_users("ann", groups={"lab": ["ann"]})
    h.ann = h.user_token("ann")
    return h


def refused_with_message(r, what):
    """A success, or a 4xx with a message that is short enough to read; never a 5xx."""
    assert r.status_code < 500, (what, r.status_code, r.text[:500])
    if r.status_code >= 400:
        try:
            message = r.json().get("message")
        except ValueError:
            raise AssertionError((what, r.status_code, r.text[:500])) from None
        assert message and len(message) < 2000, (what, r.status_code, message)


def stop_if_started(hub, user, server, status):
    if status in (201, 202):
        hub.api("DELETE", hub.server_path(user, server))
        hub.wait_gone(user, server, timeout=60)


@FUZZ
@given(body=bodies, content_type=st.sampled_from(CONTENT_TYPES))
def test_rest_spawn(hub, body, content_type):
    headers = {"Authorization": f"token {hub.ann}"}
    if content_type:
        headers["Content-Type"] = content_type
    r = requests.post(f"{hub.url}/hub/api/users/ann/servers/fz", data=body, headers=headers, timeout=120)
    refused_with_message(r, (body[:200], content_type))
    stop_if_started(hub, "ann", "fz", r.status_code)


@pytest.fixture(scope="module")
def admin_session(hub):
    signup(hub, "admin")
    s, r = login(hub, "admin")
    assert r.status_code == 302
    s.get(f"{hub.url}/hub/spawn/admin/form")  # sets the _xsrf cookie for /hub/
    return s


form_values = st.one_of(st.sampled_from(NASTY), st.text(max_size=20))


@FUZZ
@given(fields=st.dictionaries(st.sampled_from(OPTION_KEYS) | st.text(min_size=1, max_size=8),
                              st.lists(form_values, min_size=1, max_size=2), max_size=5))
def test_spawn_form(hub, admin_session, fields):
    xsrf = admin_session.cookies.get("_xsrf", path="/hub/")
    r = admin_session.post(f"{hub.url}/hub/spawn/admin/form", data={**fields, "_xsrf": xsrf}, allow_redirects=False,
                           timeout=120)
    assert r.status_code < 500, (fields, r.status_code, r.text[-1000:])
    # JupyterHub shows a refused form again with the message and the refusal's status; a
    # 200 with a message would be an error gpulab did not turn into a refusal
    shown = re.search(r'class="[^"]*spawn-error-msg[^"]*"[^>]*>(.*?)</', r.text, re.S)
    if r.status_code == 200:
        assert not shown, (fields, shown.group(1)[:500])
    elif r.status_code >= 400:
        assert shown and shown.group(1).strip(), (fields, r.status_code, r.text[-1500:])
    stop_if_started(hub, "admin", "form", 202 if r.status_code == 302 else r.status_code)


BILLING_PATHS = ["api/usage", "api/quota", "api/gpus", "api/queue", "api/notifications", "", "admin", "gpus",
                 "metrics"]
params = st.dictionaries(st.sampled_from(["user", "since", "until", "format", "days", "server"]) | st.text(max_size=5),
                         form_values, max_size=4)


@FUZZ
@given(path=st.sampled_from(BILLING_PATHS), query=params, admin=st.booleans())
def test_billing_queries(hub, path, query, admin):
    r = requests.get(f"{hub.url}/services/billing/{path}", params=query, timeout=60,
                     headers={"Authorization": f"token {hub.token if admin else hub.ann}"})
    assert r.status_code < 500, (path, query, r.status_code, r.text[:500])
    if r.status_code >= 400 and path.startswith("api/"):
        refused_with_message(r, (path, query))


@FUZZ
@given(user=form_values, server=st.one_of(st.just(""), form_values), admin=st.booleans())
def test_billing_queue_cancel(hub, user, server, admin):
    path = "api/queue/" + quote(user, safe="") + (f"/{quote(server, safe='')}" if server else "")
    r = requests.delete(f"{hub.url}/services/billing/{path}", timeout=60,
                        headers={"Authorization": f"token {hub.token if admin else hub.ann}"})
    if r.status_code == 404 and "application/json" not in r.headers.get("Content-Type", ""):
        return  # an empty name segment matches no route: tornado's plain 404
    refused_with_message(r, path)


HOOK = "https://hooks.example.org/services/T0/B0/x"
notify_bodies = st.one_of(
    st.fixed_dictionaries({}, optional={
        "email": st.sampled_from(["ann@example.org", "", "ann@example.org\r\nBcc: x@y.org", "\u0661@x.org", 5, None,
                                  "a" * 300 + "@x.org", ["ann@example.org"], "ann@example.org, bob@example.org"]),
        "events": st.sampled_from([[], ["stopped"], ["nope"], "stopped", [1], None, ["stopped"] * 1000]),
        "webhook": st.sampled_from([HOOK, "", " ", HOOK.replace("https", "http"), "https://evil@hooks.example.org/x",
                                    "https://hooks.example.org.evil.com/x", "https://HOOKS.example.org:8443/x",
                                    "https://[::1]/x", "https://169.254.169.254/", HOOK + "\r\nX-Evil: 1",
                                    "https://hooks.\u0435xample.org/x", HOOK + "x" * 3000, "file:///etc/passwd",
                                    5, None, [HOOK], {"url": HOOK}]),
    }).map(encode),
    st.dictionaries(st.text(max_size=6), values, max_size=3).map(encode),
    st.sampled_from(RAW_BODIES))


@FUZZ
@given(body=notify_bodies, content_type=st.sampled_from(CONTENT_TYPES))
def test_notification_choices(hub, body, content_type):
    headers = {"Authorization": f"token {hub.ann}"}
    if content_type:
        headers["Content-Type"] = content_type
    r = requests.put(f"{hub.url}/services/billing/api/notifications", data=body, headers=headers, timeout=60)
    refused_with_message(r, (body[:300], content_type))
    if r.status_code == 200:  # what was stored is one plain address and known events
        stored = r.json()
        assert stored["email"] in ("", "ann@example.org") and set(stored["events"]) <= {
            "queue_started", "stop_warning", "stopped", "budget_warning"}, stored
        assert stored["webhook"] in ("", HOOK), stored  # only the allowed host, never another


overrides = st.one_of(
    st.dictionaries(st.sampled_from(["user", "max_gpus", "expires", "reason", "approved_by", "budget"]) |
                    st.text(max_size=6), values, max_size=6),
    st.fixed_dictionaries(
        {"user": st.sampled_from(["ann", "nosuch", "", "a" * 300, "\u0661", 5]),
         "expires": st.sampled_from([None, "2099-01-01", "2000-01-01", "soon", "99999-01-01", 5]),
         "reason": st.sampled_from(["deadline", "", "r" * 600, 3])},
        optional={"max_gpus": numbers, "max_servers": numbers, "cpu_limit": numbers, "budget": numbers,
                  "max_runtime_hours": numbers, "mem_limit": st.sampled_from(["16G", "1e308", -1, 2**80, "\u0661G"]),
                  "approved_by": st.sampled_from(["prof. x", "p" * 300, ""]),
                  "profiles": st.sampled_from(["*", ["minimal"], ["x" * 200], [1], "all"]),
                  "gpu_types": st.sampled_from(["*", ["A100-80GB"], ["A100 80GB"], [None]])}),
)


@FUZZ
@given(body=st.one_of(overrides.map(encode), st.sampled_from(RAW_BODIES)), content_type=st.sampled_from(CONTENT_TYPES))
def test_quotas_override_bodies(hub, body, content_type):
    headers = {"Authorization": f"token {hub.token}"}
    if content_type:
        headers["Content-Type"] = content_type
    r = requests.post(f"{hub.url}/services/quotas/api/overrides", data=body, headers=headers, timeout=60)
    refused_with_message(r, (body[:300], content_type))
    if r.status_code == 201:  # valid: no NaN or Infinity in what it stored and answers
        created = json.loads(r.text, parse_constant=lambda c: pytest.fail(f"{c} in {r.text[:300]}"))
        d = requests.delete(f"{hub.url}/services/quotas/api/overrides/{created['id']}", headers=headers, timeout=60)
        assert d.status_code == 200, d.text


@FUZZ
@given(path=st.sampled_from(["api/overrides", "api/audit", "api/me"]), query=st.dictionaries(
    st.sampled_from(["user", "include_expired", "limit"]) | st.text(max_size=5), form_values, max_size=3),
    ident=st.one_of(st.integers(0, 10**30).map(lambda n: f"db:{n}"), st.sampled_from(["config:0", "db:\u0661"])),
    name=form_values, reason=st.one_of(form_values, values))
def test_quotas_queries_and_paths(hub, path, query, ident, name, reason):
    headers = {"Authorization": f"token {hub.token}"}
    refused_with_message(requests.get(f"{hub.url}/services/quotas/{path}", params=query, headers=headers,
                                      timeout=60), (path, query))
    refused_with_message(requests.delete(f"{hub.url}/services/quotas/api/overrides/{quote(ident, safe=':')}",
                                         data=encode({"reason": reason}), headers=headers, timeout=60), ident)
    if name:
        refused_with_message(requests.get(f"{hub.url}/services/quotas/api/users/{quote(name, safe='')}",
                                          headers=headers, timeout=60), name)


@pytest.mark.parametrize("service, path", [
    ("quotas", "api/users/"),  # what a client makes of api/users/. (dot segments normalised away)
    ("quotas", "api/nothing"), ("billing", "api/nothing"), ("billing", "api/usage/ann"),
    ("billing", "api/queue//" + "9" * 5000),  # found by the fuzzing: the whole path was echoed back
])
def test_a_path_no_api_has_is_a_json_404(hub, service, path):
    r = hub.service(service, path)
    assert r.status_code == 404 and r.headers["Content-Type"].startswith("application/json"), r.text[:300]
    message = r.json()["message"]
    assert message.startswith(f"There is no {'quotas' if service == 'quotas' else 'billing'} API at")
    assert len(message) < 500, len(message)


def test_ten_megabytes_are_refused_cleanly(hub):
    big = b'{"profile": "' + b"x" * (10 * 2**20) + b'"}'
    headers = {"Authorization": f"token {hub.token}", "Content-Type": "application/json"}
    for url in (f"{hub.url}/hub/api/users/ann/servers/big", f"{hub.url}/services/quotas/api/overrides"):
        r = requests.post(url, data=big, headers=headers, timeout=120)
        assert r.status_code == 413 and "at most 65,536 are accepted" in r.json()["message"], (url, r.text[:300])
    r = requests.put(f"{hub.url}/services/billing/api/notifications", data=big, headers=headers, timeout=120)
    assert r.status_code == 413 and "at most 65,536 are accepted" in r.json()["message"], r.text[:300]
    # (the proxy itself refuses URLs past 16 KB, before any of gpulab is asked)
    r = requests.get(f"{hub.url}/services/billing/api/usage", params={"user": "x" * 4000},
                     headers={"Authorization": f"token {hub.token}"}, timeout=60)
    assert r.status_code == 400 and "'user' must be at most 256 characters" in r.json()["message"], r.text[:300]


def test_the_user_can_still_spawn_after_all_that(hub):
    """Nothing the fuzzing stored (overrides, options) breaks a later spawn or quota page."""
    st_, body = hub.spawn("ann", {"profile": "minimal", "gpus": 1})
    assert st_ in (201, 202), body
    hub.wait_ready("ann")
    me = requests.get(f"{hub.url}/services/quotas/api/me", headers={"Authorization": f"token {hub.ann}"}, timeout=60)
    assert me.status_code == 200 and me.json()["in_use"] == 1.0
    hub.stop_server("ann")
