"""In a real browser: Stop on the progress page of a request waiting in the queue."""

from __future__ import annotations

import re
import time

import pytest

from tests.support.browser import new_page, shot, sign_in, sign_up
from tests.support.polling import gpulab_rows, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.hub]


def test_stop_on_the_progress_page_cancels_a_queued_request(browser, hub_factory):
    """Issue 12: Stop on the progress page of a request waiting in the queue cancels it and
    leaves no queue entry; it does not start later when the GPU frees up. On a named server's
    page it stops that server, not the person's default one (JupyterHub's button would)."""
    h = hub_factory(inventory="1xA100-80GB", quotas={"default": {"max_gpus": 1, "max_servers": 2}})
    h.create_users("holder")
    h.start_server("holder", {"gpus": 1})
    page = new_page(browser)
    sign_up(page, h, "admin")
    sign_in(page, h, "admin")
    page.wait_for_selector("#gpulab-form")
    page.check("#profile-minimal")
    assert page.is_checked("#gpulab-queue")  # the queue box is on by default
    page.click("label[for=gpus-1]")
    assert "Busy now, you would wait in the queue" in page.inner_text("#gpulab-count-why")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(r"/hub/spawn-pending/admin"))
    page.wait_for_function("document.getElementById('progress-message').textContent.includes('Queue position 1 of 1')",
                           timeout=60_000)
    assert [r["user_name"] for r in gpulab_rows(h, "gpulab_queue", order_by="created_at")] == ["admin"]
    shot(page, "queued")
    page.click("#stop-server-btn")
    h.wait_gone("admin")
    wait_for(lambda: gpulab_rows(h, "gpulab_queue", order_by="created_at") == [], what="the queue entry to go")

    # a named server queued beside a running default one: Stop on its page stops it alone
    h.start_server("admin", {"gpus": 0})
    assert h.spawn("admin", {"gpus": 1, "queue": True}, server="big")[0] == 202
    wait_for(lambda: [r["server_name"] for r in gpulab_rows(h, "gpulab_queue", order_by="created_at")] == ["big"],
             what="big queued")
    page.goto(f"{h.url}/hub/spawn-pending/admin/big")
    page.wait_for_function("document.getElementById('progress-message').textContent.includes('Queue position')",
                           timeout=60_000)
    page.click("#stop-server-btn")
    h.wait_gone("admin", "big")
    wait_for(lambda: gpulab_rows(h, "gpulab_queue", order_by="created_at") == [], what="big's queue entry to go")
    assert h.server_model("admin")["ready"]  # the default server runs on

    h.stop_server("holder")  # the GPU frees up: the cancelled requests do not take it
    time.sleep(2)
    assert [a["user_name"] for a in h.allocations()] == [] and h.server_model("admin", "big") is None
