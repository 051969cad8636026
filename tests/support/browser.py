"""What the browser tests share: Debian's Chromium as Playwright drives it, a page of the usual
size, screenshots into docs/screenshots/, and signing up and in on a hub's own pages."""

from __future__ import annotations

import shutil

from tests.support.hubproc import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = ROOT / "docs" / "screenshots"
PASSWORD = "correct-horse-battery"
# per shared/recipes/browser.md: no background traffic on a closed network
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def new_page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    ctx.set_default_timeout(30_000)
    return ctx.new_page()


def shot(page, name: str, full_page: bool = False) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


def sign_up(page, hub, name):
    page.goto(f"{hub.url}/hub/signup")
    page.fill("#username_input", name)
    if page.locator("#email_input").count():
        page.fill("#email_input", f"{name}@lab.example")
    page.fill("#password_input", PASSWORD)
    page.fill("#password_confirmation_input", PASSWORD)
    page.click("#signup_submit")
    page.wait_for_load_state()


def sign_in(page, hub, name, screenshot=None):
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", name)
    page.fill("#password_input", PASSWORD)
    if screenshot:
        shot(page, screenshot)
    page.click("#login_submit")
    page.wait_for_load_state()
