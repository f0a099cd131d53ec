"""FastAPI dependencies, as ``Annotated`` aliases.

``Tenant`` is the one place authentication plugs in (API keys per tenant come later):
every route that serves or changes anything depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from api_gateway.state import GatewayState


@dataclass(frozen=True, slots=True)
class TenantContext:
    tenant: str


# Both are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a thread
# pool, a thread hop on every query.
async def get_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.infaas
    return state


async def current_tenant() -> TenantContext:
    # No authentication yet: every caller is the default tenant.
    return TenantContext(tenant="default")


State = Annotated[GatewayState, Depends(get_state)]
Tenant = Annotated[TenantContext, Depends(current_tenant)]
