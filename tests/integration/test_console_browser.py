"""The operator's console in a real headless browser: Debian's ``chromium`` driven through
``chromium-driver`` (WebDriver, with the selenium client; nothing is downloaded).

- the live page of a running daemon (console started by ``console.listen``) shows a new verdict
  without a reload (server-sent events);
- a review post without a login is refused; signed in, a review is posted and shows in history;
- a source name and a note made of HTML render as text, no script runs;
- pictures outside the configured folders are refused.

``INSPECTOR_CONSOLE_SCREENSHOTS=DIR`` also saves the live, detail and yield pages there (the
README's docs/console/*.png are made so). Skipped only when chromium or chromium-driver is missing
(``apt-get install -y chromium chromium-driver``).
"""
from __future__ import annotations

import os
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="needs apt-get install -y chromium chromium-driver")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from inspector.console.auth import hash_password  # noqa: E402

PASSWORD = "line-3-reviewer"
XSS = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
SHOTS = os.environ.get("INSPECTOR_CONSOLE_SCREENSHOTS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, alive=lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert alive(), "the server process ended"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")


@pytest.fixture
def browser(tmp_path):
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must never fetch a driver or browser
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(options=opts, service=Service(DRIVER))
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def fetch_status(drv, url: str, method: str = "GET", body: str = "") -> int:
    """Status of a request made by the page itself (its cookies, its origin)."""
    return drv.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "var init = {method: arguments[1], credentials: 'same-origin'};"
        "if (arguments[1] === 'POST') { init.body = arguments[2];"
        "  init.headers = {'Content-Type': 'application/x-www-form-urlencoded'}; }"
        "fetch(arguments[0], init).then(function (r) { done(r.status); }, function (e) { done(String(e)); });",
        url, method, body)


def shot(drv, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        height = drv.execute_script("return document.documentElement.scrollHeight")
        drv.set_window_size(1280, max(700, min(int(height) + 40, 1800)))
        drv.save_screenshot(str(Path(SHOTS) / f"{name}.png"))
        drv.set_window_size(1280, 1000)


def test_live_page_review_and_refusals_against_a_running_daemon(tmp_path, bundle_dir, part_images, browser):
    from tests.integration.daemon_helpers import Daemon, drop_image, make_workspace, row_count

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ws = make_workspace(tmp_path / "ws", bundle_dir, extra={"console": {
        "listen": f"127.0.0.1:{port}", "poll_seconds": 0.3,
        "users": [{"name": "ann", "password_hash": hash_password(PASSWORD)}]}})
    daemon = Daemon(ws).start()
    try:
        daemon.wait_ready(120)
        drop_image(ws.inbox, "good-1.png", part_images())
        deadline = time.monotonic() + 60
        while row_count(ws.db) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        wait_http(base + "/", alive=daemon.alive)
        browser.get(base + "/")
        assert browser.find_elements(By.CSS_SELECTOR, '#cards .card[data-id="1"]')
        browser.execute_script("window.notReloaded = true;")

        # a new verdict arrives while the page is open: it appears without a reload
        drop_image(ws.inbox, "bad-1.png", part_images("missing_hole"))
        WebDriverWait(browser, 60, 0.2).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, '#cards .card[data-id="2"]'))
        assert browser.execute_script("return window.notReloaded === true")
        # the daemon writes its status file every 2 s: once there, no banner
        WebDriverWait(browser, 20, 0.2).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#banner .banner"))
        card = browser.find_element(By.CSS_SELECTOR, '#cards .card[data-id="2"]')
        verdict = card.get_attribute("class").split()[1]
        assert verdict in ("pass", "fail")
        WebDriverWait(browser, 10).until(lambda d: d.execute_script(
            "var i = document.querySelector('#cards .card[data-id=\"2\"] img');"
            "return !i || (i.complete && i.naturalWidth > 0)"))
        shot(browser, "live")

        # not signed in: the review post is refused, and so are pictures outside the folders
        assert fetch_status(browser, "/inspection/2/review", "POST", "kind=false_reject") == 403
        assert fetch_status(browser, "/media/frame/..%2F..%2F..%2Fetc%2Fpasswd") == 404
        assert fetch_status(browser, "/media/heatmap/1") == 404  # a pass has no heatmap
        assert fetch_status(browser, "/static/..%2F..%2Fconsole%2Fapp.py") == 404

        # sign in and review the second part
        browser.get(base + "/login?next=/inspection/2")
        browser.find_element(By.ID, "login-name").send_keys("ann")
        browser.find_element(By.ID, "login-password").send_keys(PASSWORD)
        browser.find_element(By.ID, "login-submit").click()
        WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.ID, "review-form"))
        kind = "false_reject" if verdict == "fail" else "missed_defect"
        browser.find_element(By.CSS_SELECTOR, f'input[name="kind"][value="{kind}"]').click()
        browser.find_element(By.ID, "defect-type").send_keys("scratch")
        browser.find_element(By.ID, "note").send_keys(XSS)
        browser.find_element(By.ID, "review-submit").click()
        WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.ID, "review-list"))
        note = browser.find_element(By.CSS_SELECTOR, "#review-list .note")
        assert note.text == XSS and browser.execute_script("return window.pwned === undefined")
        shot(browser, "detail")

        browser.get(base + "/history")
        cell = browser.find_element(By.CSS_SELECTOR, '#history tr[data-id="2"] td.review')
        label = "false reject" if kind == "false_reject" else "missed defect (escape)"
        assert cell.text == f"{label} (scratch) by ann"
        browser.get(base + "/yield?since=1d")
        assert browser.find_elements(By.CSS_SELECTOR, ".charts svg")
        WebDriverWait(browser, 10).until(lambda d: d.execute_script(
            "var i = document.getElementById('density'); return i.complete && i.naturalWidth > 0"))
        shot(browser, "yield")
        # an open event stream does not hold the daemon's shutdown
        browser.get(base + "/")
        time.sleep(1.0)
        t = time.monotonic()
        assert daemon.terminate() == 0
        assert time.monotonic() - t < 20
    finally:
        daemon.stop()


def test_html_in_a_source_name_renders_as_text(tmp_path, browser):
    from inspector.console.app import create_app
    from inspector.console.config import ConsoleConfig
    from inspector.console.server import ConsoleThread, build_console
    from inspector.storage import ResultStore
    from tests.db_fixtures import make_verdict

    url = f"sqlite:///{tmp_path / 'r.db'}"
    with ResultStore(url) as store:
        store.ensure_schema()
        store.record(make_verdict(kind="fail", source=XSS, name=XSS, regions=((1, 1, 4, 4, 16, 0.9),)),
                     frame_key="x", heatmap_path=None)
    port = free_port()
    server = ConsoleThread(create_app(build_console(url, ConsoleConfig(), media_roots=[tmp_path / "none"]),
                                      f"127.0.0.1:{port}"),
                           f"127.0.0.1:{port}")
    server.start()
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        for path, css in (("/", "#cards .card .source"), ("/history", "#history td.source"),
                          ("/inspection/1", "h1 .source")):
            browser.get(f"http://127.0.0.1:{port}{path}")
            # read in one script: the live page replaces its cards when its event stream first answers
            text = WebDriverWait(browser, 10).until(lambda d: d.execute_script(
                "var e = document.querySelector(arguments[0]); return e && e.textContent.trim();", css))
            assert text == XSS, path
            assert browser.execute_script("return window.pwned === undefined"), path
            assert not browser.find_elements(By.CSS_SELECTOR, 'img[src="x"]'), path
    finally:
        server.stop()
