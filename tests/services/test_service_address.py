"""Where a service listens: its URL's host, or GPULAB_SERVICE_BIND where the URL names an address
the process cannot bind (the hub's Service on Kubernetes)."""

import socket

from services.base import service_address


def test_the_url_host_by_default(monkeypatch):
    monkeypatch.delenv("GPULAB_SERVICE_BIND", raising=False)
    monkeypatch.setenv("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101")
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/services/billing/")
    assert service_address() == ("127.0.0.1", 10101, "/services/billing/")


def test_bind_override_for_kubernetes(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_SERVICE_URL", "http://hub:10101")
    monkeypatch.setenv("GPULAB_SERVICE_BIND", "0.0.0.0")
    host, port, _ = service_address()
    assert (host, port) == ("0.0.0.0", 10101)
    with socket.socket() as s:  # an address a process can really listen on
        s.bind((host, 0))
