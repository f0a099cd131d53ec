"""FastAPI dependencies, as ``Annotated`` aliases.

``Tenant`` is the one place authentication plugs in: every route but health depends on
it. It finds the route's rule in :mod:`api_gateway.access`, checks the API key (unless
authentication is off), answers 401 or 403, and writes every change to the audit log
with how it ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError

from api_gateway.access import Open, access_of, audited, presented_key
from api_gateway.state import GatewayState
from queues.errors import Forbidden, InfaasError
from registry.audit import OK, AuditEntry
from registry.keys import Role
from registry.tenancy import DEFAULT_TENANT, Namespace

log = logging.getLogger(__name__)
__all__ = ["DEFAULT_TENANT", "State", "Tenant", "TenantContext"]


@dataclass(frozen=True, slots=True)
class TenantContext:
    """Who calls: the key's tenant and role (with authentication off, the default tenant
    as admin, and no key). A route that creates something names it with
    :meth:`audit_target` so the audit log says what was made."""

    tenant: str
    role: Role = Role.ADMIN
    key_id: str | None = None
    notes: dict[str, str] = field(default_factory=dict, compare=False)

    def audit_target(self, target: str) -> None:
        self.notes["target"] = target

    @property
    def names(self) -> Namespace:
        """The names this caller sees (registry/tenancy.py): its tenant's own, or, for
        an admin, every tenant's under their internal ids."""
        return Namespace(self.tenant, everything=self.role is Role.ADMIN)


# Both are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a thread
# pool, a thread hop on every query.
async def get_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.infaas
    return state


State = Annotated[GatewayState, Depends(get_state)]


async def caller_of(
    state: GatewayState, access: Role | Open, authorization: str | None, x_api_key: str | None
) -> TenantContext:
    """Who presents these credentials (REST headers or gRPC metadata), or Unauthenticated."""
    settings = state.settings
    if not settings.auth_on:
        return TenantContext(tenant=DEFAULT_TENANT)
    if access is Open.PUBLIC or (access is Open.INFO and settings.info_open):
        return TenantContext(tenant=DEFAULT_TENANT, role=Role.QUERY)
    key = await state.keys.authenticate(presented_key(authorization, x_api_key))
    return TenantContext(tenant=key.tenant, role=key.role, key_id=key.id)


async def current_tenant(request: Request, state: State) -> AsyncIterator[TenantContext]:
    route = request.scope.get("route")
    path: str = getattr(route, "path", request.url.path)
    method = request.method
    access = access_of(method, path)
    headers = request.headers
    caller = await caller_of(state, access, headers.get("authorization"), headers.get("x-api-key"))
    if not audited(method, access):
        check_role(caller, access)
        yield caller
        return
    outcome, message = OK, ""
    try:
        check_role(caller, access)
        yield caller
    except InfaasError as exc:
        outcome, message = exc.code, exc.message
        raise
    except RequestValidationError:
        outcome, message = "invalid_request", "the request did not validate"
        raise
    except Exception as exc:
        outcome, message = "internal_error", type(exc).__name__
        raise
    finally:
        params = " ".join(f"{k}={v}" for k, v in sorted(request.path_params.items()))
        entry = AuditEntry(
            tenant=caller.tenant,
            key_id=caller.key_id,
            role=caller.role.value,
            method=method,
            route=path,
            target=caller.notes.get("target", params),
            outcome=outcome,
            message=message,
        )
        try:
            await asyncio.to_thread(state.audit.record, entry)
        except InfaasError as exc:  # the change is made; say loudly that its record is not
            log.error("could not write the audit record %s: %s", entry, exc.message)


def check_role(caller: TenantContext, access: Role | Open) -> None:
    """Forbidden unless the caller's role may call a route of this access rule (an open
    route asks for a query key's role at least)."""
    needed = access if isinstance(access, Role) else Role.QUERY
    if not caller.role.allows(needed):
        raise forbidden(caller, needed)


def forbidden(caller: TenantContext, needed: Role) -> Forbidden:
    return Forbidden(
        f"API key {caller.key_id} has role {caller.role.value}; this route needs "
        f"{needed.value} or more (ask an admin for a key with that role)"
    )


Tenant = Annotated[TenantContext, Depends(current_tenant, scope="function")]
