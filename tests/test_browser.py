"""The headless-browser fixture itself: it renders pages and sees their errors (so other tests can trust it)."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path


def _serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = lambda *args: http.server.SimpleHTTPRequestHandler(*args, directory=str(directory))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_renders_a_page_and_takes_a_screenshot(browser, tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text("<!doctype html><link rel=icon href='data:,'><h1 id=title>hello</h1>"
                    "<script>document.getElementById('title').textContent = 'rendered by script';</script>")
    browser.open(page.as_uri())
    assert browser.script("return document.getElementById('title').textContent") == "rendered by script"
    assert browser.console_errors() == []
    shot = browser.screenshot("fixture-self-test")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 1000


def test_sees_console_errors_and_uncaught_exceptions(browser, tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><link rel=icon href='data:,'><script>console.error('logged failure');"
                    "setTimeout(() => { throw new Error('uncaught failure'); }, 0);</script>")
    browser.open(page.as_uri())
    errors = browser.wait_until(lambda: len(browser.console_errors()) >= 2 and browser.console_errors(),
                                what="two console errors")
    assert any("logged failure" in error for error in errors)
    assert any("uncaught failure" in error for error in errors)


def test_sees_failed_loads_over_http(browser, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><link rel=icon href='data:,'><script src='/missing.js'></script>")
    server, base = _serve(tmp_path)
    try:
        browser.open(f"{base}/index.html")
        assert any("missing.js" in error for error in browser.console_errors())
    finally:
        server.shutdown()
        server.server_close()
