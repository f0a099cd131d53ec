"""Fast JSON responses and the one renderer of every error."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from queues.errors import InfaasError, InvalidRequest


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


async def validation_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [_describe(dict(e)) for e in exc.errors()]
    error = InvalidRequest("invalid request: " + "; ".join(problems[:5]))
    return error_response(error)
