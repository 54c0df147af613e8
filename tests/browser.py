"""A real headless Chromium for browser tests: Debian's ``chromium`` driven through ``chromium-driver``.

Selenium talks to ``/usr/bin/chromedriver`` (the driver Debian builds for the very same Chromium, so
versions always match) and never downloads a browser or a driver. Each launch gets a fresh profile
directory and the flags that keep a headless browser off the network (no updates, sync, QUIC or
background fetches), so a page under test can only reach what the test serves.

Used through the ``browser`` fixture in ``conftest.py``::

    def test_page(browser):
        browser.open(url)
        assert browser.console_errors() == []
        browser.screenshot("page")

When Chromium is missing the fixture skips with the reason, unless ``CRACKLE_BROWSER_TESTS=required``
(set by ``.ci/run``), where it fails: CI must never pass by skipping the browser.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from pipeline_infra import wait_until  # tests/ is on sys.path (rootdir conftest)

CHROMIUM = os.environ.get("CRACKLE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CRACKLE_CHROMEDRIVER", "/usr/bin/chromedriver")
REQUIRED_VARIABLE = "CRACKLE_BROWSER_TESTS"

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # root in CI containers; the pages are our own
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-dev-shm-usage",  # small /dev/shm in containers crashes tabs
    "--hide-scrollbars",
)


def browser_required() -> bool:
    return os.environ.get(REQUIRED_VARIABLE, "").lower() == "required"


def unavailable_reason() -> str | None:
    """Why no browser test can run here, or None when Chromium, its driver and Selenium are present."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} not found: install Debian's {package} (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    return None


class Browser:
    """One headless Chromium window: open pages, collect console errors, take screenshots."""

    def __init__(self, driver: Any, screenshot_dir: Path, profile_dir: str) -> None:
        self.driver = driver
        self.screenshot_dir = screenshot_dir
        self._profile_dir = profile_dir
        self._console: list[dict[str, Any]] = []

    def open(self, url: str, *, timeout: float = 20.0) -> None:
        """Load ``url`` and wait until the document and its scripts have run."""
        self.driver.get(url)
        self.wait_until(lambda: self.driver.execute_script("return document.readyState") == "complete",
                        timeout=timeout, what=f"{url} to load")

    def wait_until(self, condition: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition") -> Any:
        return wait_until(condition, timeout, what, interval=0.05)

    def script(self, source: str, *args: Any) -> Any:
        return self.driver.execute_script(source, *args)

    def console(self) -> list[dict[str, Any]]:
        """Every console entry since the browser started (Chrome hands each entry out once; we keep them)."""
        self._console.extend(self.driver.get_log("browser"))
        return list(self._console)

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads (Chrome logs all three as SEVERE)."""
        return [entry["message"] for entry in self.console() if entry.get("level") == "SEVERE"]

    def clear_console(self) -> None:
        self.console()
        self._console.clear()

    def screenshot(self, name: str, *, full_page: bool = True) -> Path:
        """Save a PNG of the page (the whole scrollable page by default) and return its path."""
        self.screenshot_dir.mkdir(parents=True, exist_ok=True)
        path = self.screenshot_dir / f"{name}.png"
        if full_page:
            size = self.script("return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1},
            })
            path.write_bytes(base64.b64decode(shot["data"]))
        else:
            self.driver.save_screenshot(str(path))
        return path

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self._profile_dir, ignore_errors=True)


def launch(screenshot_dir: Path, *, width: int = 1400, height: int = 1000) -> Browser:
    """Start a headless Chromium with a fresh profile; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile_dir = tempfile.mkdtemp(prefix="crackle-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    except Exception:
        shutil.rmtree(profile_dir, ignore_errors=True)
        raise
    driver.set_page_load_timeout(30)
    return Browser(driver, screenshot_dir, profile_dir)
