"""Fixtures shared by the lifeline's tests: each server-lifeline case runs against both
lifelines, ``lifeline.py`` and ``lifeline.c`` built from the checkout's source (as ``make
install`` builds it), so that the two keep one behaviour."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from hub_plugins.lifeline import NATIVE
from hub_plugins.reconcile.local import LIFELINE, LIFELINE_C


@pytest.fixture(scope="session")
def compiled_lifeline(tmp_path_factory) -> str:
    """lifeline.c compiled now, warnings as errors (what the Makefile builds, stricter)."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler here: the hub runs lifeline.py")
    out = tmp_path_factory.mktemp("native") / NATIVE
    r = subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out), LIFELINE_C],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return str(out)


@pytest.fixture(params=["lifeline.py", "lifeline.c"])
def lifeline_head(request) -> list[str]:
    """What starts a lifeline: the Python one (as the hub runs it) or the compiled one."""
    if request.param == "lifeline.py":
        return [sys.executable, "-I", "-S", LIFELINE]
    return [request.getfixturevalue("compiled_lifeline")]
