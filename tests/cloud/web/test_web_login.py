"""Logging in: the session cookie, the rate limit on failures, users added and removed."""

from __future__ import annotations

import json
import subprocess
import sys

from cloud.audit import entries
from cloud.store import open_store
from tests.cloud.conftest import CloudEnv
from tests.cloud.web.conftest import Dashboard


def test_a_login_sets_a_signed_httponly_samesite_cookie_and_returns_to_the_page(
    dashboard: Dashboard,
) -> None:
    with dashboard.client() as c:
        r = c.get("/rollouts")
        assert r.status_code == 303 and r.headers["location"] == "/login?next=/rollouts"
        r = c.post(
            "/login",
            data={"name": "olga", "password": dashboard.passwords["olga"], "next": "/rollouts"},
        )
        assert r.status_code == 303 and r.headers["location"] == "/rollouts"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = c.get("/rollouts")
        assert page.status_code == 200 and "olga (operator)" in page.text
        # an address elsewhere is never where a login leads
        r = c.post(
            "/login",
            data={
                "name": "olga",
                "password": dashboard.passwords["olga"],
                "next": "//evil.example/x",
            },
        )
        assert r.headers["location"] == "/fleet"


def test_failed_logins_are_rate_limited_per_client_and_name(dashboard: Dashboard) -> None:
    limit = dashboard.config.web.login_failures_max
    with dashboard.client() as c:
        for _ in range(limit):
            r = c.post("/login", data={"name": "victor", "password": "guess"})
            assert r.status_code == 401 and "Wrong name or password" in r.text
        # now even the right password waits for the window to pass
        r = c.post("/login", data={"name": "victor", "password": dashboard.passwords["victor"]})
        assert r.status_code == 429 and "Too many failed logins" in r.text
        assert "set-cookie" not in r.headers
        # control: another user from the same client is not held back
        r = c.post("/login", data={"name": "olga", "password": dashboard.passwords["olga"]})
        assert r.status_code == 303


def test_a_removed_user_is_logged_out_at_once(dashboard: Dashboard) -> None:
    viewer, _csrf = dashboard.login("victor")
    try:
        assert viewer.get("/api/v1/devices").status_code == 200
        db = open_store(dashboard.config.store.db)
        try:
            from cloud.web.accounts import remove_user

            remove_user(db, "victor")
        finally:
            db.close()
        assert viewer.get("/api/v1/devices").status_code == 401
        assert viewer.get("/fleet").status_code == 303
    finally:
        viewer.close()


def _litefleet(env: CloudEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloud.cli", *args, "--config", str(env.config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_users_cli_adds_with_a_password_or_a_token_and_the_audit_trail_says_so(
    cloud_env: CloudEnv,
) -> None:
    added = _litefleet(cloud_env, "users", "add", "ann", "--role", "operator")
    assert added.returncode == 0, added.stderr
    password = added.stdout.strip().splitlines()[-1]
    token = _litefleet(cloud_env, "users", "add", "ci", "--role", "viewer", "--token", "--json")
    assert token.returncode == 0, token.stderr
    assert json.loads(token.stdout)["token"].startswith("lft_")
    again = _litefleet(cloud_env, "users", "add", "ann", "--role", "viewer")
    assert again.returncode != 0 and again.stderr.strip() == (
        "error: user 'ann' exists (litefleet users remove ann first)"
    )
    bad = _litefleet(cloud_env, "users", "add", "no spaces", "--role", "viewer")
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    listed = json.loads(_litefleet(cloud_env, "users", "list", "--json").stdout)
    assert [(u["name"], u["role"], u["password"], u["tokens"]) for u in listed] == [
        ("ann", "operator", True, 0),
        ("ci", "viewer", False, 1),
    ]
    db = open_store(cloud_env.db)
    try:
        stored = db.execute("SELECT password_hash FROM users WHERE name = 'ann'").fetchone()[0]
        assert stored.startswith("$argon2id$") and password not in stored
        assert token.stdout.split('"')[3] not in json.dumps(
            [list(r) for r in db.execute("SELECT * FROM api_tokens")]
        )
    finally:
        db.close()
    assert _litefleet(cloud_env, "users", "remove", "ann").returncode == 0
    db = open_store(cloud_env.db)
    try:
        trail = [(e.action, e.target) for e in entries(db)]
    finally:
        db.close()
    assert trail == [("user.add", "ann"), ("user.add", "ci"), ("user.remove", "ann")]
