"""The query routes (the three of ``/v1`` and the Open Inference Protocol's two
``/v2/models/NAME[/versions/VERSION]/infer``) without FastAPI's routing, dependency
resolution and exception middleware (issues 27 and 23).

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

The ``/v2`` routes take the same steps in the same order as their FastAPI route
(``api_gateway/routes/oip.py``): the body read within the limit, the caller and its role,
then :func:`api_gateway.routes.oip.answer_v2`, with refusals in the protocol's shape
(:func:`api_gateway.routes.oip.in_oip_shape`) except a refused key's, which keeps the
gateway's own on every route.

Whatever it does not answer the common way goes on to FastAPI unchanged, with the body
handed on where it was read: any other path or method, a query string (``explain``), a
``/v1`` body that is not a JSON object or that the model refuses, a multipart body. So
every refusal but the ones it shares with the routes (401, 403, 404, 413, bad JSON and
the query path's own) is FastAPI's, word for word. ``INFAAS_QUERY_FAST_PATH=false``
turns it off.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_gateway.access import access_of, audited
from api_gateway.deps import caller_of, check_role
from api_gateway.json_body import is_json, max_body_bytes, parse_json, read_body
from api_gateway.oip_binary import HEADER_LENGTH
from api_gateway.responses import error_response
from api_gateway.routes.infer import BODIES, PATHS, answer_v1
from api_gateway.routes.oip import V2_PATHS, answer_v2, in_oip_shape
from api_gateway.state import GatewayState
from queues.errors import InfaasError

log = logging.getLogger(__name__)
_QUERY_PATH = re.compile(r"/v1/(apps|models|variants)/([^/]+)/infer")
_V2_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
ACCESS = {kind: access_of("POST", path) for kind, path in PATHS.items()}  # each route's rule
V2_ACCESS = {versioned: access_of("POST", path) for versioned, path in V2_PATHS.items()}


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
        v1, v2, state = None, None, None
        if scope["type"] == "http" and scope["method"] == "POST" and not scope["query_string"]:
            path = scope["path"]
            v1 = _QUERY_PATH.fullmatch(path)
            v2 = None if v1 else _V2_PATH.fullmatch(path)
            if v1 or v2:
                state = getattr(scope["app"].state, "infaas", None)
        if state is None or not state.settings.query_fast_path:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            if v1 is not None:
                response = await _answer(state, request, v1[1], v1[2])
            else:
                assert v2 is not None
                response = await _answer_v2(state, request, v2[1], v2[2])
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


async def _answer_v2(state: GatewayState, request: Request, name: str, version: str | None) -> Any:
    """The steps of the ``/v2`` route class and its dependencies, in their order."""
    headers = request.headers
    access = V2_ACCESS[version is not None]
    if headers.get("content-type", "").lower().startswith("multipart/") or audited("POST", access):
        raise _ToFastAPI(None)

    async def steps() -> Any:
        body = await read_body(request, max_body_bytes(request))
        caller = await caller_of(
            state, access, headers.get("authorization"), headers.get("x-api-key")
        )
        check_role(caller, access)
        return await answer_v2(state, caller.names, name, version, body, headers.get(HEADER_LENGTH))

    return await in_oip_shape(steps())
