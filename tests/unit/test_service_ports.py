"""The ports the hub picks for its services at start never land on a port gpulab.yaml names: the
proxy's API and the hub's own are bound only after the pick, so the kernel may offer them."""

from pathlib import Path

import pytest
import yaml

from hub_plugins.settings import services
from hub_plugins.settings.loader import load

ROOT = Path(__file__).resolve().parents[2]


def config(tmp_path, **sections):
    p = tmp_path / "gpulab.yaml"
    p.write_text(yaml.safe_dump({"profiles_dir": str(ROOT / "profiles"), **sections}))
    return load(p)


@pytest.mark.parametrize("sections, ports", [
    ({}, {8000, 8081, 8001, 10101}),
    ({"hub": {"bind_url": "http://127.0.0.1:41000/lab/", "hub_bind_url": "http://127.0.0.1:41001",
              "proxy_api_url": "http://127.0.0.1:41002"}, "billing": {"port": 41003}},
     {41000, 41001, 41002, 41003}),
    ({"services": {"quotas": {"url": "http://127.0.0.1:41004"}}, "mlflow": {"port": 41005}},
     {8000, 8081, 8001, 10101, 41004, 41005}),
    ({"hub": {"bind_url": "https://hub.example.org"}}, {8081, 8001, 10101}),  # no port named
])
def test_configured_ports(tmp_path, sections, ports):
    assert services.configured_ports(config(tmp_path, **sections)) == ports


def test_services_never_get_a_configured_port(tmp_path, monkeypatch):
    """The kernel offers the proxy's API port first, then the quotas service's new port again,
    then a fresh one: the quotas service and MLflow each get a port of their own."""
    cfg = config(tmp_path, hub={"proxy_api_url": "http://127.0.0.1:41002"}, mlflow={"enabled": True})
    offers = iter([41002, 41010, 41002, 41010, 41011])
    monkeypatch.setattr(services, "random_port", lambda: next(offers))
    rt = services.Runtime.new(cfg)
    assert rt.quotas_url == "http://127.0.0.1:41010"
    assert rt.mlflow_port == 41011
