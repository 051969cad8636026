"""A real Prometheus (Debian's) scrapes the billing service's metrics through the hub, with a hub
token, while people spawn, queue, get refused and stop; then every PromQL expression of the
shipped Grafana dashboard returns data (finite values)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.conftest import require
from tests.support.hubproc import ROOT, Hub, free_port
from tests.support.polling import wait_for

pytestmark = [pytest.mark.hub, pytest.mark.slow]

PROMETHEUS = shutil.which("prometheus")
DASHBOARD = ROOT / "config" / "grafana" / "gpulab-dashboard.json"


def expressions() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


@pytest.fixture
def hub(tmp_path_factory, local_backend):
    # one whole GPU and one shared by two servers (the dashboard's sharing panels); the culler
    # samples the simulated GPUs every second (the efficiency panel), all busy
    hub = Hub(tmp_path_factory.mktemp("hub"), inventory="2xA100-80GB", local=dict(local_backend),
              quotas={"default": {"max_gpus": 1, "max_servers": 2}},
              extra={"billing": {"rates": {"*": 3.6}}, "gpus": {"sharing": [{"gpus": [1], "shares": 2}]},
                     "culler": {"interval_seconds": 1}})
    hub.state_dir.mkdir(parents=True, exist_ok=True)
    (hub.state_dir / "simulated-gpu-metrics.json").write_text(json.dumps({"*": {"util": 50, "power_w": 200}}))
    hub.start(timeout=240)
    hub.wait_service("billing")
    yield hub
    hub.close()


@pytest.fixture
def prometheus(hub, tmp_path):
    require(PROMETHEUS is not None, "Prometheus (Debian package prometheus)")
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": "gpulab", "metrics_path": "/services/billing/metrics",
            # a hub token with the read:metrics scope (here the tests' admin token), as Bearer
            "authorization": {"credentials": hub.token},
            "static_configs": [{"targets": [f"127.0.0.1:{hub.port}"]}],
        }],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                             "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready():
        try:
            return requests.get(f"{url}/-/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(ready, 60, "Prometheus to start")
        yield url, Path(tmp_path / "prometheus.log")
    finally:
        proc.terminate()
        proc.wait(30)


def query(url: str, expr: str) -> list:
    r = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["data"]["result"]


def test_prometheus_scrapes_and_the_dashboard_has_data(hub, prometheus):
    url, log = prometheus
    wait_for(lambda: query(url, 'up{job="gpulab"}') and query(url, 'up{job="gpulab"}')[0]["value"][1] == "1",
             60, f"Prometheus to scrape the billing service:\n{log.read_text()[-2000:]}")
    hub.create_users("ann", "bob", "cat", "dan")
    hub.start_server("ann", {"gpus": 1, "gpu_type": "A100-80GB"})  # GPU-seconds and cost grow while it runs
    for who in ("cat", "dan"):  # the two shares of GPU 1
        hub.start_server(who, {"gpus": 1, "gpu_type": "A100-80GB:shared"})
    assert hub.spawn("bob", {"gpus": 2})[0] == 403  # a refusal (quota)
    assert hub.spawn("bob", {"gpus": 1, "gpu_type": "A100-80GB", "queue": True})[0] == 202  # waits for ann's GPU
    time.sleep(4)
    hub.stop_server("ann")  # bob's request starts: a queue wait is recorded
    hub.wait_ready("bob", timeout=120)
    time.sleep(6)  # a few more scrapes with all of it in them
    empty, not_finite = [], []
    for expr in expressions():
        result = query(url, expr)
        if not result:
            empty.append(expr)
        elif not all(math.isfinite(float(s["value"][1])) for s in result):
            not_finite.append((expr, result))
    assert not empty and not not_finite, (empty, not_finite)
    # and the values mean what they say
    assert float(query(url, "sum(gpulab_gpus_allocated) / sum(gpulab_gpus_total)")[0]["value"][1]) == 1.0
    assert {s["metric"]["user"] for s in query(url, "gpulab_cost_total")} == {"ann", "bob", "cat", "dan"}
    assert float(query(url, "sum(gpulab_gpu_equivalents_allocated) / sum(gpulab_gpu_equivalents_total)")
                 [0]["value"][1]) == 1.0
    wait = float(query(url, 'histogram_quantile(0.5, sum(rate(gpulab_queue_wait_seconds_bucket[1h])) by (le))')
                 [0]["value"][1])
    assert 0 < wait <= 60
    assert float(query(url, 'gpulab_spawn_refusals_total{reason="quota"}')[0]["value"][1]) == 1
    for who in ("bob", "cat", "dan"):
        hub.stop_server(who)
