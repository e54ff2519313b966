"""The dashboard's pages: Fleet, Device, Rollouts, Releases, Audit.

Each page has a partial (`.../live`) that htmx fetches every few seconds and swaps in, so the
figures move without a reload. Forms that change the fleet post the session's CSRF token and
need the operator role; the answer is a redirect back with a signed note of what happened.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from cloud.store import Store
from cloud.store import dashboard as queries
from cloud.web import actions, views
from cloud.web.api import table_request
from cloud.web.app import Db, page_operator, page_user, state_of
from cloud.web.auth import Principal

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
User = Annotated[Principal, Depends(page_user)]
Operator = Annotated[Principal, Depends(page_operator)]
TableReq = Annotated[views.TableRequest, Depends(table_request)]


def _render(request: Request, template: str, principal: Principal, **context: Any) -> Response:
    state = state_of(request)
    note = state.sessions.read_note(request.query_params.get("note", ""))
    page: Response = state.templates.TemplateResponse(
        request, template, {"principal": principal, "note": note, **context}
    )
    return page


def _back(request: Request, path: str, note: str) -> Response:
    token = state_of(request).sessions.note(note)
    return RedirectResponse(f"{path}?{urlencode({'note': token})}", status_code=303)


def _refused(request: Request, path: str, e: actions.ActionRefused) -> Response:
    if e.status == 404:
        raise HTTPException(404, str(e))
    return _back(request, path, f"refused: {e}")


@router.get("/")
def home(_user: User) -> Response:
    return RedirectResponse("/fleet", status_code=303)


# ---- fleet ---------------------------------------------------------------------------------


def _fleet_context(request: Request, db: Store, req: views.TableRequest) -> dict[str, Any]:
    offline_after = state_of(request).offline_after_s
    f = req.filter
    query = {
        "group": f.group,
        "profile": f.profile,
        "model": f.model,
        "state": f.state,
        "q": f.search,
        "sort": req.sort,
        "desc": "true" if req.descending else "false",
        "per_page": req.per_page,
    }
    return {
        "counts": queries.fleet_counts(db, time.time(), offline_after),
        "table": views.fleet_table(db, req, offline_after),
        "req": req,
        "query": query,
        "options": queries.filter_options(db),
        "urlencode": urlencode,
    }


@router.get("/fleet")
def fleet(request: Request, db: Db, principal: User, req: TableReq) -> Response:
    return _render(request, "fleet.html", principal, **_fleet_context(request, db, req))


@router.get("/fleet/live")
def fleet_live(request: Request, db: Db, principal: User, req: TableReq) -> Response:
    return _render(request, "_fleet_live.html", principal, **_fleet_context(request, db, req))


# ---- one device ----------------------------------------------------------------------------


def _device(request: Request, db: Store, device_id: str) -> dict[str, Any]:
    found = views.device_detail(db, device_id, state_of(request).offline_after_s)
    if found is None:
        raise HTTPException(404, f"no device {device_id!r}")
    return found


@router.get("/devices/{device_id}")
def device(request: Request, device_id: str, db: Db, principal: User) -> Response:
    return _render(
        request,
        "device.html",
        principal,
        d=_device(request, db, device_id),
        commands=("report-now", "rollback", "restart-source"),
    )


@router.get("/devices/{device_id}/live")
def device_live(
    request: Request,
    device_id: str,
    db: Db,
    principal: User,
    part: Literal["facts", "history"] = "facts",
) -> Response:
    return _render(request, f"_device_{part}.html", principal, d=_device(request, db, device_id))


@router.post("/devices/{device_id}/command")
def device_command(
    request: Request,
    device_id: str,
    db: Db,
    principal: Operator,
    action: Annotated[str, Form(max_length=40)],
) -> Response:
    path = f"/devices/{device_id}"
    try:
        note = actions.send_command(
            db, state_of(request).config, device_id, action, principal.user.name
        )
    except actions.ActionRefused as e:
        return _refused(request, path, e)
    return _back(request, path, note)


# ---- rollouts ------------------------------------------------------------------------------


@router.get("/rollouts")
def rollouts(request: Request, db: Db, principal: User) -> Response:
    return _render(
        request,
        "rollouts.html",
        principal,
        rollouts=[views.rollout_summary(r) for r in queries.rollouts(db)],
    )


@router.get("/rollouts/live")
def rollouts_live(request: Request, db: Db, principal: User) -> Response:
    return _render(
        request,
        "_rollouts_live.html",
        principal,
        rollouts=[views.rollout_summary(r) for r in queries.rollouts(db)],
    )


def _rollout(db: Store, rollout_id: str) -> dict[str, Any]:
    found = views.rollout_detail(db, rollout_id)
    if found is None:
        raise HTTPException(404, f"no rollout {rollout_id!r}")
    return found


@router.get("/rollouts/{rollout_id}")
def rollout(request: Request, rollout_id: str, db: Db, principal: User) -> Response:
    return _render(request, "rollout.html", principal, r=_rollout(db, rollout_id))


@router.get("/rollouts/{rollout_id}/live")
def rollout_live(request: Request, rollout_id: str, db: Db, principal: User) -> Response:
    return _render(request, "_rollout_live.html", principal, r=_rollout(db, rollout_id))


def _rollout_form(action: str) -> None:
    def act(request: Request, rollout_id: str, db: Db, principal: Operator) -> Response:
        path = f"/rollouts/{rollout_id}"
        try:
            note = actions.rollout_action(
                db, state_of(request).config, rollout_id, action, principal.user.name
            )
        except actions.ActionRefused as e:
            return _refused(request, path, e)
        return _back(request, path, note)

    router.add_api_route(
        f"/rollouts/{{rollout_id}}/{action}", act, methods=["POST"], name=f"page_rollout_{action}"
    )


for _action in actions.ROLLOUT_ACTIONS:
    _rollout_form(_action)


# ---- releases and audit --------------------------------------------------------------------


@router.get("/releases")
def releases(request: Request, db: Db, principal: User) -> Response:
    return _render(
        request,
        "releases.html",
        principal,
        groups=views.release_groups(db),
        group_names=queries.group_names(db),
    )


@router.post("/releases/deploy")
def deploy(
    request: Request,
    db: Db,
    principal: Operator,
    name: Annotated[str, Form(max_length=100)],
    version: Annotated[int, Form(ge=1)],
    group: Annotated[str, Form(max_length=100)],
    waves: Annotated[str, Form(max_length=200)] = "1,10%,50%,100%",
) -> Response:
    try:
        rollout_id = actions.deploy(
            db, state_of(request).config, name, version, group, waves, principal.user.name
        )
    except actions.ActionRefused as e:
        return _back(request, "/releases", f"refused: {e}")
    return _back(
        request,
        f"/rollouts/{rollout_id}",
        f"rollout {rollout_id} of {name}@{version} to group {group} recorded: "
        "serve publishes its first wave at its next tick",
    )


@router.get("/audit")
def audit(request: Request, db: Db, principal: User, page: int = 1) -> Response:
    page = max(1, page)
    total, rows = queries.audit_page(db, (page - 1) * 100, 100)
    return _render(
        request,
        "audit.html",
        principal,
        entries=rows,
        total=total,
        page=page,
        pages=max(1, -(-total // 100)),
    )
