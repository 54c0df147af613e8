"""Shared fixtures. ``browser``: a real headless Chromium (see tests/browser.py). ``pipeline_binaries``:
the real OpenTelemetry Collector and Jaeger built by tools/build_test_infra.sh (see tests/pipeline_infra.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from browser import Browser, browser_required, launch, unavailable_reason
from pipeline_infra import REQUIRED_VARIABLE, locate_binaries, pipeline_required


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where browser tests save their screenshots: $CRACKLE_SCREENSHOT_DIR, else a pytest temp folder."""
    chosen = os.environ.get("CRACKLE_SCREENSHOT_DIR")
    return Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="session")
def _browser_session(screenshot_dir: Path) -> Iterator[Browser]:
    reason = unavailable_reason()
    if reason is not None:
        if browser_required():
            pytest.fail(f"browser tests are required here (CRACKLE_BROWSER_TESTS=required) but {reason}")
        pytest.skip(f"no browser: {reason}")
    browser = launch(screenshot_dir)
    yield browser
    browser.quit()


@pytest.fixture
def browser(_browser_session: Browser) -> Iterator[Browser]:
    """One headless Chromium shared by the session; each test starts with an empty console log."""
    _browser_session.clear_console()
    yield _browser_session
    _browser_session.driver.get("about:blank")


@pytest.fixture(scope="session")
def pipeline_binaries() -> dict[str, Path]:
    """{"crackle-otelcol": path, "jaeger": path}; skips (fails under CRACKLE_PIPELINE_TESTS=required) without them."""
    binaries, reason = locate_binaries()
    if binaries is None:
        if pipeline_required():
            pytest.fail(f"pipeline tests are required here ({REQUIRED_VARIABLE}=required) but {reason}")
        pytest.skip(reason)
    return binaries
