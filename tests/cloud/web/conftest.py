"""A running dashboard (real uvicorn on a free loopback port) over a test store, with users;
and a real browser to look at it."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud.config import CloudConfig, load_cloud_config
from cloud.store import open_store
from cloud.web import WebServer, create_app
from cloud.web.accounts import Role, add_user, new_token
from tests.cloud.conftest import CloudEnv


@dataclass
class Dashboard:
    config: CloudConfig
    server: WebServer
    app: object
    passwords: dict[str, str]
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, follow_redirects=False)

    def login(self, name: str) -> tuple[httpx.Client, str]:
        """A client with `name`'s session cookie, and the session's CSRF token."""
        client = self.client()
        r = client.post("/login", data={"name": name, "password": self.passwords[name]})
        assert r.status_code == 303, r.text
        page = client.get("/fleet")
        assert page.status_code == 200
        found = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)
        assert found, "the page carries the session's CSRF token"
        return client, found.group(1)


def start_dashboard(config_path: Path) -> Dashboard:
    config = load_cloud_config(config_path)
    db = open_store(config.store.db)
    try:
        passwords = {
            "olga": add_user(db, "olga", Role.OPERATOR),
            "victor": add_user(db, "victor", Role.VIEWER),
        }
        add_user(db, "op-bot", Role.OPERATOR, password=False)
        add_user(db, "view-bot", Role.VIEWER, password=False)
        tokens = {"operator": new_token(db, "op-bot"), "viewer": new_token(db, "view-bot")}
    finally:
        db.close()
    app = create_app(config)
    server = WebServer(app, "127.0.0.1", 0)
    server.start()
    return Dashboard(config, server, app, passwords, tokens)


@pytest.fixture
def dashboard(cloud_env: CloudEnv) -> Iterator[Dashboard]:
    board = start_dashboard(cloud_env.config)
    yield board
    board.server.stop()


# ---- a real browser: Debian's headless Chromium driven by Playwright ------------------------

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


@pytest.fixture
def browser() -> Iterator[Any]:
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


def browser_login(
    browser: Any, board: Dashboard, name: str, path: str, requests: list[str] | None = None
) -> Any:
    """A page logged in as `name` through the login form, at `path`; every URL the page asks
    for, from the first, is appended to `requests` when given."""
    page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
    page.set_default_timeout(30_000)
    if requests is not None:
        page.on("request", lambda r: requests.append(r.url))
    page.goto(board.url + path)
    assert "/login" in page.url  # not logged in yet
    page.fill("#name", name)
    page.fill("#password", board.passwords[name])
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(path) + r"$"))
    return page
