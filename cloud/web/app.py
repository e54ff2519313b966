"""The dashboard's ASGI application: `create_app(config)`.

Pages (`cloud.web.pages`) and the JSON API (`cloud.web.api`) share one FastAPI app, one way to
read the store (`cloud.web.queries`, through `cloud.web.views`) and one set of guards:

    page_user / api_user          a login is needed: pages redirect to /login, the API says 401
    page_operator / api_operator  and the operator role (403 for a viewer), and for a cookie
                                  session the CSRF token of the form or the X-CSRF-Token header

Assets (htmx, uPlot, Swagger UI, the style sheet) are served from the package's `static/`
folder; nothing is fetched from elsewhere. The OpenAPI document is at /api/openapi.json and
Swagger UI shows it at /api/docs. No Content-Security-Policy is set (Swagger UI's page starts
itself with an inline script; the dashboard's own pages carry small inline handlers too).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from cloud.config import CloudConfig
from cloud.store import Store, open_store
from cloud.web import accounts, filters
from cloud.web.auth import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    LoginLimiter,
    Principal,
    Sessions,
    load_secret,
)
from cloud.web.limits import MAX_BODY_BYTES, BodyLimit

__all__ = ["WebState", "api_operator", "api_user", "create_app", "page_operator", "page_user"]

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
API_DESCRIPTION = (
    "The dashboard's data for scripts. Every route needs `Authorization: Bearer <token>` "
    "(`litefleet users add NAME --role viewer --token --json`; **Authorize** above takes one) "
    "or a dashboard login; every POST needs an operator. [Back to the dashboard](/fleet)."
)


class StorePool:
    """The dashboard's store: one engine, whose own pool lends each request a connection for
    each query; opened on first use, closed at shutdown."""

    def __init__(self, target: object) -> None:
        self.target = target  # what `open_store` takes: the [store] config
        self._store: Store | None = None
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[Store]:
        with self._lock:
            if self._store is None:
                self._store = open_store(self.target)
            store = self._store
        yield store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


@dataclass
class WebState:
    config: CloudConfig
    sessions: Sessions
    limiter: LoginLimiter
    stores: StorePool
    templates: Jinja2Templates

    @property
    def offline_after_s(self) -> float:
        return self.config.ingest.offline_after_s


def state_of(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


def store(request: Request) -> Iterator[Store]:
    """The request's store connection (one per request, shared by its dependencies)."""
    with state_of(request).stores.connection() as db:
        yield db


Db = Annotated[Store, Depends(store)]


class LoginRequired(Exception):
    """A page asked for without a session: answered with a redirect to the login page."""


def _principal(request: Request, db: Store) -> Principal | None:
    state = state_of(request)
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        user = accounts.user_for_token(db, auth[7:].strip())
        return Principal(user, "", False) if user is not None else None
    session = state.sessions.read(request.cookies.get(COOKIE, ""))
    if session is None:
        return None
    user = accounts.user_named(db, session[0])
    return Principal(user, session[1], True) if user is not None else None


def api_user(request: Request, db: Db) -> Principal:
    principal = _principal(request, db)
    if principal is None:
        raise HTTPException(
            401,
            "log in: Authorization: Bearer <token> (litefleet users add NAME --token)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


def page_user(request: Request, db: Db) -> Principal:
    principal = _principal(request, db)
    if principal is None:
        raise LoginRequired()
    return principal


async def _presented_csrf(request: Request) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


async def _operator(request: Request, principal: Principal) -> Principal:
    if not principal.user.may_act:
        raise HTTPException(403, f"{principal.user.name} is a viewer: only an operator may do this")
    if not principal.csrf_ok(await _presented_csrf(request)):
        raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page")
    return principal


async def api_operator(
    request: Request, principal: Annotated[Principal, Depends(api_user)]
) -> Principal:
    return await _operator(request, principal)


async def page_operator(
    request: Request, principal: Annotated[Principal, Depends(page_user)]
) -> Principal:
    return await _operator(request, principal)


def create_app(config: CloudConfig, *, secret: bytes | None = None) -> FastAPI:
    """The dashboard for `config`'s store. `secret` signs session cookies (default: the
    `[web] secret_file`, created beside the store on first use)."""
    web = config.web
    if secret is None:
        secret = load_secret(web.secret_file or config.store.db.parent / "web-secret")

    # the OpenAPI document is served by `cloud.web.api` behind a login, not FastAPI's own route
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.web.stores.close()

    app = FastAPI(
        title="LiteFleet",
        version="1",
        description=API_DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters.update(filters.FILTERS)
    app.state.web = WebState(
        config,
        Sessions(secret, web.session_max_age_s),
        LoginLimiter(web.login_failures_max, web.login_window_s),
        StorePool(config.store),
        templates,
    )
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)

    @app.middleware("http")
    async def _server_timing(request: Request, call_next: Any) -> Response:
        """`Server-Timing: app;dur=<ms>`: what the server spent, seen in a browser's tools."""
        started = time.perf_counter()
        response: Response = await call_next(request)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1e3:.1f}"
        return response

    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, _exc: LoginRequired) -> Response:
        target = request.url.path  # back here after the login: only what a GET can show
        if request.url.query:
            target += "?" + request.url.query
        if request.method != "GET" or target.endswith("/live") or "/live?" in target:
            target = "/fleet"
        if request.headers.get("hx-request"):  # htmx: reload the whole page onto the login
            return Response(status_code=401, headers={"HX-Redirect": "/login"})
        return RedirectResponse(f"/login?next={_quote(target)}", status_code=303)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith("/api/") or request.headers.get("hx-request"):
            return JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
        return templates.TemplateResponse(
            request,
            "error.html",
            {"status": exc.status_code, "detail": exc.detail, "principal": None},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    from cloud.web import api, login, pages

    app.include_router(login.router)
    app.include_router(pages.router)
    app.include_router(api.router)
    return app


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")
