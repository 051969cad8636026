"""The shared validation layer (hub_plugins/validation.py), with tables: what each check accepts,
what it refuses, with which status and words."""

import datetime as dt

import pytest

from hub_plugins.validation import (
    InputError, duration, flag, iso_time, json_body, names_list, number, shown, text, whole_number,
)

UTC = dt.timezone.utc


@pytest.mark.parametrize("value, out", [(0, 0), (4, 4), ("3", 3), (" 2 ", 2), (2.0, 2), ("004", 4)])
def test_whole_number_accepts(value, out):
    assert whole_number(value, "gpus", 0, 4) == out


@pytest.mark.parametrize("value", [
    -1, 5, 1.5, True, None, [1], {}, "", "two", "\u0661", "\uff13", "1e2", "0x1", "+1", "1_0", float("nan"),
    float("inf"), -float("inf"), 1e308, "9" * 5000, pytest.param(10**5000, id="int5000digits"),
])
def test_whole_number_refuses(value):
    with pytest.raises(InputError) as e:
        whole_number(value, "gpus", 0, 4)
    assert e.value.status == 400 and str(e.value).startswith("'gpus' must be a whole number from 0 to 4, got ")
    assert len(str(e.value)) < 200


@pytest.mark.parametrize("value, out", [(0, 0), ("0.5", 0.5), (2.5, 2.5), ("3", 3), (4096, 4096)])
def test_number_accepts(value, out):
    assert number(value, "max_gpus", 0, 4096) == out


@pytest.mark.parametrize("value", ["nan", "inf", "1e308", float("nan"), 1e308, -0.5, 4097, "\u0661", True, "", "1,5",
                                   2**70])
def test_number_refuses(value):
    with pytest.raises(InputError, match="'max_gpus' must be a number from 0 to 4096"):
        number(value, "max_gpus", 0, 4096)


def test_number_open_lower_bound():
    with pytest.raises(InputError, match="above 0"):
        number(0, "cpu_limit", 0, 64, lo_open=True)
    assert number("0.25", "cpu_limit", 0, 64, lo_open=True) == 0.25


@pytest.mark.parametrize("value, out", [("2h", 7200), ("90m", 5400), ("1h30m", 5400), (600, 600), (600.0, 600),
                                        ("", None), (None, None)])
def test_duration(value, out):
    assert duration(value, "runtime", 300, 3600 * 24, "e.g. '2h'") == out


@pytest.mark.parametrize("value", ["\u0661h", "1.5h", 1.5, float("nan"), float("inf"), "9" * 5000, 10**13, "2 hours",
                                   "h", "m", True, [], "99999999h"])
def test_duration_refuses(value):
    with pytest.raises(InputError, match="'runtime' must be a duration e.g. '2h'"):
        duration(value, "runtime", 300, 3600 * 24, "e.g. '2h'")


def test_text_and_flag():
    assert text("ann", "user", 255) == "ann"
    with pytest.raises(InputError, match="at most 255 characters, got 100000"):
        text("a" * 100_000, "approved_by", 255)
    with pytest.raises(InputError, match="must be a project name"):
        text("../x", "project", 63, pattern="[a-z0-9-]+", what="a project name")
    with pytest.raises(InputError, match="must not be empty"):
        text("", "reason", 10)
    assert flag("on", "queue") is True and flag("no", "queue") is False
    with pytest.raises(InputError):
        flag(1, "queue")


def test_iso_time():
    default = dt.datetime(2026, 1, 1, tzinfo=UTC)
    assert iso_time("", "since", default) == default
    assert iso_time("2026-11-01", "since", default) == dt.datetime(2026, 11, 1, tzinfo=UTC)
    for bad in ("soon", "2026-13-01", "\u0662\u0660\u0662\u0666-01-01", "9" * 5000):
        with pytest.raises(InputError, match="'since' must be a date or time"):
            iso_time(bad, "since", default)


@pytest.mark.parametrize("body, ctype, status, words", [
    (b"x" * (10 * 1024 * 1024), "application/json", 413, "at most 65,536 are accepted"),
    (b'{"a": 1}', "text/plain", 415, "Content-Type: application/json"),
    (b'{"a": 1}', "multipart/form-data; boundary=x", 415, "got 'multipart/form-data'"),
    (b"gpus=1&profile=minimal", "application/x-www-form-urlencoded", 400, "not valid JSON"),
    (b'{"a": NaN}', "application/json", 400, "NaN"),
    (b'{"a": [1, Infinity]}', None, 400, "Infinity"),
    (b'{"a": 1e400}', None, 400, "'a' must be a finite number"),
    (b'{"a": ' + b"9" * 5000 + b"}", None, 400, "not valid JSON"),
    (b"\xff\xfe", None, 400, "not valid JSON"),
    (b"[" * 100_000, None, 400, "not valid JSON"),
    (b"[" * 100 + b"]" * 100, None, 400, "nested too deeply"),
])
def test_json_body_refuses(body, ctype, status, words):
    with pytest.raises(InputError) as e:
        json_body(body, ctype, max_bytes=64 * 1024 if len(body) > 200_000 else 10**6)
    assert e.value.status == status and words in str(e.value)


@pytest.mark.parametrize("body, ctype, out", [
    (b'{"a": 1}', "application/json; charset=utf-8", {"a": 1}),
    (b'{"a": 1}', None, {"a": 1}),
    (b'{"a": 1}', "application/merge-patch+json", {"a": 1}),
    (b'{"a": 1}', "application/x-www-form-urlencoded", {"a": 1}),  # curl -d's default label
    (b"", "text/plain", "empty"),
])
def test_json_body_accepts(body, ctype, out):
    assert json_body(body, ctype, default="empty") == out


def test_shown_and_names_are_bounded():
    assert shown("x" * 10_000_000).endswith("... (10000000 characters)") and len(shown("x" * 10_000_000)) < 80
    assert shown(10**5000) == "<int>"
    assert names_list([f"k{i}" for i in range(10_000)]).endswith("and 9995 more")
