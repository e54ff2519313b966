"""A real browser for the dashboard tests: Debian's headless Chromium (/usr/bin/chromium, no
browser download) driven by Playwright; screenshots for review outside the repository.

The `browser` fixture is in tests/conftest.py; `login` and `shot` are used by the dashboard
tests (tests/cloud/web) and the end-to-end story (tests/e2e/test_dashboard_browser.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SHOTS = Path(os.environ.get("LITEFLEET_SCREENSHOTS", "/tmp/litefleet-screenshots"))


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless Chromium (a Playwright Browser), closed at the end."""
    if not CHROMIUM.exists():
        pytest.fail("the browser tests need Debian's chromium: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def shot(page: Any, name: str) -> None:
    """A full-page screenshot in $LITEFLEET_SCREENSHOTS (outside the repository), for review."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def login(
    browser: Any,
    base: str,
    name: str,
    password: str,
    path: str = "/fleet",
    requests: list[str] | None = None,
) -> Any:
    """A page logged in as `name` through the login form, at `base + path`; every URL the
    page asks for, from the first, is appended to `requests` when given."""
    page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
    page.set_default_timeout(30_000)
    if requests is not None:
        page.on("request", lambda r: requests.append(r.url))
    page.goto(base + path)
    assert "/login" in page.url  # not logged in yet: the login page, remembering where to go
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(path) + r"$"))
    return page
