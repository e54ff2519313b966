"""A running dashboard (real uvicorn on a free loopback port) over a test store, with users;
and a real browser to look at it."""

from __future__ import annotations

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
from tests.browser import login
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


# ---- a real browser (tests/browser.py; the `browser` fixture is in tests/conftest.py) -----


def browser_login(
    browser: Any, board: Dashboard, name: str, path: str, requests: list[str] | None = None
) -> Any:
    """A page of this dashboard logged in as `name` through the login form, at `path`."""
    return login(browser, board.url, name, board.passwords[name], path, requests)
