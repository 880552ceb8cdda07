"""The pages in a real browser (headless Chromium): every image loads, the console stays clean,
nothing overflows a narrow window. Screenshots go to RLAE_SCREENSHOTS (default: a temporary folder).

Needs selenium and Debian's ``chromium`` and ``chromium-driver``: skipped with the reason without them, failed
instead under ``RLAE_SC_REQUIRE_BROWSER`` (set by ``.ci/run`` where it can install them)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_BROWSER, unavailable

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
except ImportError:
    webdriver = None


def missing() -> str | None:
    """Why the browser cannot be started here (None: it can)."""
    if webdriver is None:
        return "selenium is not installed"
    if not (CHROMIUM and CHROMEDRIVER):
        return "needs Debian's chromium and chromium-driver (.ci/run installs them)"
    return None


@pytest.fixture(scope="session", autouse=True)
def browser_available():
    """Skip or fail (``RLAE_SC_REQUIRE_BROWSER``) this file's tests when the browser is missing, before the
    session's workflow run that they would render is made for them (session scope: set up before it)."""
    reason = missing()
    if reason:
        unavailable(reason, REQUIRE_BROWSER)


@pytest.fixture(scope="module")
def results(workflow_run):
    """The pages of the ``.test`` workflow's results (conftest's ``workflow_run``): the index, a dataset's report
    and a query's mapping report, as ``make run`` writes them."""
    return workflow_run[0] / "results"


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    path = Path(os.environ.get("RLAE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("page", ["index.html", "tiny/report.html", "mapping/tiny_again/report.html"])
@pytest.mark.parametrize("width", [1200, 380])
def test_page_renders(results, browser, shots, page, width):
    browser.set_window_size(width, 900)
    browser.get((results / page).as_uri())
    browser.get_log("browser")  # clear
    browser.refresh()
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])"
    )
    assert images, "no images on the page"
    assert all(ok for _, ok in images), [alt for alt, ok in images if not ok]
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"page wider than a {width}px window by {overflow}px"
    browser.save_screenshot(str(shots / f"{page.replace('/', '_')}_{width}.png"))
