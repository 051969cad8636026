"""Shared fixtures: real hubs, a real PostgreSQL, system users cleaned up after the run.

Parts that need a system component (PostgreSQL, Docker, SLURM, Chromium, slapd) are skipped with
a reason when it is missing, unless ``GPULAB_REQUIRE_ALL=1`` (set by ``.ci/run``), where a
missing component fails the run instead: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.hubproc import Hub  # noqa: E402
from tests.support.inprocess import InProcessHub  # noqa: E402
from tests.support.pgserver import PGServer, pg_bindir  # noqa: E402


def require(ok: bool, what: str) -> None:
    """Skip (locally) or fail (CI) when a real component the test needs is missing."""
    if ok:
        return
    if os.environ.get("GPULAB_REQUIRE_ALL") == "1":
        pytest.fail(f"{what} is required in CI but missing")
    pytest.skip(f"{what} is missing (install it, or run .ci/run)")


@pytest.fixture(scope="session")
def local_backend():
    """System-user settings for hubs in this run: a unique prefix and a home root every user can
    reach, so that running as root (CI) creates throwaway accounts we can remove afterwards."""
    prefix = f"gt{secrets.token_hex(2)}-"
    home_root = tempfile.mkdtemp(prefix="gpulab-homes-", dir="/tmp")
    os.chmod(home_root, 0o755)
    yield {"system_user_prefix": prefix, "home_root": home_root}
    if os.geteuid() == 0:
        for pw in pwd.getpwall():
            if pw.pw_name.startswith(prefix):
                subprocess.run(["userdel", "-r", pw.pw_name], capture_output=True)
    subprocess.run(["rm", "-rf", home_root])


@pytest.fixture(scope="session")
def pg():
    require(pg_bindir() is not None, "PostgreSQL (Debian package postgresql)")
    server = PGServer().start()
    yield server
    server.stop()


@pytest.fixture
def hub_factory(tmp_path_factory, local_backend):
    """Start real hubs; every hub is stopped (with its servers) when the test ends."""
    hubs: list[Hub] = []

    def make(start: bool = True, **kw) -> Hub:
        kw.setdefault("local", dict(local_backend))
        hub = Hub(tmp_path_factory.mktemp("hub"), **kw)
        hubs.append(hub)
        if start:
            hub.start()
        return hub

    yield make
    for hub in hubs:
        hub.close()


@pytest.fixture(scope="module")
def module_hub_factory(tmp_path_factory, local_backend):
    hubs: list[Hub] = []

    def make(**kw) -> Hub:
        kw.setdefault("local", dict(local_backend))
        hub = Hub(tmp_path_factory.mktemp("hub"), **kw).start()
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.close()


@pytest.fixture
async def inprocess_hub(hub_app, tmp_path_factory, local_backend):
    """One hub in the test process (``tests/support/inprocess.py``): pytest-jupyterhub's
    ``hub_app`` (a ``MockHub``) with gpulab's config; for an ``async`` test that needs no restart
    or kill. Its servers are stopped, and the hub with its proxy and services, when the test ends."""
    hubs: list[InProcessHub] = []

    async def make(config: dict | None = None, before_start=None, **kw) -> InProcessHub:
        """``kw`` as for ``Hub``; ``config``: traitlets settings on top (as ``--Class.trait=`` would);
        ``before_start(hub)``: what a test does to its directory before the hub starts."""
        assert not hubs, "one in-process hub per test (MockHub is a singleton)"
        kw.setdefault("local", dict(local_backend))
        hub = InProcessHub(tmp_path_factory.mktemp("hub"), **kw)
        hubs.append(hub)
        if before_start is not None:
            before_start(hub)
        return await hub.start_in(hub_app, config)

    yield make
    for hub in hubs:
        await hub.aclose()


def pytest_collection_modifyitems(session, config, items):
    """Tests on the profiles' real environments run last, so that their builds (started in the
    background by .ci/run) overlap the rest of the suite; their order among themselves is kept."""
    items.sort(key=lambda item: item.get_closest_marker("envs") is not None)
