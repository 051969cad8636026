"""The shipped Grafana dashboard only uses metrics the billing service exports."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dashboard_metrics_exist():
    dash = json.loads((ROOT / "config" / "grafana" / "gpulab-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"gpulab_[a-z_]+", e)}
    source = (ROOT / "services" / "billing" / "metrics.py").read_text()
    exported = set(re.findall(r'"(gpulab_[a-z_]+)"', source))
    # counters gain _total, histograms _bucket in the exposition format
    names = exported | {n + "_total" for n in exported} | {n + "_bucket" for n in exported}
    assert used and used <= names, used - names
