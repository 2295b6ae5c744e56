"""The review app's main path in a real Chromium (Debian's package, driven by Playwright).

Chromium is installed by .ci/install-browser (called from .ci/run and the README), never from pytest.
With CI=true a missing browser fails this test; elsewhere it skips.
"""

from __future__ import annotations

import csv
import io
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # works under any --import-mode
from conftest_review import PASSWORDS, make_env

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"


def _need_browser() -> None:
    if not CHROMIUM.exists():
        msg = "/usr/bin/chromium is missing: run `bash .ci/install-browser`"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    import uvicorn

    from tradesentry.review.app import create_app

    env = make_env(tmp_path)
    app = create_app(env.settings)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 15
    while not srv.started:
        if time.monotonic() > deadline or not t.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", env
    srv.should_exit = True
    t.join(timeout=10)


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_main_path_in_chromium(server):
    _need_browser()
    from playwright.sync_api import expect, sync_playwright

    base, _env = server
    SHOTS.mkdir(parents=True, exist_ok=True)
    dialogs: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            ctx = browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
            page = ctx.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.set_default_timeout(15000)

            # log in (the queue redirects to the login form)
            page.goto(base + "/")
            expect(page).to_have_url(f"{base}/login?next=%2F")
            page.fill("input[name=username]", "ana_xa")
            page.fill("input[name=password]", PASSWORDS["ana_xa"])
            page.click("button[type=submit]")
            expect(page.locator("#queue")).to_be_visible()

            # filter: only open anomalies of kind unit value low, country XA
            page.select_option("#f-country", "XA")
            page.select_option("#f-status", "open")
            page.click("#apply-filters")
            expect(page).to_have_url(re.compile(r".*country=XA.*status=open"))
            rows = page.locator("#queue tbody tr")
            assert rows.count() > 0
            # an analyst of XA sees only anomalies involving XA; the hostile name is shown as text
            assert "<script>alert(1)</script>" in page.locator("#queue").inner_text()
            page.screenshot(path=str(SHOTS / "queue.png"), full_page=False)

            # keyboard triage in the queue: select the first row, confirm, undo
            page.keyboard.press("j")
            first = rows.nth(0)
            expect(first).to_have_class(re.compile(r"\bcur\b"))
            page.keyboard.press("c")
            expect(first.locator(".status-cell")).to_contain_text("Confirmed")
            page.keyboard.press("u")
            expect(first.locator(".status-cell")).to_contain_text("New")

            # open the first anomaly: reasons, both charts, mirror declaration
            first.locator("a.open-link").click()
            expect(page.locator("h2", has_text="Why it was flagged")).to_be_visible()
            assert page.locator("svg.chart").count() == 2
            expect(page.locator("svg.chart .marker-dot").first).to_be_visible()
            page.screenshot(path=str(SHOTS / "detail.png"), full_page=True)

            # decide with the keyboard, then undo
            page.keyboard.press("c")
            expect(page.locator(".flash")).to_have_text("Decision saved.")
            expect(page.locator(".head-status")).to_contain_text("Confirmed")
            page.keyboard.press("u")
            expect(page.locator(".flash")).to_have_text("Last change undone.")
            expect(page.locator(".head-status")).to_contain_text("New")
            expect(page.locator("#events li")).to_have_count(4)  # 2 from the queue, 2 here
            page.screenshot(path=str(SHOTS / "detail-after-undo.png"), full_page=False)

            # back to the queue and export the filtered queue
            page.click("a.crumb")
            expect(page.locator("#queue")).to_be_visible()
            with page.expect_download() as dl:
                page.click("#export-queue")
            text = Path(dl.value.path()).read_text(encoding="utf-8")
            table = list(csv.DictReader(io.StringIO(text)))
            assert table and all("XA" in r["countries"].split() for r in table)
            assert len(table) == rows.count() or len(table) > rows.count()
            # a consignment-level anomaly: the mirror declarations with their differences highlighted
            page.goto(base + "/?kind=mirror_value_gap&night=all")
            page.locator("#queue a.open-link").first.click()
            expect(page.locator("#compare tr.diff").first).to_be_visible()
            page.screenshot(path=str(SHOTS / "detail-mirror.png"), full_page=False)
            assert dialogs == [], f"a script ran: {dialogs}"
        finally:
            browser.close()
