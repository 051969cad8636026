"""The spawn form's model (pure): what a person may pick, and why not."""

import datetime as dt
import json
from fractions import Fraction

from hub_plugins.spawn.form import FormContext, form_model, render
from hub_plugins.gpu.availability import availability
from hub_plugins.gpu.simulated import parse_spec
from hub_plugins.spawn.profiles import Catalog, profile_from_dict
from hub_plugins.quota import QuotaConfig, ServerUse, resolve

NOW = dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc)
CATALOG = Catalog([
    profile_from_dict("minimal", {"display_name": "Minimal", "default": True, "gpus": {"counts": [0, 1, 2, 3, 4]},
                                  "resources": {"cpu_limit": 8, "mem_limit": "32G"}}),
    profile_from_dict("staff-only", {"display_name": "Staff", "groups": ["staff"]}),
])
QC = QuotaConfig.from_config({"default": {"max_gpus": 2, "cpu_limit": 4}})
INV = parse_spec("4xA100-80GB, 1xA100-80GB+mig(7*1g.10gb)")


def model(taken=(), usage=(), queue=True):
    avail = availability(INV, {d.key for d in INV.devices if d.index in taken and d.kind == "gpu"})
    return form_model(FormContext(
        catalog=CATALOG, eff=resolve(QC, "ann", [], NOW), usage=list(usage), avail=avail, groups=[],
        prices={"A100-80GB": 2.8, "A100-80GB:1g.10gb": 0.4}, queue_enabled=queue))


def choice(m, profile, gpu_type, count):
    p = next(x for x in m["profiles"] if x["name"] == profile)
    return next(c for c in p["choices"][gpu_type] if c["count"] == count)


def test_counts_limited_by_quota_and_capacity():
    m = model(taken=(0, 1, 2))  # one whole GPU free
    assert choice(m, "minimal", "A100-80GB", 1)["ok"]
    two = choice(m, "minimal", "A100-80GB", 2)
    assert not two["ok"] and two["why"] == "only 1 free" and two["queue_ok"]  # may wait for it
    three = choice(m, "minimal", "A100-80GB", 3)
    assert not three["queue_ok"] and "over your quota (2 GPUs left)" in three["why"]
    # slices: 3 x 1/7 fits the 2-GPU quota
    assert choice(m, "minimal", "A100-80GB:1g.10gb", 3)["ok"]


def test_any_type_follows_the_allocator_rule():
    m = model(taken=(0, 1, 2, 3))  # no whole GPU free, 7 slices free
    p = next(x for x in m["profiles"] if x["name"] == "minimal")
    assert p["any_types"] == ["A100-80GB"]  # unnamed requests get whole GPUs
    one = choice(m, "minimal", "", 1)
    assert not one["ok"] and one["queue_ok"]  # slices are not offered as "any": wait for a GPU


def test_usage_counts_against_quota():
    m = model(usage=[ServerUse("exp1", "minimal", "A100-80GB", 2, Fraction(2))])
    assert not choice(m, "minimal", "A100-80GB", 1)["ok"] and m["quota"]["left_text"] == "0 GPUs"


def test_profiles_groups_caps_and_prices():
    m = model()
    staff = next(x for x in m["profiles"] if x["name"] == "staff-only")
    assert not staff["allowed"] and staff["why_not"] == "not available to your groups"
    minimal = next(x for x in m["profiles"] if x["name"] == "minimal")
    assert minimal["cpu_limit"] == 4 and minimal["mem_limit"] == "32G"  # capped by the quota's 4 CPUs
    assert m["prices"]["per_device_hour"]["A100-80GB"] == 2.8 and m["queue"]["enabled"]


def test_render_escapes_and_embeds_the_model():
    html = render(model())
    assert 'id="gpulab-model"' in html and 'name="queue"' in html and 'name="runtime"' in html
    assert "</script>" not in html.split('id="gpulab-model">')[1].split("</script>")[0]


def test_shares_in_the_form():
    """A shared GPU in the form: its shares counted against the quota in fractions, offered only
    as many as fit on one GPU, and said what one is."""
    inv = parse_spec("1xH200-141GB+shared(4), 1xH200-141GB")
    taken = {"localhost/gpu0/share0"}
    m = form_model(FormContext(catalog=CATALOG, eff=resolve(QC, "ann", [], NOW), usage=[],
                               avail=availability(inv, taken), groups=[], prices={"H200-141GB:shared": 1.0}))
    assert choice(m, "minimal", "H200-141GB:shared", 3)["ok"]  # 3 free shares on GPU 0, 3/4 of a GPU
    four = choice(m, "minimal", "H200-141GB:shared", 4)
    assert not four["ok"] and four["why"] == "only 3 free"
    html = render(m)
    assert "1/4 of an H200: up to 35 GB, compute shared with 3 others" in html
    assert "H200-141GB:shared (3 of 4 free): 1/4 of an H200" in html  # the type selector says it too


def test_a_links_choice_prefills_the_form():
    """JupyterHub 6 spawn links (?opt-profile=...&opt-gpus=...): the form shows their choice,
    only for the keys a request has, clipped."""
    ctx = FormContext(catalog=CATALOG, eff=resolve(QC, "ann", [], NOW), usage=[], avail=availability(INV, set()),
                      groups=[], prefill={"profile": "minimal", "gpus": "2", "queue": "true", "token": "x",
                                          "gpu_type": "A" * 500})
    m = form_model(ctx)
    assert m["prefill"] == {"profile": "minimal", "gpus": "2", "queue": "true", "gpu_type": "A" * 64}
    html = render(m)
    assert "applyPrefill" in html and 'id="gpulab-link-url"' in html
    # a typed (refused) choice shown again never becomes markup inside the page's <script>
    ctx.prefill = {"gpu_type": '<script>"x</script><!--'}
    html = render(form_model(ctx))
    embedded = html.split('id="gpulab-model">')[1].split("</script>")[0]
    assert "<" not in embedded and ">" not in embedded
    assert json.loads(embedded)["prefill"]["gpu_type"] == '<script>"x</script><!--'
    # the count-selector's words: a count one may queue for is not "unavailable"
    assert "Busy now, you would wait in the queue for" in html and "(you will queue)" not in html


def test_borrowing_box_and_counts_beyond_quota():
    full = [ServerUse("", "minimal", "A100-80GB", 2, Fraction(2))]
    avail = availability(INV, {d.key for d in INV.devices if d.index == 0 and d.kind == "gpu"})  # 3 free
    borrow = {"rate_factor": 0.5, "grace_minutes": 5, "note": "may be stopped"}
    m = form_model(FormContext(
        catalog=CATALOG, eff=resolve(QC, "ann", [], NOW), usage=full, avail=avail, groups=["borrowers"],
        queue_enabled=True, borrowing=borrow, borrowed=[ServerUse("b1", "minimal", "A100-80GB", 1, Fraction(1))]))
    one, four = choice(m, "minimal", "A100-80GB", 1), choice(m, "minimal", "A100-80GB", 4)
    assert not one["ok"] and one["borrow_ok"]  # over quota, but free: may be borrowed
    assert not four["borrow_ok"] and four["borrow_queue_ok"]  # 3 free: a borrower would wait
    assert m["borrow"] == borrow and m["quota"]["borrowed"] == [{"name": "b1", "gpus": "1 GPU"}]
    html = render(m)
    assert 'name="preemptible"' in html and "may be stopped when others need the GPUs" in html
    assert "50% of the price" in html and "Borrowed beyond quota (may be reclaimed): b1 (1 GPU)" in html
    assert 'name="preemptible"' not in render(model())  # only for those who may borrow
