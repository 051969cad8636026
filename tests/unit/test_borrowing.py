"""Borrowing beyond quota in the spawn path: who may borrow (tables), the strict 'preemptible'
field, and on a real database what a borrowed server skips, costs and leaves to others."""

import datetime as dt

import pytest
import sqlalchemy as sa

from hub_plugins.queue.borrowing import Borrowing, BorrowRefused
from hub_plugins.queue.store import QueueAhead
from hub_plugins.spawn.form import build_model
from hub_plugins.spawn.request import RequestError, SpawnRequest, from_form, parse_preemptible
from hub_plugins.store.allocator import NoCapacity, Owner, QuotaRefused
from hub_plugins.store.models import ServerRecord, UsageRecord
from tests.support.gpulab import gpulab_core

GPU = "A100-80GB"


@pytest.mark.parametrize("config, groups, refused", [
    ({}, ["borrowers"], "switched off"),  # off by default
    ({"enabled": True}, ["borrowers"], "Only members of no group"),  # empty groups: nobody
    ({"enabled": True, "groups": ["borrowers"]}, ["student"], "Only members of 'borrowers'"),
    ({"enabled": True, "groups": ["borrowers"]}, [], "ask an admin to add you"),
    ({"enabled": True, "groups": ["borrowers", "staff"]}, ["staff"], None),
    ({"enabled": False, "groups": ["borrowers"]}, ["borrowers"], "switched off"),
])
def test_who_may_borrow(config, groups, refused):
    b = Borrowing.from_config({"borrowing": config})
    why = b.refusal(groups)
    assert (why is None) == (refused is None) and b.allows(groups) == (refused is None)
    if refused:
        assert refused in why and "Leave 'preemptible' out" in why


def test_borrowing_settings_from_config():
    b = Borrowing.from_config({"borrowing": {"enabled": True, "groups": ["g"], "rate_factor": 0.5,
                                             "grace_minutes": 0.1, "reclaim_after_minutes": 0}})
    assert (b.rate_factor, b.grace, b.reclaim_after) == (0.5, dt.timedelta(seconds=6), dt.timedelta(0))
    assert Borrowing.from_config(None) == Borrowing()  # the defaults: off, nobody, full price
    assert "scheduler" in Borrowing(True, frozenset({"g"})).refusal(["g"], placed_here=False)
    assert "needs the queue" in Borrowing(True, frozenset({"g"})).refusal(["g"], queue_on=False)


@pytest.mark.parametrize("value", ["yes", "true", "on", 1, 0, None, [], {}, 1.0])
def test_preemptible_takes_json_booleans_only(value):
    with pytest.raises(RequestError, match="'preemptible' must be true or false .*or leave it out"):
        parse_preemptible(value)


def test_preemptible_from_the_form():
    assert parse_preemptible(True) is True and parse_preemptible(False) is False
    assert from_form({"preemptible": ["on"], "gpus": ["1"]})["preemptible"] is True


@pytest.fixture
def core(tmp_path):
    with gpulab_core(tmp_path, f"4x{GPU}",
                     quotas={"default": {"max_gpus": 1, "max_servers": 1}},
                     billing={"rates": {"*": 2.0}},
                     queue_settings={"borrowing": {"enabled": True, "groups": ["borrowers"], "rate_factor": 0.5}}) as c:
        yield c


def ask(core, gpus: int, **extras) -> SpawnRequest:
    return SpawnRequest(core.catalog.get("minimal"), gpus, GPU, tuple(extras.items()))


def rows(core, model):
    with core.db.read() as s:
        return {(r.user_name, r.server_name): r for r in s.scalars(sa.select(model))}


def test_a_borrowed_server_skips_the_gpu_and_server_limits_and_costs_less(core):
    ann = Owner(1, "ann", "")
    core.allocate(ann, ask(core, 1), ["borrowers"])
    with pytest.raises(QuotaRefused):  # within quota she has no room left
        core.allocate(Owner(1, "ann", "b1"), ask(core, 1), ["borrowers"])
    a1 = core.allocate(Owner(1, "ann", "b1"), ask(core, 1, preemptible=True), ["borrowers"])
    a2 = core.allocate(Owner(1, "ann", "b2"), ask(core, 1, preemptible=True), ["borrowers"])
    assert a1.borrowed and a2.borrowed
    servers, usage = rows(core, ServerRecord), rows(core, UsageRecord)
    assert [servers[("ann", n)].borrowed for n in ("", "b1", "b2")] == [False, True, True]
    assert usage[("ann", "b1")].borrowed and usage[("ann", "b1")].rate_per_hour == 1.0  # 2.0 x 0.5
    assert not usage[("ann", "")].borrowed and usage[("ann", "")].rate_per_hour == 2.0
    # borrowed servers count against no quota: her within-quota server stops, a new one fits
    core.release(ann)
    assert not core.allocate(ann, ask(core, 1), ["borrowers"]).borrowed
    # the per-server limit still holds for borrowers (only the totals are lent)
    core.quotas = {"default": {"max_gpus": 1, "max_servers": 1, "max_gpus_per_server": 1}}
    with pytest.raises(QuotaRefused, match="per server"):
        core.allocate(Owner(1, "ann", "b3"), ask(core, 2, preemptible=True), ["borrowers"])


def test_only_members_may_borrow(core):
    with pytest.raises(BorrowRefused, match="Only members of 'borrowers'"):
        core.allocate(Owner(2, "bob", ""), ask(core, 1, preemptible=True), ["student"])
    assert not core.allocate(Owner(2, "bob", ""), ask(core, 1, preemptible=False), ["student"]).borrowed


def test_a_borrower_does_not_start_on_gpus_a_request_within_quota_waits_for(core):
    for i in range(3):
        core.allocate(Owner(10 + i, f"u{i}", ""), ask(core, 1), [])
    bob = Owner(2, "bob", "")
    core.quotas = {"default": {"max_gpus": 2, "max_servers": 1}}
    with pytest.raises(NoCapacity):
        core.allocate(bob, ask(core, 2), [])
    entry, _ = core.queue.enqueue(bob, {"gpus": 2}, [GPU], 2)
    assert core.queue_try_start(entry, bob, ask(core, 2), [], 0).reason == "reserved"
    # one GPU is free, but it is held for bob: a borrower waits behind him
    with pytest.raises(QueueAhead):
        core.allocate(Owner(1, "ann", "b1"), ask(core, 1, preemptible=True), ["borrowers"])
    # a waiting borrower is behind bob in the queue's order
    ann = Owner(1, "ann", "b1")
    core.queue.enqueue(ann, {"gpus": 1, "preemptible": True}, [GPU], 1)
    assert [w.user for w in core.queue.ordered()] == ["bob", "ann"]


def test_the_form_offers_borrowing_only_to_those_who_may(core):
    core.allocate(Owner(1, "ann", ""), ask(core, 1), ["borrowers"])
    core.allocate(Owner(1, "ann", "b1"), ask(core, 1, preemptible=True), ["borrowers"])
    ann = build_model(core, 1, "ann", ["borrowers"], "new", lambda p: (True, ""))
    assert ann["borrow"]["rate_factor"] == 0.5 and "may be stopped" in ann["borrow"]["note"]
    assert ann["quota"]["in_use"] == 1.0 and ann["quota"]["borrowed"] == [{"name": "b1", "gpus": "1 GPU"}]
    one = next(c for c in ann["profiles"][0]["choices"][GPU] if c["count"] == 1)
    assert not one["ok"] and one["borrow_ok"]  # over her quota, free: she may borrow it
    assert build_model(core, 2, "bob", ["student"], "", lambda p: (True, ""))["borrow"] is None


def test_a_refusal_within_quota_says_that_waiting_takes_borrowed_gpus_back(core):
    for i in range(3):
        core.allocate(Owner(1, "ann", f"b{i}"), ask(core, 1, preemptible=True), ["borrowers"])
    core.quotas = {"default": {"max_gpus": 2, "max_servers": 1}}
    with pytest.raises(NoCapacity) as refused:
        core.allocate(Owner(2, "bob", ""), ask(core, 2), [])
    said = core.refused("capacity", "bob", "", "", refused.value)
    assert said.endswith("3 of the busy ones are borrowed beyond quota: wait in the queue (REST: \"queue\": "
                         "true) and borrowed GPUs are taken back for you after 10 min."), said
    # a borrower is not told to wait for other borrowers' GPUs
    assert "borrowed" not in core.refused("capacity", "ann", "b9", "", refused.value, within_quota=False)
