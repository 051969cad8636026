"""Overrides admins manage, their audit trail (SQLite and PostgreSQL), the quotas service's core
logic, and quota resolution with database overrides (what the next spawn sees)."""

import datetime as dt
import random

from pathlib import Path

import pytest

from hub_plugins.core import GPULab
from hub_plugins.store.db import Database
from hub_plugins.store.overrides import OverrideStore, record_id
from services.admin.core import AdminError, QuotaAdmin, parse_override
from services.admin.forms import form_to_override
from tests.unit.test_settings import ROOT

TODAY = dt.date(2026, 11, 23)
SOON = dt.date(2026, 12, 1)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/gpulab.sqlite"
    pg = request.getfixturevalue("pg")
    return pg.create_db(f"ovr_{random.getrandbits(40):x}")


@pytest.fixture
def core(db_url):
    core = GPULab(db_url=db_url, profiles_dir=str(ROOT / "profiles"), inventory_spec="4xA100-80GB",
                  quotas={"default": {"max_gpus": 1}, "groups": {"researcher": {"max_gpus": 2}},
                          "overrides": [{"user": "cfg", "max_gpus": 4, "expires": "2099-01-01", "reason": "yaml"}]})
    yield core
    core.db.dispose()


def test_store_and_audit_in_one_transaction(core):
    store = OverrideStore(core.db)
    o = store.create(user="ann", limits={"max_gpus": 3}, expires=SOON, reason="deadline", approved_by="pi",
                     actor="admin")
    assert o["id"].startswith("db:") and o["limits"] == {"max_gpus": 3} and o["expires"] == "2026-12-01"
    assert [x.limits for x in store.for_user("ann", today=TODAY)] == [{"max_gpus": 3}]
    assert store.for_user("ann", today=SOON) == ()  # expired at 00:00 UTC on its date
    assert store.list(today=SOON) == [] and len(store.list(today=SOON, include_expired=True)) == 1
    removed = store.remove(o["id"], actor="boss", reason="done")
    assert removed == o and store.remove(o["id"], actor="boss") is None and store.get(o["id"]) is None
    trail = store.audit()
    assert [(a["action"], a["actor"], a["object_id"]) for a in trail] == [
        ("override.remove", "boss", o["id"]), ("override.create", "admin", o["id"])]
    assert trail[0]["before"] == o and trail[0]["after"] is None and trail[1]["after"] == o


def test_database_overrides_change_the_effective_quota(core):
    assert core.effective("ann", ["researcher"]).limits.max_gpus == 2
    store = OverrideStore(core.db)
    far = dt.date.today() + dt.timedelta(days=10)
    store.create(user="ann", limits={"max_gpus": 4, "profiles": ["minimal"]}, expires=far, reason="r",
                 approved_by="pi", actor="admin")
    eff = core.effective("ann", ["researcher"])
    assert eff.limits.max_gpus == 4 and eff.limits.profiles == {"minimal"}
    assert eff.source("max_gpus") == f"your override until {far.isoformat()}"
    assert core.effective("bob", []).limits.max_gpus == 1  # only ann's


@pytest.mark.parametrize("body, message", [
    ({"user": "ann", "expires": "2026-12-01", "reason": "x"}, "must set at least one limit"),
    ({"user": "ann", "max_gpus": 1, "expires": "2026-11-23", "reason": "x"}, "'expires' must be after today (2026-11-23)"),
    ({"user": "ann", "max_gpus": 1, "expires": "soon", "reason": "x"}, "expires"),
    ({"user": "ann", "max_gpus": 1, "expires": None, "reason": "   "}, "'reason' must say why"),
    ({"user": "ann", "max_gpus": 1, "expires": None, "reason": "x" * 501}, "reason: must be at most 500 characters, got 501"),
    ({"user": "a b", "max_gpus": 1, "expires": None, "reason": "x"}, "user"),
    ({"user": "ann", "gpu_types": ["A100 80GB"], "expires": None, "reason": "x"}, "is not a GPU type name"),
    ({"user": "ann", "profiles": ["gpt"], "expires": None, "reason": "x"}, "Unknown profile 'gpt'"),
    ([], "Send a JSON object"),
    # what an adversarial run found accepted (issue 10): non-finite, unbounded, too long
    ({"user": "ann", "max_gpus": float("nan"), "expires": None, "reason": "x"}, "max_gpus: nan is not of type"),
    ({"user": "ann", "max_gpus": float("inf"), "expires": None, "reason": "x"}, "max_gpus: inf is not of type"),
    ({"user": "ann", "max_gpus": 1e308, "expires": None, "reason": "x"}, "max_gpus: 1e+308 is greater than the maximum"),
    ({"user": "ann", "budget": 1e300, "expires": None, "reason": "x"}, "budget: 1e+300 is greater than the maximum"),
    ({"user": "ann", "max_gpus": 1, "expires": None, "reason": "x", "approved_by": "p" * 100_000},
     "approved_by: must be at most 255 characters, got 100000"),
    ({"user": "a" * 300, "max_gpus": 1, "expires": None, "reason": "x"}, "user: must be at most 255 characters"),
    ({"user": "ann", "gpu_types": ["x" * 200], "expires": None, "reason": "x"}, "gpu_types"),
])
def test_parse_override_refuses(body, message):
    with pytest.raises(AdminError) as e:
        parse_override(body, "admin", ["minimal", "pytorch"], today=TODAY)
    assert e.value.status == 400 and message in e.value.message


def test_an_override_names_only_gpu_types_the_hub_has():
    """A typo ('V100' on a hub of A100s) was accepted, and left the person no type to use."""
    types = ["A100-80GB", "A100-80GB:1g.10gb"]
    body = {"user": "ann", "gpu_types": ["A100-80GB", "V100"], "expires": None, "reason": "x"}
    with pytest.raises(AdminError) as e:
        parse_override(body, "admin", ["minimal"], today=TODAY, gpu_types=types)
    assert e.value.status == 400 and e.value.message == (
        "No GPU of type 'V100' on this hub (its types: A100-80GB, A100-80GB:1g.10gb); '*' allows every type.")
    for ok in (["A100-80GB:1g.10gb"], ["*"], []):
        assert parse_override({**body, "gpu_types": ok}, "admin", ["minimal"], today=TODAY,
                              gpu_types=types).limits == {"gpu_types": ok}


def test_parse_override_accepts():
    new = parse_override({"user": "ann", "max_gpus": 2.5, "max_servers": 3, "expires": None, "reason": " why "},
                         "admin", ["minimal"], today=TODAY)
    assert new.limits == {"max_gpus": 2.5, "max_servers": 3} and new.expires is None
    assert new.reason == "why" and new.approved_by == "admin"


def test_form_to_override():
    body = form_to_override({"user": "ann", "max_gpus": "2", "max_gpus_per_server": "0.5", "max_servers": "",
                             "profiles": "minimal, pytorch", "gpu_types": "", "expires": "2026-12-01",
                             "reason": "r", "approved_by": ""})
    assert body == {"user": "ann", "max_gpus": 2, "max_gpus_per_server": 0.5, "profiles": ["minimal", "pytorch"],
                    "expires": "2026-12-01", "reason": "r"}
    with pytest.raises(AdminError, match="'max_servers' must be a whole number from 0 to 10000, got '1.5'"):
        form_to_override({"max_servers": "1.5", "expires": "2026-12-01"})
    with pytest.raises(AdminError, match="expiry date"):
        form_to_override({"user": "ann", "max_gpus": "2"})
    for value in ("\u0661", "nan", "inf", "1e308", "9" * 5000, "-1", "4097"):
        with pytest.raises(AdminError, match="'max_gpus' must be a number from 0 to 4096"):
            form_to_override({"max_gpus": value, "expires": "2026-12-01"})


def test_bad_rows_already_stored_are_skipped_not_fatal(core):
    """A NaN override written by an older version must not break its user's spawns or the list."""
    import json

    import sqlalchemy as sa

    store = OverrideStore(core.db)
    good = store.create(user="ann", limits={"max_gpus": 2}, expires=None, reason="ok", approved_by="pi", actor="a")
    # what the old quotas service stored for {"max_gpus": NaN} (PostgreSQL's json refuses NaN: 1e308)
    limits = '{"max_gpus": NaN}' if core.db.engine.dialect.name == "sqlite" else '{"max_gpus": 1e308}'
    with core.db.engine.begin() as c:
        c.execute(sa.text("INSERT INTO gpulab_quota_overrides (user_name, limits, reason, approved_by, created_by, "
                          "created_at) VALUES ('ann', :limits, 'x', 'y', 'z', :now)"),
                  {"limits": limits, "now": dt.datetime(2026, 11, 1)})
    assert [o.id for o in store.for_user("ann")] == [good["id"]]
    assert core.effective("ann", []).limits.max_gpus == 2
    listed = store.list()
    json.dumps(listed, allow_nan=False)  # valid JSON: no NaN reaches an answer
    bad = [o for o in listed if o.get("invalid")]
    assert len(bad) == 1 and bad[0]["limits"] == {} and "max_gpus" in bad[0]["invalid"]
    assert store.remove(bad[0]["id"], actor="admin", reason="bad row") is not None


@pytest.mark.parametrize("ident", ["db:" + "9" * 23, "db:\u0661", "\u0661\u0662", "db:-1", "db:"])
def test_odd_ids_are_no_override(core, ident):
    store = OverrideStore(core.db)
    assert record_id(ident) is None and store.get(ident) is None and store.remove(ident, actor="a") is None


def test_quota_admin(core):
    admin = QuotaAdmin(core)
    far = (dt.date.today() + dt.timedelta(days=5)).isoformat()
    with pytest.raises(AdminError) as e:
        admin.create_override({"user": "zed", "max_gpus": 2, "expires": far, "reason": "x"}, "admin",
                              user_exists=lambda n: False)
    assert e.value.status == 404
    o = admin.create_override({"user": "ann", "max_gpus": 2, "expires": far, "reason": "x"}, "admin")
    assert [x["id"] for x in admin.list_overrides()] == ["config:0", o["id"]]
    assert [x["id"] for x in admin.list_overrides(user="ann")] == [o["id"]]
    view = admin.user_view("ann", ["researcher"])
    assert view["limits_text"]["max_gpus"] == "2 GPUs" and view["overrides"][0]["source"] == "admin"
    assert view["in_use_text"] == "0 GPUs" and view["left_text"] == "2 GPUs"
    assert admin.user_view("cfg", [])["overrides"][0]["source"] == "config"
    with pytest.raises(AdminError) as e:
        admin.remove_override("config:0", "admin")
    assert e.value.status == 409
    with pytest.raises(AdminError) as e:
        admin.remove_override("db:424242", "admin")
    assert e.value.status == 404
    admin.remove_override(o["id"], "admin", "over")
    assert admin.audit(limit=1)[0]["reason"] == "over"


def test_record_ids():
    assert record_id("db:12") == 12 and record_id("12") == 12
    assert record_id("config:1") is None and record_id("db:x") is None


def test_migration_is_idempotent(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/m.sqlite")
    db.upgrade()
    db.upgrade()
    import sqlalchemy as sa

    with db.engine.connect() as c:
        names = set(sa.inspect(c).get_table_names())
        version = c.execute(sa.text("SELECT version_num FROM gpulab_alembic_version")).scalar()
    versions = Path(__file__).resolve().parents[2] / "hub_plugins/store/migrations/versions"
    head = max(p.name[:4] for p in versions.glob("0*.py"))  # the newest migration, whichever it is
    assert {"gpulab_quota_overrides", "gpulab_audit", "gpulab_servers"} <= names and version == head
