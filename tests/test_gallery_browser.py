"""The gallery in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``)
driven by Selenium opens the site from disk, clicks into a layer and a filter, checks that every
image loaded and that the arrow keys navigate, and saves screenshots in the test's tmp dir.

``scripts/test.sh`` installs Chromium where it runs as root with apt-get; elsewhere this test is
skipped, saying why."""

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_network import ARGS as TINY

from vizjax.cli import main

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
LAYERS = ("block1_conv1", "block2_conv1")

selenium = pytest.importorskip(
    "selenium", reason="selenium is not installed (pip install -e .[test])"
)
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        f"{CHROMIUM} or {CHROMEDRIVER} is missing: install the Debian packages chromium and "
        "chromium-driver (scripts/test.sh does when it runs as root with apt-get)",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser(tmp_path):
    # Selenium must not look for drivers on the network: the driver is given, and offline mode
    # keeps Selenium Manager from starting at all.
    os.environ["SE_OFFLINE"] = "true"
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",  # root in CI: Chromium's sandbox refuses to run as root
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def _images_state(driver) -> list[tuple[str, bool, int]]:
    """Scroll every image into view (lazy ones load then) and report (src, complete, width)."""
    return driver.execute_script(
        "const out = [];"
        "for (const img of document.images) {"
        "  img.scrollIntoView();"
        "  out.push([img.getAttribute('src'), img.complete, img.naturalWidth]);"
        "}"
        "window.scrollTo(0, 0);"
        "return out;"
    )


def assert_all_images_loaded(driver, at_least: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        state = _images_state(driver)
        if len(state) >= at_least and all(done and w > 0 for _, done, w in state):
            return
        if time.monotonic() > deadline:
            bad = [s for s in state if not (s[1] and s[2] > 0)]
            raise AssertionError(
                f"{driver.current_url}: {len(state)} images, not loaded: {bad[:5]}"
            )
        time.sleep(0.1)


def _wait_url(driver, suffix: str) -> None:
    WebDriverWait(driver, 10).until(lambda d: d.current_url.endswith(suffix))


def _press(driver, key) -> None:
    driver.find_element(By.TAG_NAME, "body").send_keys(key)


def test_site_in_headless_chromium(tiny_weights, tmp_path, browser):
    atlas = tmp_path / "atlas.h5"
    layer_args = [w for layer in LAYERS for w in ("--layer", layer)]
    # The tiny network and the seed article's recipe: the fastest to compile, and the site is the
    # same either way.
    small = [*TINY, "--recipe", "classic", "--filters", "0:3", "--size", "32", "--steps", "3"]
    assert main(["atlas", *layer_args, *small, "--quiet", "--out", str(atlas)]) == 0
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
            photos / f"p{i}.png"
        )
    (photos / "readme.txt").write_text("not an image")
    argv = ["exemplars", str(atlas), "--images", str(photos), "--top", "3", "--input-size", "32"]
    assert main([*argv, "--crop-size", "24", "--quiet"]) == 0
    site = tmp_path / "site"
    assert main(["gallery", str(atlas), "--out", str(site), "--quiet"]) == 0

    browser.get((site / "index.html").as_uri())
    assert "vizjax atlas" in browser.title
    assert_all_images_loaded(browser, at_least=2 * 3)  # the index' thumbnail strips
    browser.save_screenshot(str(tmp_path / "index.png"))

    browser.find_element(By.LINK_TEXT, "block1_conv1").click()
    _wait_url(browser, "/block1_conv1/index.html")
    assert_all_images_loaded(browser, at_least=3)
    browser.save_screenshot(str(tmp_path / "layer.png"))

    browser.find_element(By.CSS_SELECTOR, 'a.f[href="1.html"]').click()
    _wait_url(browser, "/block1_conv1/1.html")
    # the filter's image, and its 3 exemplar crops
    assert_all_images_loaded(browser, at_least=1 + 3)
    assert "dataset exemplars" in browser.page_source
    browser.save_screenshot(str(tmp_path / "filter.png"))

    _press(browser, Keys.ARROW_RIGHT)
    _wait_url(browser, "/block1_conv1/2.html")
    assert_all_images_loaded(browser, at_least=1)
    _press(browser, Keys.ARROW_LEFT)
    _wait_url(browser, "/block1_conv1/1.html")
    _press(browser, Keys.ARROW_LEFT)
    _wait_url(browser, "/block1_conv1/0.html")
    _press(browser, Keys.ARROW_LEFT)  # the first filter has no previous one: stays
    time.sleep(0.3)
    assert browser.current_url.endswith("/block1_conv1/0.html")
    _press(browser, Keys.ARROW_UP)
    _wait_url(browser, "/block1_conv1/index.html")
    _press(browser, Keys.ARROW_RIGHT)  # on a layer page: the next layer
    _wait_url(browser, "/block2_conv1/index.html")
    _press(browser, Keys.ARROW_UP)
    _wait_url(browser, "/site/index.html")

    # A second atlas beside the first (the same one here): each box shows two loaded pictures,
    # side by side.
    paired = tmp_path / "paired"
    assert (
        main(["gallery", str(atlas), "--out", str(paired), "--beside", str(atlas), "--quiet"]) == 0
    )
    browser.get((paired / "block1_conv1" / "index.html").as_uri())
    assert_all_images_loaded(browser, at_least=2 * 3)
    boxes = browser.find_elements(By.CSS_SELECTOR, "a.f.pair")
    assert len(boxes) == 3
    left, right = boxes[0].find_elements(By.TAG_NAME, "img")
    assert left.location["y"] == right.location["y"] and left.location["x"] < right.location["x"]

    for name in ("index.png", "layer.png", "filter.png"):
        with Image.open(tmp_path / name) as im:
            grey = np.asarray(im.convert("L"))
            assert im.size[0] >= 800 and len(np.unique(grey)) > 10  # not blank
