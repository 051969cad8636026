"""The browser tests' Chromium (one per test module) and a loopback-only network for it."""

from __future__ import annotations

import os

import pytest

from tests.conftest import require
from tests.support.browser import CHROMIUM, FLAGS, SHOTS


@pytest.fixture(scope="module")
def browser():
    require(CHROMIUM is not None, "Chromium (Debian package chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "Playwright for Python (pip: playwright)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(autouse=True, scope="module")
def _no_proxy_env():
    # a proxy setting in the environment would send the browser's loopback traffic elsewhere
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.lower() in ("http_proxy", "https_proxy")}
    yield
    os.environ.update(saved)
