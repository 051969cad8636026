"""Database outages, the pure and local parts: what counts as an outage, the 503 transform, and
healing a session whose connection was lost (on a real SQLite database)."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from hub_plugins import outage


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    monkeypatch.setattr(outage, "_state", outage._State())


@pytest.mark.parametrize("text, disconnect, expected", [
    ("(psycopg.OperationalError) connection failed: ... Connection refused", False, True),
    ("terminating connection due to administrator command", False, True),
    ("FATAL:  the database system is starting up", False, True),
    ("server closed the connection unexpectedly", False, True),
    ("something odd", True, True),  # SQLAlchemy says it is a disconnect
    ("database is locked", False, False),  # SQLite contention, not an outage
    ('duplicate key value violates unique constraint "pk_gpulab_allocations"', False, False),
])
def test_what_is_an_outage(text, disconnect, expected):
    assert outage.is_outage(text, disconnect) is expected


def transform(path="/hub/api/users", cls=outage.DatabaseOutage, method="GET"):
    return cls(HTTPServerRequest(headers=HTTPHeaders({"Host": "hub"}), start_line=RequestStartLine(method, path, "HTTP/1.1")))


@pytest.mark.parametrize("status, down, replaced", [
    (403, True, True), (500, True, True), (401, True, True),
    (403, False, False), (404, True, False), (200, True, False), (409, True, False),
])
def test_the_503_transform(status, down, replaced):
    if down:
        outage._state.down_since = 1.0
    t = transform()
    code, headers, body = t.transform_first_chunk(status, HTTPHeaders({"Content-Length": "10"}), b"x" * 10, True)
    if replaced:
        assert code == 503 and headers["Retry-After"] == "30" and headers["Content-Type"] == "application/json"
        assert json.loads(body)["message"].startswith("The hub's database is unavailable right now")
        assert headers["Content-Length"] == str(len(body))
        assert t.transform_chunk(b"more", True) == b""
    else:
        assert (code, body) == (status, b"x" * 10)


def test_pages_get_html_and_the_aftermath_counts():
    outage.mark_up()  # back just now: answers still failing from the outage are told so
    code, headers, body = transform("/hub/home").transform_first_chunk(500, HTTPHeaders(), b"", True)
    assert code == 503 and headers["Content-Type"].startswith("text/html") and b"database unavailable" in body


@pytest.mark.parametrize("status, method, path, outage_, gate_open, title", [
    (500, "DELETE", "/hub/api/users/ann/server", False, False, "the hub is starting"),
    (500, "DELETE", "/hub/api/users/ann/servers/gpu", False, False, "the hub is starting"),
    (500, "DELETE", "/hub/api/users/ann/server", False, True, None),  # after the check: a real 500
    (400, "DELETE", "/hub/api/users/ann/server", False, False, None),
    (500, "DELETE", "/hub/api/users/ann", False, False, None),  # deleting a user, not a stop
    (500, "DELETE", "/hub/api/groups/ann", False, False, None),
    (500, "POST", "/hub/api/users/ann/server", False, False, None),
    (500, "DELETE", "/hub/api/users/ann/server", True, False, "database unavailable"),  # the database first
    (403, "GET", "/hub/api/users", True, True, "database unavailable"),
    (500, "GET", "/hub/api/users", False, True, None),  # a bug stays a 500
])
def test_which_answers_become_503(status, method, path, outage_, gate_open, title):
    why = outage.unavailable(status, method, path, outage=outage_, gate_open=gate_open)
    assert (why and why[0]) == title


@pytest.mark.parametrize("gate_open, down, expected", [
    (False, False, "checking"),
    (True, False, None),
    (False, True, "outage"),
])
def test_the_transform_answers_a_stop_during_the_start_up_check(monkeypatch, gate_open, down, expected):
    """What :func:`outage.unavailable` decides, as the transform sends it: status, Retry-After, body."""
    monkeypatch.setattr(outage.gate, "is_open", lambda: gate_open)
    if down:
        outage._state.down_since = 1.0
    code, headers, body = transform("/hub/api/users/ann/server", method="DELETE").transform_first_chunk(
        500, HTTPHeaders(), b"x", True)
    if expected is None:
        assert (code, body) == (500, b"x")
        return
    assert code == 503
    message = json.loads(body)["message"]
    if expected == "checking":
        assert headers["Retry-After"] == "5" and message == outage.STILL_CHECKING
    else:
        assert headers["Retry-After"] == "30" and message == outage.MESSAGE


def test_services_map_the_hubs_upstream_failure():
    code, _, _ = transform("/services/billing/api/usage", outage.ServiceOutage).transform_first_chunk(
        502, HTTPHeaders(), b"", True)
    assert code == 503


def test_heal_rolls_back_only_a_lost_transaction(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path}/x.db")
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE t (x INTEGER)"))
    with Session(engine) as s:
        s.execute(sa.text("INSERT INTO t VALUES (1)"))
        assert outage.heal_session(s) is False  # a healthy transaction: left alone
        s.connection().invalidate()  # its connection is gone (as after a database restart)
        with pytest.raises(sa.exc.PendingRollbackError):
            s.execute(sa.text("SELECT 1"))
        assert outage.heal_session(s) is True
        assert s.execute(sa.text("SELECT count(*) FROM t")).scalar() == 0  # usable again
    engine.dispose()


def test_the_hub_is_configured_with_the_transform(tmp_path):
    """update_outage adds it to whatever tornado settings are configured, once."""
    from traitlets.config import Config

    from hub_plugins.settings.apply import update_outage

    c = Config()
    c.JupyterHub.tornado_settings = {"cookie_options": {"samesite": "Lax"}, "transforms": []}
    update_outage(c, {})
    update_outage(c, {})
    assert c.JupyterHub.tornado_settings["transforms"] == [outage.DatabaseOutage]
    assert c.JupyterHub.tornado_settings["cookie_options"] == {"samesite": "Lax"}
