"""The gateway's OpenAPI document, with every error a route can answer documented.

FastAPI documents a route's success and its request validation only. The gateway answers
far more: 401/403 from the access table (api_gateway/access.py), 404 for a name that
does not exist (or belongs to another tenant), 409, 413, 422, 429 and 503 from the error
tree (queues/errors.py), in the JSON error contract on ``/v1`` and in the Open Inference
Protocol's ``{"error": "..."}`` on ``/v2``. :func:`add_error_responses` adds them to each
operation from the route's path, method and access rule, so that a new route is
documented the same way without anyone remembering to (the schema fuzzing test,
tests/integration/test_api_fuzz.py, checks every answer against this document).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from api_gateway.access import Open, access_of

ERROR_SCHEMA = "Error"
OIP_ERROR_SCHEMA = "OIPError"
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")

_ERROR_COMPONENT: dict[str, Any] = {
    "type": "object",
    "description": "The error contract: a stable code, what was wrong and what to do.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "e.g. unknown_app, queue_full"},
                "message": {"type": "string"},
                "details": {"type": "object"},
            },
        }
    },
}
_OIP_ERROR_COMPONENT: dict[str, Any] = {
    "type": "object",
    "description": "The Open Inference Protocol's error (its code in X-Infaas-Error).",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}

# what each status means, for the document's readers
_WHY: dict[int, str] = {
    400: "the request is malformed or does not fit the model (the protocol's 400)",
    401: "no valid API key (Authorization: Bearer KEY or X-API-Key)",
    403: "the key's role does not allow this route",
    404: "no such name, or it belongs to another tenant",
    409: "conflicts with what exists, or nothing can meet the requirement",
    413: "the body or an upload is over its limit",
    422: "the request is well formed but not valid here (the app's signature, a model "
    "file, a location, a value out of range)",
    429: "a queue is full or a quota is spent; see Retry-After",
    502: "a worker failed the query",
    503: "a service the gateway needs is unavailable; try again",
    504: "the query's deadline passed before an answer",
}


def error_statuses(method: str, path: str, *, has_params: bool, has_body: bool) -> list[int]:
    """The error statuses one operation can answer (pure)."""
    oip = path.startswith("/v2")
    invalid = 400 if oip else 422
    statuses = {503}
    if access_of(method.upper(), path) is not Open.PUBLIC:
        # 404 also where no name is in the path: a name in the body (a job's app), or
        # nothing published yet (the scaler's plan)
        statuses |= {401, 403, 404}
    if has_params or has_body or method in ("post", "put", "delete", "patch"):
        statuses.add(invalid)
    if has_body:
        statuses.add(413)
    if path.endswith("/infer"):
        statuses |= {404, 409, 429, 502, 504}
    elif method in ("post", "delete") and not oip:
        statuses |= {409, 429}
    return sorted(statuses)


def add_error_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every operation's error answers documented (in place, returned)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components[ERROR_SCHEMA] = _ERROR_COMPONENT
    components[OIP_ERROR_SCHEMA] = _OIP_ERROR_COMPONENT
    for path, item in schema.get("paths", {}).items():
        for method, operation in _operations(item):
            _document(method, path, operation)
    return schema


def _operations(item: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    return ((m, op) for m, op in item.items() if m in _METHODS and isinstance(op, dict))


def _document(method: str, path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    # FastAPI's own 422 says HTTPValidationError; ours is the error contract
    responses.pop("422", None)
    body = "requestBody" in operation
    params = bool(operation.get("parameters"))
    oip = path.startswith("/v2")
    for status in error_statuses(method, path, has_params=params, has_body=body):
        # a refused key answers in the gateway's own shape on every route (routes/oip.py)
        ref = OIP_ERROR_SCHEMA if oip and status not in (401, 403) else ERROR_SCHEMA
        responses.setdefault(
            str(status),
            {
                "description": _WHY[status],
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}
                },
            },
        )


class GatewayApp(FastAPI):
    """FastAPI whose OpenAPI document lists every error (built once, then kept)."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = get_openapi(
                title=self.title,
                version=self.version,
                description=self.description,
                routes=self.routes,
            )
            self.openapi_schema = add_error_responses(schema)
        return self.openapi_schema


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A pydantic model's JSON schema with its ``$defs`` inlined, for a request body
    documented by hand (``openapi_extra``), where ``#/$defs/...`` would not resolve."""
    schema = model.model_json_schema()
    defs: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
