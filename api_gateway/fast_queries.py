"""The three ``/v1`` query routes without FastAPI's routing, dependency resolution and
exception middleware (issue 27).

Profiled at 32 clients, half of the gateway's CPU per query went to FastAPI, Starlette
and uvicorn, and the largest parts were the middleware stack (21 %) and resolving each
route's dependencies (17 %): work that a query, which has one body model, one access
rule and no dependency but its caller, does not need. This ASGI middleware, inside
Starlette's outermost error middleware, answers ``POST /v1/{apps,models,variants}/NAME/infer``
itself with the same parts the routes use: the body within ``INFAAS_MAX_BODY_MB`` and
parsed as ``api_gateway/json_body.py`` parses it, the same pydantic model, the caller
from :func:`api_gateway.deps.caller_of` and its role checked as ``deps.current_tenant``
does, then :func:`api_gateway.routes.infer.answer_v1`, and errors through
:func:`api_gateway.responses.error_response`.

Whatever it does not answer the common way goes on to FastAPI unchanged, with the body
handed on where it was read: any other path or method, a query string (``explain``), a
body that is not a JSON object or that the model refuses. So every refusal but the
ones it shares with the routes (401, 403, 404, 413, bad JSON and the query path's own)
is FastAPI's, word for word. ``INFAAS_QUERY_FAST_PATH=false`` turns it off.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_gateway.access import access_of
from api_gateway.deps import caller_of, check_role
from api_gateway.json_body import is_json, max_body_bytes, parse_json, read_body
from api_gateway.responses import error_response
from api_gateway.routes.infer import BODIES, PATHS, answer_v1
from api_gateway.state import GatewayState
from queues.errors import InfaasError

log = logging.getLogger(__name__)
_QUERY_PATH = re.compile(r"/v1/(apps|models|variants)/([^/]+)/infer")
ACCESS = {kind: access_of("POST", path) for kind, path in PATHS.items()}  # each route's rule


class _ToFastAPI(Exception):
    """Leave this request to FastAPI, with the body already read (None: nothing read)."""

    def __init__(self, body: bytes | None) -> None:
        super().__init__()
        self.body = body


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` that hands over ``body`` first (what was read of the request)."""
    handed = False

    async def replayed() -> Message:
        nonlocal handed
        if not handed:
            handed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class QueryFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found, state = None, None
        if scope["type"] == "http" and scope["method"] == "POST" and not scope["query_string"]:
            found = _QUERY_PATH.fullmatch(scope["path"])
            state = getattr(scope["app"].state, "infaas", None) if found else None
        if found is None or state is None or not state.settings.query_fast_path:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await _answer(state, request, found[1], found[2])
        except _ToFastAPI as leave:
            onward = receive if leave.body is None else _replay(leave.body, receive)
            await self.app(scope, onward, send)
            return
        except InfaasError as exc:
            response = error_response(exc)
        except ClientDisconnect:
            # the client left before its body arrived (it gave up waiting): nobody to answer
            log.debug("%s %s: the client disconnected", scope["method"], scope["path"])
            return
        await response(scope, receive, send)


async def _answer(state: GatewayState, request: Request, kind: str, name: str) -> Any:
    if not is_json(request.headers.get("content-type", "")):
        raise _ToFastAPI(None)
    body = await read_body(request, max_body_bytes(request))
    if not body:
        raise _ToFastAPI(body)
    document = await parse_json(body)
    if not isinstance(document, dict):
        raise _ToFastAPI(body)
    try:
        payload = BODIES[kind].model_validate(document)
    except ValidationError:
        raise _ToFastAPI(body) from None
    access = ACCESS[kind]
    headers = request.headers
    caller = await caller_of(state, access, headers.get("authorization"), headers.get("x-api-key"))
    check_role(caller, access)
    return await answer_v1(state, caller, name, payload, explain=False)
