"""The login and logout pages.

A failed login answers the same "wrong name or password" whichever was wrong. After
`login_failures_max` failures for one client and user name within `login_window_s`, further
attempts are refused with 429 until the window has passed, before any password is checked.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from cloud.web import accounts
from cloud.web.app import Db, page_user, state_of
from cloud.web.auth import COOKIE, Principal

__all__ = ["router"]

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)


def _safe_next(target: str) -> str:
    """Only a path on this site: never an absolute or scheme-relative URL."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/fleet"
    return target


def _login_page(
    request: Request, *, error: str = "", next_path: str = "/fleet", status: int = 200
) -> Response:
    return state_of(request).templates.TemplateResponse(
        request,
        "login.html",
        {"error": error, "next": next_path, "principal": None},
        status_code=status,
    )


@router.get("/login")
def login_form(request: Request, next: str = "/fleet") -> Response:
    return _login_page(request, next_path=_safe_next(next))


@router.post("/login")
def login(
    request: Request,
    db: Db,
    name: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    next: Annotated[str, Form(max_length=2000)] = "/fleet",
) -> Response:
    state = state_of(request)
    client = request.client.host if request.client else ""
    key = (client, name)
    wait = state.limiter.retry_after(key)
    if wait > 0:
        log.warning("login for %r from %s refused: too many failures", name, client)
        return _login_page(
            request,
            error=f"Too many failed logins: try again in {int(wait) + 1} s.",
            next_path=_safe_next(next),
            status=429,
        )
    user = accounts.authenticate(db, name, password)
    if user is None:
        state.limiter.failed(key)
        log.info("failed login for %r from %s", name, client)
        return _login_page(
            request, error="Wrong name or password.", next_path=_safe_next(next), status=401
        )
    state.limiter.succeeded(key)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        state.sessions.issue(user.name),
        max_age=state.sessions.max_age_s,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https",
        path="/",
    )
    log.info("%s logged in from %s", user.name, client)
    return response


@router.post("/logout")
def logout(_principal: Annotated[Principal, Depends(page_user)]) -> Response:
    # no CSRF check needed to log out: the worst a forged logout does is log the user out
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
