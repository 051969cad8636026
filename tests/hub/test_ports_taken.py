"""The hub's ports checked before it starts (``settings/ports.py``), on a real hub: a port another
program holds stops it with a message that names the port, its gpulab.yaml key and the holder,
before it listens on anything and without touching what holds the port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tests.support.hubproc import ROOT, VENV_BIN
from tests.support.procs import environ


def _start(hub) -> subprocess.CompletedProcess:
    hub.write_config()
    return subprocess.run([str(VENV_BIN / "jupyterhub"), "-f", str(ROOT / "config" / "jupyterhub_config.py")],
                          cwd=hub.dir, env=dict(os.environ, GPULAB_CONFIG=str(hub.config_path)),
                          capture_output=True, text=True, timeout=120)


def test_a_second_install_on_the_same_ports_is_refused_and_the_first_runs_on(hub_factory):
    """Another install (its own state directory) with the running hub's ports: refused before it
    listens on anything, naming each port, its gpulab.yaml key and the program holding it. Before,
    it got past the state lock and ended in JupyterHub's traceback: the running hub's proxy
    answered its API with 403 Forbidden."""
    hub = hub_factory()
    proxy = int((hub.state_dir / "jupyterhub-proxy.pid").read_text())
    other = hub_factory(start=False)
    other.config["hub"].update({k: hub.config["hub"][k] for k in ("bind_url", "hub_bind_url", "proxy_api_url")})
    second = _start(other)
    assert second.returncode == 2, second.stderr[-2000:]
    for port, key, pid in ((hub.hub_port, "hub.hub_bind_url", hub.proc.pid), (hub.port, "hub.bind_url", proxy),
                           (hub.proxy_port, "hub.proxy_api_url", proxy)):
        said = f"port {port} ({key}: {hub.config['hub'][key[4:]]}) is in use by pid {pid} ("
        assert said in second.stderr, second.stderr[-2000:]
    assert "Traceback" not in second.stderr
    assert not (other.state_dir / "jupyterhub-proxy.pid").exists()  # it started no proxy
    assert not (other.state_dir / "jupyterhub.pid").exists()
    assert environ(proxy) is not None and hub.api("GET", "/")[0] == 200  # the first runs on


def test_a_program_on_a_services_port_keeps_the_hub_from_starting(hub_factory):
    """The billing service's port held by another program: before, the service exited with a
    traceback ("Address already in use") and JupyterHub with it ("Service billing exited")."""
    hub = hub_factory(start=False)
    port = hub.config["billing"]["port"]
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", port))
        other.listen()
        run = _start(hub)
    assert run.returncode == 2, run.stderr[-2000:]
    assert (f"port {port} (billing.port: http://127.0.0.1:{port}) is in use by pid {os.getpid()} ("
            in run.stderr), run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert not (hub.state_dir / "jupyterhub-proxy.pid").exists()  # nothing was started
    hub.start()  # the port free again: it starts
    assert hub.api("GET", "/")[0] == 200
    hub.wait_service("billing")


def test_a_proxy_pid_file_naming_another_program_leaves_that_program_alone(hub_factory):
    """After a reboot the state's proxy pid file may name a pid that another program now has.
    JupyterHub stops whatever the file names (SIGTERM, then SIGKILL); gpulab removes the file first."""
    hub = hub_factory(start=False)
    hub.state_dir.mkdir(parents=True)
    bystander = subprocess.Popen(["sleep", "120"])
    try:
        (hub.state_dir / "jupyterhub-proxy.pid").write_text(str(bystander.pid))
        hub.start()
        assert hub.api("GET", "/")[0] == 200
        assert bystander.poll() is None  # stock JupyterHub: killed as the "proxy still running"
        assert f"names pid {bystander.pid}, which now runs another program (sleep 120)" in hub.log_path.read_text()
    finally:
        bystander.kill()
        bystander.wait()


def test_a_service_pid_file_naming_another_program_on_its_port_is_no_stale_service(hub_factory):
    """The billing service's pid file names a live process that is no lifeline (a pid reused) and
    that holds the service's port: the lifeline would never stop it, so the port counts as taken."""
    hub = hub_factory(start=False)
    port = hub.config["billing"]["port"]
    (hub.state_dir / "services").mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import socket, sys, time\ns = socket.socket()\n"
                               "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                               f"s.bind(('127.0.0.1', {port}))\ns.listen()\nprint('up', flush=True)\ntime.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "up"
        (hub.state_dir / "services" / "billing.pid").write_text(str(holder.pid))
        run = _start(hub)
        assert run.returncode == 2, run.stderr[-2000:]
        assert f"port {port} (billing.port: http://127.0.0.1:{port}) is in use by pid {holder.pid} (" in run.stderr
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait()
