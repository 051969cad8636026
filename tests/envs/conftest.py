"""The profiles' real environments, built once per machine (``GPULAB_TEST_ENVS_DIR``, default
/var/tmp/gpulab-test-envs) by the same builder as ``make envs``. ``.ci/run`` starts these builds
in the background before the suite; the tests that need them run last (``envs`` marker, see
tests/conftest.py) and wait here for the builds, holding each environment's lock in turn."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hub_plugins.envs import install
from hub_plugins.envs.manager import EnvDir
from hub_plugins.spawn.profiles import load_dir
from tests.conftest import require
from tests.support.hubproc import TEST_ENVS_DIR

ROOT = Path(__file__).resolve().parents[2]


def built(name: str):
    """The shipped profile ``name`` with its environment built (or waited for)."""
    profile = load_dir(ROOT / "profiles").get(name)
    if profile.environment.npm:
        lacking = install.missing_build_tools()
        require(not lacking, "the build tools code-server needs: " + " ".join(lacking))
    envdir = EnvDir(TEST_ENVS_DIR)
    st = envdir.ensure(profile.environment, wait=True)
    if st.state != "ready":
        log = Path(envdir.log_file(profile.environment))
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.exists() else ""
        pytest.fail(f"building the {name} environment failed: {st.error}\n{tail}")
    os.chmod(TEST_ENVS_DIR, 0o755)
    report(profile)
    return profile


@pytest.fixture(scope="session")
def pytorch_env():
    return built("pytorch")


@pytest.fixture(scope="session")
def vscode_env():
    return built("vscode")


BUILT: list[str] = []


def report(profile) -> None:
    info = EnvDir(TEST_ENVS_DIR).marker(profile.environment) or {}
    BUILT.append(f"{profile.name}: built {info.get('built', '?')} in {info.get('seconds', 0):.0f} s, "
                 f"{info.get('size', 0) / 1e9:.2f} GB ({EnvDir(TEST_ENVS_DIR).prefix(profile.environment)})")


def pytest_terminal_summary(terminalreporter):
    if BUILT:
        terminalreporter.section("profile environments")
        for line in BUILT:
            terminalreporter.write_line(line)
