"""Usage reports: per record, totals, CSV, grouping (pure)."""

import csv
import datetime as dt
import io
from dataclasses import fields
from types import SimpleNamespace

import pytest

from services.billing.report import (
    CSV_FIELDS,
    Line,
    by_key,
    parse_time,
    per_day,
    report,
    to_csv,
)

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 20, 10)  # naive UTC, as stored
NOW = dt.datetime(2026, 11, 22, 12, tzinfo=UTC)


def rec(user, start_h, hours, gpus=1, rate=2.0, ready=True, util=None, energy=0.0, gpu_type="A100-80GB",
        borrowed=False):
    start = T0 + dt.timedelta(hours=start_h)
    return SimpleNamespace(
        user_name=user, server_name="", profile="minimal", project="", gpu_type=gpu_type if gpus else "",
        gpu_count=gpus, equivalents=str(gpus), devices="0", started_at=start,
        ready_at=start if ready else None, stopped_at=None if hours is None else start + dt.timedelta(hours=hours),
        stop_reason="user", stopped_by="user:" + user, rate_per_hour=rate * gpus, minimum_seconds=60,
        util_sum=(util or 0) * 10,
        util_samples=10 if util is not None else 0, energy_wh=energy, queued_seconds=0.0, borrowed=borrowed)


POWER = {"A100-80GB": 400, "*": 300}


def test_report_lines_and_totals():
    records = [rec("ann", 0, 2, gpus=2, util=50), rec("bob", 1, 1, util=10, energy=350), rec("cat", 2, 1, ready=False)]
    rep = report(records, T0.replace(tzinfo=UTC), NOW, NOW, POWER, 400, "EUR")
    lines = {ln["user"]: ln for ln in rep["records"]}
    assert set(lines) == {"ann", "bob"}  # a failed start costs nothing and is left out
    assert lines["ann"]["gpu_hours"] == pytest.approx(4) and lines["ann"]["cost"] == pytest.approx(8)
    assert lines["ann"]["energy_kwh"] == pytest.approx(1.6) and not lines["ann"]["energy_measured"]  # 400 W x 4 h
    assert lines["bob"]["energy_kwh"] == pytest.approx(0.35) and lines["bob"]["energy_measured"]
    assert lines["ann"]["co2_kg"] == pytest.approx(0.64)
    t = rep["totals"]
    assert t["gpu_hours"] == pytest.approx(5) and t["cost"] == 10.0
    assert t["efficiency_pct"] == pytest.approx((50 * 4 + 10 * 1) / 5, abs=0.05)  # weighted by GPU-hours


def test_range_splits_a_server():
    r = rec("ann", 0, 10)  # 10:00-20:00
    rep = report([r], T0.replace(tzinfo=UTC), (T0 + dt.timedelta(hours=4)).replace(tzinfo=UTC), NOW, POWER, 0, "EUR")
    assert rep["records"][0]["gpu_hours"] == pytest.approx(4)


def test_running_server_and_per_day():
    r = rec("ann", 40, None)  # started 2026-11-22 02:00, still running at 12:00
    rep = report([r], T0.replace(tzinfo=UTC), NOW + dt.timedelta(days=1), NOW, POWER, 0, "EUR")
    assert rep["records"][0]["running"] and rep["records"][0]["gpu_hours"] == pytest.approx(10)
    days = per_day([r], T0.replace(tzinfo=UTC), NOW)
    assert [d["gpu_hours"] for d in days] == [0, 0, pytest.approx(10)]


def test_csv_and_grouping():
    rep = report([rec("ann", 0, 1), rec("bob", 0, 3, borrowed=True)], T0.replace(tzinfo=UTC), NOW, NOW, POWER, 0, "USD")
    rows = list(csv.DictReader(io.StringIO(to_csv(rep))))
    assert [r["user"] for r in rows] == ["ann", "bob"] and rows[0]["currency"] == "USD"
    # a borrowed server's line says so, in the JSON and the CSV
    assert [r["preemptible"] for r in rows] == ["False", "True"] and rep["records"][1]["preemptible"] is True
    assert rows[1]["cost"] == "6.000000"
    groups = {"ann": ["lab"], "bob": ["lab", "x"]}
    assert [(g["name"], g["gpu_hours"]) for g in by_key(rep["records"], lambda ln: groups[ln["user"]])] == \
        [("lab", 4.0), ("x", 3.0)]


def test_parse_time():
    assert parse_time("2026-11-01", NOW) == dt.datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_time("2026-11-01T08:00Z", NOW).hour == 8
    assert parse_time("", NOW) == NOW
    with pytest.raises(ValueError, match="not an ISO date"):
        parse_time("last week", NOW)


_AT = "2026-11-20T10:00:00+00:00,2026-11-20T10:00:00+00:00"


@pytest.mark.parametrize("record, extra, want", [
    (rec("ann", 0, 1.5), {},
     (f"ann,,minimal,,A100-80GB,1,1.0,0,{_AT},2026-11-20T11:30:00+00:00,user,user:ann,False,5400.0,1.5,3.000000,,"
      "0.6,False,0.21,0.0,False,EUR\r\n")),
    (rec("ann", 0, 1.5, gpus=2, util=47.25, energy=350.0), {},  # measured power; efficiency to one decimal
     (f"ann,,minimal,,A100-80GB,2,2.0,0,{_AT},2026-11-20T11:30:00+00:00,user,user:ann,False,10800.0,3.0,6.000000,"
      "47.2,0.35,True,0.1225,0.0,False,EUR\r\n")),
    (rec("ann", 0, None), {},  # running: no stop time, charged up to now
     (f"ann,,minimal,,A100-80GB,1,1.0,0,{_AT},,user,user:ann,True,180000.0,50.0,100.000000,,20.0,False,7.0,0.0,"
      "False,EUR\r\n")),
    (rec("ann", 0, 1.5, borrowed=True, rate=0.1234567), {},  # the cost with 6 decimals
     (f"ann,,minimal,,A100-80GB,1,1.0,0,{_AT},2026-11-20T11:30:00+00:00,user,user:ann,False,5400.0,1.5,0.185185,,"
      "0.6,False,0.21,0.0,True,EUR\r\n")),
    (rec("ann", 0, 1.5), {"devices": "0,1", "server_name": 'my "big", run', "stopped_by": ""},  # quoted fields
     (f'ann,"my ""big"", run",minimal,,A100-80GB,1,1.0,"0,1",{_AT},2026-11-20T11:30:00+00:00,user,,False,5400.0,'
      "1.5,3.000000,,0.6,False,0.21,0.0,False,EUR\r\n")),
    (rec("bob", 0.0001, 0.01, rate=0.5, util=3.04), {},  # microseconds; 36 s raised to the minute
     ("bob,,minimal,,A100-80GB,1,1.0,0,2026-11-20T10:00:00.360000+00:00,2026-11-20T10:00:00.360000+00:00,"
      "2026-11-20T10:00:36.360000+00:00,user,user:bob,False,60.0,0.016667,0.008333,3.0,0.006667,False,0.002333,0.0,"
      "False,EUR\r\n")),
])
def test_a_csv_line_byte_for_byte(record, extra, want):
    """What a CSV line is, to the byte (as before the export was made faster: these are its lines)."""
    vars(record).update(extra)
    text = to_csv(report([record], T0.replace(tzinfo=UTC), NOW, NOW, POWER, 350, "EUR"))
    header, line = text.split("\r\n", 1)
    assert header.split(",") == CSV_FIELDS + ["currency"]
    assert line == want


def test_the_csv_s_columns_are_a_line_s_fields():
    """One list: the CSV writes a line's fields in their order (then the currency)."""
    assert CSV_FIELDS == [f.name for f in fields(Line)]
    assert CSV_FIELDS[:3] == ["user", "server", "profile"] and CSV_FIELDS[-1] == "preemptible"
