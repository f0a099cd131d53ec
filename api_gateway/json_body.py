"""Request bodies within limits, JSON parsed off the event loop.

FastAPI reads a whole body into memory and parses it with ``json.loads`` on the event
loop, with no size limit: one 100 MB body held every other request (``/healthz``
included) for seconds and grew the process by gigabytes. Routes of this class read
the body first, refusing it from its ``Content-Length`` or as soon as the stream runs
past ``INFAAS_MAX_BODY_MB`` (413 ``body_too_large``, before any parsing), then parse
JSON with :mod:`registry.json_limits` (depth first, then orjson; a small body with
fewer brackets in all than the depth allowed skips the depth scan), in a thread when the
body is large, and hand FastAPI the parsed document.

Multipart uploads are left to :mod:`api_gateway.upload_limits` (their limit is the
upload's, and they are streamed to disk, never parsed as JSON).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

import orjson
from fastapi import params
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from api_gateway.upload_limits import MB
from queues.errors import BodyTooLarge, InvalidRequest
from registry import json_limits

OFF_LOOP_BYTES = 256 * 1024  # smaller bodies parse in well under a millisecond
DEFAULT_MAX_BODY_MB = 32.0
_UNPARSED: Any = object()


def too_large(size_bytes: int, limit_bytes: int, *, declared: bool) -> BodyTooLarge:
    size = f"is {size_bytes / MB:.1f} MB" if declared else "runs past the limit"
    return BodyTooLarge(
        f"the request body {size}, more than the limit of {limit_bytes / MB:.1f} MB "
        "(INFAAS_MAX_BODY_MB); send fewer inputs per query, or submit a batch job "
        "(POST /v1/jobs) with the inputs in an .npz",
        details={"max_body_bytes": limit_bytes},
    )


async def read_body(request: Request, limit_bytes: int) -> bytes:
    """The whole body, or :class:`BodyTooLarge` as soon as it is known to exceed the limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit_bytes:
        raise too_large(int(declared), limit_bytes, declared=True)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit_bytes:
            raise too_large(received, limit_bytes, declared=False)
        chunks.append(chunk)
    return b"".join(chunks)


def _shallow(body: bytes) -> bool:
    """A small body with no more brackets in all (inside strings too) than the depth
    allowed: it cannot nest too deep, so the depth scan (most of the parse of a query)
    is not needed."""
    return (
        len(body) <= OFF_LOOP_BYTES
        and body.count(b"[") + body.count(b"{") <= json_limits.MAX_JSON_DEPTH
    )


async def parse_json(body: bytes) -> Any:
    """The document, or a 422 ``invalid_request`` saying why it is refused."""
    if _shallow(body):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # refused below, in json_limits' words
    try:
        if len(body) > OFF_LOOP_BYTES:
            return await asyncio.to_thread(json_limits.loads, body)
        return json_limits.loads(body)
    except json_limits.JSONRefused as exc:
        raise InvalidRequest(f"{exc}; send one JSON object (application/json)") from exc


class ReadRequest(Request):
    """A request whose body was already read (and its JSON, if any, parsed)."""

    def __init__(self, request: Request, body: bytes, parsed: Any = _UNPARSED) -> None:
        super().__init__(request.scope, request.receive)
        self._read_body = body
        self._parsed = parsed

    async def stream(self) -> AsyncGenerator[bytes, None]:
        yield self._read_body
        yield b""

    async def body(self) -> bytes:
        return self._read_body

    async def json(self) -> Any:
        if self._parsed is _UNPARSED:
            self._parsed = await parse_json(self._read_body)
        return self._parsed


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def max_body_bytes(request: Request) -> int:
    state = getattr(request.app.state, "infaas", None)
    limit_mb = state.settings.max_body_mb if state is not None else DEFAULT_MAX_BODY_MB
    return int(limit_mb * MB)


class JSONBodyRoute(APIRoute):
    """A route whose body is read within ``INFAAS_MAX_BODY_MB`` and parsed off the loop."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        field = self.body_field
        takes_json = field is not None and not isinstance(field.field_info, params.Form)

        async def bounded(request: Request) -> Response:
            content_type = request.headers.get("content-type", "")
            if content_type.lower().startswith("multipart/"):
                return await handler(request)
            body = await read_body(request, max_body_bytes(request))
            parsed = _UNPARSED
            if takes_json and body and is_json(content_type):
                parsed = await parse_json(body)
            return await handler(ReadRequest(request, body, parsed))

        return bounded
