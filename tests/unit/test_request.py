"""Every field of a spawn request is validated, with a message that says what to change."""

import pytest

from hub_plugins.spawn.profiles import Catalog, profile_from_dict
from hub_plugins.spawn.request import RequestError, from_form, parse

CATALOG = Catalog([
    profile_from_dict("minimal", {"display_name": "Minimal", "default": True, "gpus": {"counts": [0, 1, 2, 3, 4]}}),
    profile_from_dict("small", {"display_name": "Small", "gpus": {"counts": [0, 1, 2], "default": 1,
                                                               "types": ["A100-80GB"]}}),
])
TYPES = ["A100-80GB", "A100-80GB:1g.10gb"]


@pytest.mark.parametrize(
    "options, profile, gpus, gpu_type",
    [
        ({}, "minimal", 0, None),
        (None, "minimal", 0, None),
        ({"profile": "small"}, "small", 1, None),  # the profile's default count
        ({"profile": "minimal", "gpus": 2}, "minimal", 2, None),
        ({"gpus": "3"}, "minimal", 3, None),  # form values are strings
        ({"gpus": 2.0}, "minimal", 2, None),
        ({"gpus": 1, "gpu_type": "A100-80GB:1g.10gb"}, "minimal", 1, "A100-80GB:1g.10gb"),
        ({"gpus": 1, "gpu_type": ""}, "minimal", 1, None),
    ],
)
def test_valid(options, profile, gpus, gpu_type):
    req = parse(options, CATALOG, TYPES)
    assert (req.profile.name, req.gpus, req.gpu_type) == (profile, gpus, gpu_type)


@pytest.mark.parametrize(
    "options, message",
    [
        ([1, 2], "must be a JSON object"),
        ({"gpu": 1}, "Unknown option 'gpu'. Allowed: profile, gpus, gpu_type."),
        ({"profile": "nope"}, "Unknown profile 'nope'. Available: minimal, small."),
        ({"profile": 3}, "'profile' must be a profile name: minimal or small."),
        ({"profile": ""}, "'profile' must be a profile name"),
        ({"gpus": -1}, "'gpus' must be a whole number from 0 to 4, got -1."),
        ({"gpus": 5}, "from 0 to 4, got 5"),
        ({"gpus": "two"}, "got 'two'"),
        ({"gpus": 1.5}, "got 1.5"),
        ({"gpus": True}, "got True"),
        ({"gpus": None}, "got None"),
        ({"gpus": [1]}, "got [1]"),
        ({"profile": "small", "gpus": 3}, "Profile 'small' allows 0, 1 or 2 GPUs; you asked for 3."),
        ({"gpus": 1, "gpu_type": "V100"}, "Unknown GPU type 'V100'. This hub has: A100-80GB, A100-80GB:1g.10gb."),
        ({"gpus": 1, "gpu_type": 7}, "'gpu_type' must be a GPU type name"),
        ({"gpus": 1, "gpu_type": "A100; rm -rf /"}, "'gpu_type' must be a GPU type name"),
        ({"profile": "small", "gpus": 1, "gpu_type": "A100-80GB:1g.10gb"},
         "Profile 'small' does not run on A100-80GB:1g.10gb; it allows: A100-80GB."),
        # what an adversarial run found accepted or answered with a 500 (issue 10)
        ({"gpus": "\u0661"}, "'gpus' must be a whole number from 0 to 4"),  # Arabic-Indic one
        ({"gpus": float("nan")}, "got nan"),
        ({"gpus": float("inf")}, "got inf"),
        ({"gpus": 1e308}, "got 1e+308"),
        ({"gpus": "9" * 5000}, "(5000 characters)"),
        ({"gpus": 0, "gpu_type": ["x"]}, "'gpu_type' must be a GPU type name"),
        ({"gpus": 0, "gpu_type": "A100-80GB"}, "'gpu_type' is for GPU servers: ask for 1 or more GPUs"),
        ({"gpus": 1, "gpu_type": "A" * 100_000}, "(100000 characters)"),
        ({f"k{i}": 1 for i in range(10_000)}, "and 9995 more. Allowed: profile"),
        ({"profile": "x" * 10_000_000}, "(10000000 characters)"),
    ],
)
def test_invalid(options, message):
    with pytest.raises(RequestError) as e:
        parse(options, CATALOG, TYPES)
    assert message in str(e.value)


def test_no_gpus_on_hub():
    with pytest.raises(RequestError, match="This hub has no GPUs right now; ask for 0 GPUs"):
        parse({"gpus": 1}, CATALOG, [])
    assert parse({"gpus": 0}, CATALOG, []).gpus == 0


def test_max_per_server_is_configurable():
    with pytest.raises(RequestError, match="from 0 to 2"):
        parse({"gpus": 3}, CATALOG, TYPES, max_per_server=2)


def test_extra_keys_validated_by_features():
    def boolean(v):
        if v in (True, False, "on"):
            return v in (True, "on")
        raise RequestError("'queue' must be true or false")

    req = parse({"queue": "on"}, CATALOG, TYPES, extra_keys={"queue": boolean})
    assert req.extra("queue") is True
    with pytest.raises(RequestError, match="'queue' must be"):
        parse({"queue": "maybe"}, CATALOG, TYPES, extra_keys={"queue": boolean})


def test_from_form():
    assert from_form({"profile": ["small"], "gpus": ["2"], "gpu_type": [""], "_xsrf": ["x"]}) == {
        "profile": "small", "gpus": "2"}
    # the form's type select keeps its value when 0 GPUs are picked: it means nothing there
    assert from_form({"gpus": ["0"], "gpu_type": ["A100-80GB"]}) == {"gpus": "0"}


def test_messages_are_bounded():
    """A 10 MB value never makes a 10 MB message."""
    for options in ({"profile": "x" * 10_000_000}, {"x" * 1_000_000: 1}, {"gpus": 1, "gpu_type": "é" * 10**6}):
        with pytest.raises(RequestError) as e:
            parse(options, CATALOG, TYPES)
        assert len(str(e.value)) < 400


@pytest.mark.parametrize(
    "value, seconds",
    [("2h", 7200), ("90m", 5400), ("1h30m", 5400), (7200, 7200), ("600", 600), ("", None), (None, None)],
)
def test_runtime(value, seconds):
    from hub_plugins.spawn.request import parse_runtime

    assert parse_runtime(value) == seconds


@pytest.mark.parametrize("value", ["1m", "31d", "2 hours", -5, True, "h", [1], float("nan"), float("inf"),
                                   -float("inf"), 1e308, "9" * 5000, pytest.param(10**5000, id="int5000digits"), "\u0661\u0662h", "7200.5", 7200.5,
                                   "99999999h", {"h": 1}])
def test_bad_runtime(value):
    from hub_plugins.spawn.request import parse_runtime

    with pytest.raises(RequestError, match="'runtime' must be a duration"):
        parse_runtime(value)


@pytest.mark.parametrize("value, flag", [(True, True), ("on", True), ("false", False), (False, False)])
def test_queue_flag(value, flag):
    from hub_plugins.spawn.request import parse_flag

    assert parse_flag(value) is flag


@pytest.mark.parametrize("value", [1, "maybe", None, [True], float("nan")])
def test_bad_queue_flag(value):
    from hub_plugins.spawn.request import parse_flag

    with pytest.raises(RequestError, match="'queue' must be true or false"):
        parse_flag(value)


@pytest.mark.parametrize("value", ["", "A", "-x", "x" * 64, "\u0661", 3, None, ["x"]])
def test_bad_project(value):
    from hub_plugins.spawn.request import parse_project

    with pytest.raises(RequestError, match="'project' must"):
        parse_project(value)
