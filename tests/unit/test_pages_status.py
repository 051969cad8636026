"""What the home page and JupyterLab's title say about a server (pure, tables)."""

from __future__ import annotations

import datetime as dt

import pytest

from hub_plugins.accounting.budgets import Usage
from hub_plugins.accounting.stops import Requester, cause, note, requester
from hub_plugins.pages.status import Held, Place, ServerFacts, duration_text, server_row, title_text

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
PROFILES = {"minimal": "Minimal", "pytorch": "PyTorch"}


def facts(phase="running", name="", **requested):
    return ServerFacts(name, phase, f"/user/ann/{name}", "/progress", requested)


def held(minutes_ago=30, gpus=2, rate=2.5, runtime_h=None, ready=True, minimum=60):
    start = NOW - dt.timedelta(minutes=minutes_ago)
    return Held("pytorch", "A100-80GB" if gpus else "", gpus, tuple(str(i) for i in range(gpus)), start,
                start + dt.timedelta(seconds=20) if ready else None,
                int(runtime_h * 3600) if runtime_h else None,
                Usage(start, None, ready, float(gpus), rate, minimum))


@pytest.mark.parametrize("f, h, place, expect", [
    # running, 2 GPUs for 30 min at 2.50/h, 4 h runtime chosen
    (facts(), held(runtime_h=4), None,
     {"state": "running", "gpus_text": "2 A100-80GB GPUs", "cost_text": "1.25 EUR", "rate_text": "2.50 EUR/h",
      "time_left_text": "3 h 30 min", "profile_display": "PyTorch", "label": "default"}),
    # no runtime chosen: no time left shown
    (facts(name="exp1"), held(), None, {"label": "exp1", "time_left_text": "", "seconds_left": None}),
    # queued: no reservation yet, its place in the queue and what it asked for
    (facts("starting", profile="pytorch", gpus=2), None, Place(2, 3),
     {"state": "queued", "queue_position": 2, "queue_length": 3, "gpus_text": "2 GPUs asked for",
      "cost_text": "", "profile_display": "PyTorch"}),
    # starting with its GPUs reserved: not charged until it is up (a failed start is free)
    (facts("starting"), held(minutes_ago=1, ready=False, runtime_h=1), None,
     {"state": "starting", "cost_text": "0.00 EUR", "time_left_text": "1 h 00 min once it is up", "stops_at": None}),
    # the minimum charge: 10 s running is charged as 60 s
    (facts(), held(minutes_ago=0.5, gpus=1, rate=3.6), None, {"cost_text": "0.06 EUR"}),
    # CPU only, free
    (facts(), held(gpus=0, rate=0), None, {"gpus_text": "CPU only", "rate_text": "no charge", "cost_text": "0.00 EUR"}),
    # past its runtime (the culler is about to stop it)
    (facts(), held(minutes_ago=130, runtime_h=2), None, {"seconds_left": 0, "time_left_text": "less than a minute"}),
    (facts("stopping"), held(), None, {"state": "stopping", "preemptible": False}),
    # borrowed beyond quota: marked (only a JSON true counts, as the spawn validated it)
    (facts(preemptible=True), held(), None, {"preemptible": True}),
    (facts(preemptible="yes"), held(), None, {"preemptible": False}),
])
def test_rows(f, h, place, expect):
    row = server_row(f, h, place, PROFILES, "EUR", NOW)
    assert {k: row[k] for k in expect} == expect


def test_title():
    row = server_row(facts(), held(runtime_h=4), None, PROFILES, "EUR", NOW)
    assert title_text(row) == "gpulab · 2 A100-80GB GPUs · 3 h 30 min left · 2.50 EUR/h"
    row = server_row(facts(), held(gpus=0, rate=0), None, PROFILES, "EUR", NOW)
    assert title_text(row) == "gpulab · CPU only"


@pytest.mark.parametrize("seconds, text", [(0, "less than a minute"), (59, "less than a minute"), (60, "1 min"),
                                           (3599, "59 min"), (3600, "1 h 00 min"), (26 * 3600 + 300, "26 h 05 min")])
def test_durations(seconds, text):
    assert duration_text(seconds) == text


@pytest.mark.parametrize("who, reason, by", [
    (None, "user", ""),  # the hub said nothing (e.g. another authenticator): as before, the user's
    (Requester("user", "ann", False, "ann"), "user", "user:ann"),
    (Requester("user", "ann", True, "ann"), "user", "user:ann"),  # an admin stopping their own
    (Requester("user", "ada", True, "ann"), "admin", "admin:ada"),
    (Requester("user", "tom", False, "ann"), "other_user", "user:tom"),  # a role that allows it
    (Requester("service", "idle-culler", False, "ann"), "culled", "service:idle-culler"),
    (Requester("service", "ci", False, "ann"), "service", "service:ci"),
    # gpulab's own culler says why itself (the usage record's pending reason wins over this)
    (Requester("service", "culler", False, "ann"), "service", "service:culler"),
])
def test_who_stopped(who, reason, by):
    assert cause(who, "ann", ("idle-culler",)) == (reason, by)


class _Handler:
    def __init__(self, user):
        self.current_user = user


class _User:
    def __init__(self, name, kind="user", admin=False):
        self.name, self.kind, self.admin = name, kind, admin


def test_the_note_belongs_to_its_request_and_its_target():
    import contextvars

    def request(user, target):
        note(target, _Handler(user))
        return requester("ann")

    assert contextvars.copy_context().run(request, _User("ada", admin=True), "ann") == Requester("user", "ada", True, "ann")
    assert contextvars.copy_context().run(request, _User("ada", admin=True), "ben") is None  # another user's stop
    assert contextvars.copy_context().run(request, _User("idle-culler", kind="service"), "ann").label == "service:idle-culler"
    assert requester("ann") is None  # nothing leaks out of a request's context
