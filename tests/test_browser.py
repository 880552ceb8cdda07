"""The pages in a real browser (headless Chromium): every image loads, the console stays clean,
nothing overflows a narrow window. Screenshots go to RLAE_SCREENSHOTS (default: a temporary folder)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rlae_sc.report import write_index
from tests.conftest import rlae_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver (.ci/run installs them)"
)


@pytest.fixture(scope="module")
def results(small_counts_file, tmp_path_factory):
    res = tmp_path_factory.mktemp("results")
    rlae_cli(
        "run",
        str(small_counts_file),
        "--out",
        str(res / "small"),
        "--label-key",
        "cell_type",
        "--n-components",
        "8",
        "--min-genes",
        "50",
        "--n-top-genes",
        "200",
    )
    rlae_cli(
        "map",
        str(small_counts_file),
        "--model",
        str(res / "small" / "model.npz"),
        "--reference",
        str(res / "small" / "embedding.h5ad"),
        "--out-dir",
        str(res / "mapping" / "again"),
        "--label-key",
        "cell_type",
        "--truth-key",
        "cell_type",
    )
    write_index(res)
    return res


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


@pytest.mark.parametrize("page", ["index.html", "small/report.html", "mapping/again/report.html"])
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
