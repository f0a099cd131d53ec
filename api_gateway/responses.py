"""Fast JSON responses and the one renderer of every error."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from queues.errors import (
    BodyTooLarge,
    InfaasError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    Unavailable,
)

log = logging.getLogger(__name__)


class JSONResponse(Response):
    """orjson, numpy arrays included."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(error: InfaasError) -> JSONResponse:
    return JSONResponse(error.to_dict(), status_code=error.status_code, headers=error.headers)


async def infaas_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InfaasError)
    return error_response(exc)


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    if error.get("type") == "json_invalid":
        return f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})"
    if error.get("type") == "extra_forbidden":
        return f"unknown field {where!r}"
    return f"{where or 'body'}: {error.get('msg', 'invalid')}"


def validation_error(exc: RequestValidationError) -> InvalidRequest:
    problems = [_describe(dict(e)) for e in exc.errors()]
    return InvalidRequest("invalid request: " + "; ".join(problems[:5]))


async def validation_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(validation_error(exc))


def http_error(request: Request, exc: HTTPException) -> InfaasError:
    """Starlette's and FastAPI's own refusals (no route, wrong method, a body they could
    not parse), as errors of the tree."""
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    where = f"{request.method} {request.url.path}"
    error: InfaasError
    if exc.status_code == 404:
        error = NotFound(f"no route {where}; GET /docs lists the routes")
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        error = MethodNotAllowed(
            f"{where} is not allowed; this route takes {allowed or 'other methods'}",
            headers={"Allow": allowed} if allowed else None,
        )
    elif exc.status_code == 413:
        error = BodyTooLarge(f"the request body is too large ({detail})")
    elif exc.status_code == 503:
        error = Unavailable(detail)
    elif 400 <= exc.status_code < 500:
        error = InvalidRequest(f"{where}: {detail}")
    else:
        error = InfaasError(f"{where} failed: {detail}; please report it")
    return error


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(http_error(request, exc))


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    """Any exception no other handler took: logged with its trace, answered as
    ``internal_error`` (never a bare text/plain 500)."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(
        InfaasError(
            f"the gateway failed on {request.method} {request.url.path} "
            f"({type(exc).__name__}); this is a bug: please report it"
        )
    )
