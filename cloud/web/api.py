"""The JSON API under /api/v1: the pages' data, for scripts (`Authorization: Bearer <token>`).

Reads need any user; every POST needs an operator (403 for a viewer). Without credentials
every route answers 401. The OpenAPI document is /api/openapi.json, shown by Swagger UI at
/api/docs.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html, swagger_ui_default_parameters
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from cloud.store import dashboard as queries
from cloud.web import actions, views
from cloud.web.app import Db, api_operator, api_user, page_user, state_of
from cloud.web.auth import Principal

__all__ = ["router"]

router = APIRouter()
v1 = "/api/v1"
User = Annotated[Principal, Depends(api_user)]
Operator = Annotated[Principal, Depends(api_operator)]
TELEMETRY_MAX = 5000
SWAGGER = "/static/swagger"  # the vendored swagger-ui-dist (static/README.md)


Short = Annotated[str, Query(max_length=100)]


def table_request(
    group: Short = "",
    profile: Short = "",
    model: Short = "",
    state: Literal["", "online", "offline", "failing", "updating", "drifting"] = "",
    q: Short = "",
    sort: Short = "device_id",
    desc: bool = False,
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: Annotated[int, Query(ge=1, le=views.PAGE_MAX)] = 50,
) -> views.TableRequest:
    return views.TableRequest(
        queries.DeviceFilter(group, profile, model, state, q.strip()), sort, desc, page, per_page
    )


@router.get(f"{v1}/fleet", tags=["fleet"])
def fleet(request: Request, db: Db, _user: User) -> dict[str, Any]:
    """Counts: online, offline, failing, drifting; devices per model@version and per update
    phase."""
    return queries.fleet_counts(db, time.time(), state_of(request).offline_after_s)


@router.get(f"{v1}/devices", tags=["fleet"])
def devices(
    request: Request,
    db: Db,
    _user: User,
    req: Annotated[views.TableRequest, Depends(table_request)],
) -> dict[str, Any]:
    """One page of devices, filtered and sorted (`sort` one of device_id, profile, model,
    version, fps, p95, phase, source, last_seen)."""
    return views.fleet_table(db, req, state_of(request).offline_after_s)


@router.get(f"{v1}/devices/{{device_id}}", tags=["fleet"])
def device(request: Request, device_id: str, db: Db, _user: User) -> dict[str, Any]:
    found = views.device_detail(db, device_id, state_of(request).offline_after_s)
    if found is None:
        raise HTTPException(404, f"no device {device_id!r}")
    return found


@router.get(f"{v1}/devices/{{device_id}}/telemetry", tags=["fleet"])
def telemetry(
    device_id: str,
    db: Db,
    _user: User,
    since: float = 0.0,
    limit: Annotated[int, Query(ge=1, le=TELEMETRY_MAX)] = 1000,
) -> dict[str, Any]:
    """Raw telemetry records with a device timestamp at or after `since` (epoch seconds)."""
    rows = queries.telemetry_since(db, device_id, since, limit)
    return {
        "device_id": device_id,
        "records": [{**views.record_body(r["body"]), "received": r["received"]} for r in rows],
    }


@router.get(f"{v1}/devices/{{device_id}}/series", tags=["fleet"])
def series(
    device_id: str, db: Db, _user: User, window: Literal["15m", "6h", "7d"] = "15m"
) -> dict[str, Any]:
    """The device's charts: fps, p95 latency, CPU, RSS and outbox depth per time bucket."""
    return views.series(db, device_id, window)


class CommandResult(BaseModel):
    result: str


@router.post(f"{v1}/devices/{{device_id}}/commands/{{action}}", tags=["actions"])
def command(
    request: Request,
    device_id: str,
    action: Literal["report-now", "rollback", "restart-source"],
    db: Db,
    principal: Operator,
) -> CommandResult:
    """Send a signed command to the device (operators only)."""
    try:
        return CommandResult(
            result=actions.send_command(
                db, state_of(request).config, device_id, action, principal.user.name
            )
        )
    except actions.ActionRefused as e:
        raise HTTPException(e.status, str(e)) from e


@router.get(f"{v1}/rollouts", tags=["rollouts"])
def rollouts(db: Db, _user: User) -> list[dict[str, Any]]:
    """The newest rollouts: counts per status; `downloading` devices with their summed
    `bytes_done` of `bytes_total`."""
    return [views.rollout_summary(r) for r in queries.rollouts(db)]


@router.get(f"{v1}/rollouts/{{rollout_id}}", tags=["rollouts"])
def rollout(rollout_id: str, db: Db, _user: User) -> dict[str, Any]:
    """One rollout: per wave its counts and download bytes, failures by reason, and its
    first devices (`device_list`, those under way first) with their own bytes."""
    found = views.rollout_detail(db, rollout_id)
    if found is None:
        raise HTTPException(404, f"no rollout {rollout_id!r}")
    return found


def _rollout_route(action: str) -> None:
    def act(request: Request, rollout_id: str, db: Db, principal: Operator) -> CommandResult:
        try:
            return CommandResult(
                result=actions.rollout_action(
                    db, state_of(request).config, rollout_id, action, principal.user.name
                )
            )
        except actions.ActionRefused as e:
            raise HTTPException(e.status, str(e)) from e

    act.__doc__ = f"{action.capitalize()} the rollout (operators only)."
    router.add_api_route(
        f"{v1}/rollouts/{{rollout_id}}/{action}",
        act,
        methods=["POST"],
        tags=["rollouts"],
        name=f"rollout_{action}",
    )


for _action in actions.ROLLOUT_ACTIONS:
    _rollout_route(_action)


@router.get(f"{v1}/releases", tags=["releases"])
def releases(db: Db, _user: User) -> list[dict[str, Any]]:
    """Per model and profile: versions, sizes, signed provenance, devices running each."""
    return views.release_groups(db)


class DeployRequest(BaseModel):
    name: str = Field(max_length=100)
    version: int = Field(ge=1)
    group: str = Field(max_length=100)
    waves: str = Field("1,10%,50%,100%", max_length=200)


class DeployResult(BaseModel):
    rollout_id: str


@router.post(f"{v1}/deployments", tags=["releases"])
def deployment(request: Request, body: DeployRequest, db: Db, principal: Operator) -> DeployResult:
    """Roll a release out to a group (operators only); `serve` publishes its first wave."""
    try:
        return DeployResult(
            rollout_id=actions.deploy(
                db,
                state_of(request).config,
                body.name,
                body.version,
                body.group,
                body.waves,
                principal.user.name,
            )
        )
    except actions.ActionRefused as e:
        raise HTTPException(e.status, str(e)) from e


@router.get(f"{v1}/audit", tags=["audit"])
def audit(db: Db, _user: User, page: Annotated[int, Query(ge=1)] = 1) -> dict[str, Any]:
    total, rows = queries.audit_page(db, (page - 1) * 100, 100)
    return {"total": total, "page": page, "entries": rows}


@router.get("/api/openapi.json", include_in_schema=False)
def openapi(request: Request, _user: User) -> dict[str, Any]:
    """The OpenAPI document, saying that every route takes a bearer token: Swagger UI's
    Authorize button then sends one (and its POSTs need no CSRF token, as for any script)."""
    schema: dict[str, Any] = request.app.openapi()
    schema.setdefault("components", {}).setdefault(
        "securitySchemes", {"token": {"type": "http", "scheme": "bearer"}}
    )
    schema.setdefault("security", [{"token": []}])
    return schema


@router.get("/api/docs", include_in_schema=False)
def docs(_principal: Annotated[Principal, Depends(page_user)]) -> Response:
    """Swagger UI over /api/openapi.json, from the package's own copy (`static/swagger/`):
    nothing from a CDN, and no online validator (`validatorUrl` null: no request leaves the
    site). Behind the page login, like every page; the document itself behind the API's."""
    page: HTMLResponse = get_swagger_ui_html(
        openapi_url="/api/openapi.json",
        title="LiteFleet API",
        swagger_js_url=f"{SWAGGER}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER}/swagger-ui.css",
        swagger_favicon_url=f"{SWAGGER}/favicon-32x32.png",
        swagger_ui_parameters={**swagger_ui_default_parameters, "validatorUrl": None},
    )
    return page
