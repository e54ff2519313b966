"""The route table walked: no route answers without a login, no change is a viewer's to make."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from fastapi.routing import APIRoute

from tests.cloud.web.conftest import Dashboard

OPEN = {"/login", "/logout"}  # logging in needs no login; logging out changes no fleet state


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, also inside included routers (nested as such by newer FastAPI)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from _api_routes(route.original_router.routes)


def _routes(board: Dashboard) -> list[tuple[str, str]]:
    out = []
    for route in _api_routes(board.app.routes):  # type: ignore[attr-defined]
        if route.path in OPEN:
            continue
        path = re.sub(r"\{[^}]+\}", "x-1", route.path)
        out += [(method, path) for method in sorted(route.methods)]
    return out


def test_every_route_needs_a_login(dashboard: Dashboard) -> None:
    routes = _routes(dashboard)
    api = [(m, p) for m, p in routes if p.startswith("/api/v1/")]
    assert len(api) >= 12 and len(routes) >= 25  # the table really was walked
    with dashboard.client() as anonymous, dashboard.client("lft_not-a-token") as forged:
        for method, path in routes:
            r = anonymous.request(method, path)
            if path.startswith("/api/") and path != "/api/docs":
                assert r.status_code == 401, (method, path, r.status_code)
                assert r.headers["www-authenticate"] == "Bearer"
                assert forged.request(method, path).status_code == 401, (method, path)
            else:  # a page: to the login page, and back here afterwards
                assert r.status_code == 303, (method, path, r.status_code)
                assert r.headers["location"].startswith("/login?next="), (method, path)
                if method == "POST":  # after the login, to a page, never to the bare action
                    assert r.headers["location"] == "/login?next=/fleet", (method, path)
    # a forged session cookie is no session either
    with dashboard.client() as c:
        c.cookies.set("litefleet_session", "eyJ1Ijoib2xnYSJ9.forged.sig")
        assert c.get("/api/v1/devices").status_code == 401
        assert c.get("/fleet").status_code == 303


def test_every_state_changing_route_refuses_a_viewer(dashboard: Dashboard) -> None:
    posts = [(m, p) for m, p in _routes(dashboard) if m == "POST"]
    assert len(posts) >= 9  # 3 API rollout actions, command, deployment; 3 forms, command, deploy
    viewer, csrf = dashboard.login("victor")
    operator, op_csrf = dashboard.login("olga")
    with (
        dashboard.client(dashboard.tokens["viewer"]) as viewer_api,
        dashboard.client(dashboard.tokens["operator"]) as operator_api,
    ):
        for method, path in posts:
            if path.startswith("/api/"):
                r = viewer_api.request(
                    method, path, json={"name": "digits", "version": 1, "group": "g"}
                )
                # control: the operator's token passes the same guard (the rollout is unknown)
                ok = operator_api.request(
                    method, path, json={"name": "digits", "version": 1, "group": "g"}
                )
            else:
                r = viewer.request(
                    method,
                    path,
                    data={
                        "csrf": csrf,
                        "action": "report-now",
                        "name": "digits",
                        "version": "1",
                        "group": "g",
                    },
                )
                ok = operator.request(
                    method,
                    path,
                    data={
                        "csrf": op_csrf,
                        "action": "x",
                        "name": "digits",
                        "version": "1",
                        "group": "g",
                    },
                )
            assert r.status_code == 403, (method, path, r.status_code, r.text)
            assert ok.status_code not in (401, 403), (method, path, ok.status_code, ok.text)
    viewer.close()
    operator.close()
    # and the reads are open to the viewer
    with dashboard.client(dashboard.tokens["viewer"]) as c:
        assert c.get("/api/v1/devices").status_code == 200
        assert c.get("/api/v1/rollouts").status_code == 200
        assert c.get("/api/openapi.json").json()["paths"]["/api/v1/devices"]


def test_an_operator_form_without_the_csrf_token_is_refused(dashboard: Dashboard) -> None:
    operator, csrf = dashboard.login("olga")
    try:
        r = operator.post("/rollouts/nope/pause", data={})
        assert r.status_code == 403 and "CSRF" in r.text
        r = operator.post("/rollouts/nope/pause", data={"csrf": csrf + "x"})
        assert r.status_code == 403
        # control: with the token, the guard lets it through (and the rollout is unknown)
        assert operator.post("/rollouts/nope/pause", data={"csrf": csrf}).status_code == 404
        # the API through the cookie needs the header too
        assert operator.post("/api/v1/rollouts/nope/pause").status_code == 403
        assert (
            operator.post("/api/v1/rollouts/nope/pause", headers={"X-CSRF-Token": csrf}).status_code
            == 404
        )
    finally:
        operator.close()


def test_a_body_over_the_bound_is_refused_before_anything_reads_it(dashboard: Dashboard) -> None:
    big = b"x" * (64 * 1024 + 1)
    with dashboard.client() as anonymous:
        r = anonymous.post(
            "/api/v1/deployments", content=big, headers={"content-type": "application/json"}
        )
        assert r.status_code == 413 and "over 65536 bytes" in r.text

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
            for _ in range(80):
                yield b"y" * 1024

        r = anonymous.post(
            "/login",
            content=chunks(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 413
        # control: a small body goes through to the guard
        assert anonymous.post("/api/v1/deployments", json={}).status_code == 401
