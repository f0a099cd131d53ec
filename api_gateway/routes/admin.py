"""Admin routes: API keys (make, list, revoke), the audit log, and the API docs served
behind the same access rule as every other route."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import HTMLResponse

from api_gateway.deps import State, Tenant
from api_gateway.json_body import JSONBodyRoute
from api_gateway.responses import JSONResponse
from registry.keys import MAX_NOTE_CHARS

router = APIRouter(tags=["admin"], route_class=JSONBodyRoute)


class CreateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(min_length=1, max_length=64, description="the tenant the key acts for")
    role: str = Field(description="query, deploy or admin")
    note: str = Field(default="", max_length=MAX_NOTE_CHARS, description="what the key is for")


@router.post("/v1/keys", status_code=201, summary="Make an API key (its secret is shown once)")
async def create_key(body: CreateKeyRequest, state: State, caller: Tenant) -> JSONResponse:
    made = await asyncio.to_thread(
        state.keys.store.create,
        body.tenant,
        body.role,
        note=body.note,
        created_by=f"key {caller.key_id}" if caller.key_id else "gateway with auth off",
    )
    state.keys.put(made.record)
    caller.audit_target(f"key={made.record.id} tenant={made.record.tenant}")
    return JSONResponse(made.to_dict(), status_code=201)


@router.get("/v1/keys", summary="API keys (never their secrets), oldest first")
async def list_keys(
    state: State,
    _caller: Tenant,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    revoked: Annotated[bool, Query(description="include revoked keys")] = False,
) -> JSONResponse:
    keys = await asyncio.to_thread(state.keys.store.all, include_revoked=revoked)
    shown = [k.to_dict() for k in keys if tenant is None or k.tenant == tenant]
    return JSONResponse({"keys": shown})


@router.delete("/v1/keys/{key_id}", summary="Revoke an API key for good")
async def revoke_key(key_id: str, state: State, _caller: Tenant) -> JSONResponse:
    revoked = await asyncio.to_thread(state.keys.store.revoke, key_id, keep_an_admin=True)
    state.keys.put(revoked)
    return JSONResponse(revoked.to_dict())


@router.get("/v1/audit", summary="The audit log of changes, newest first")
async def audit_log(
    state: State,
    _caller: Tenant,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[int | None, Query(ge=1, description="an id: older records")] = None,
) -> JSONResponse:
    found = await asyncio.to_thread(state.audit.recent, limit=limit, tenant=tenant, before=before)
    return JSONResponse(
        {
            "records": [entry.to_dict() for entry in found],
            "next_before": found[-1].id if len(found) == limit else None,
        }
    )


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request, _caller: Tenant) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs", include_in_schema=False)
async def docs(_caller: Tenant) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="INFaaS gateway")
