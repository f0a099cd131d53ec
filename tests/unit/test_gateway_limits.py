"""Hard limits on JSON bodies and one error contract for every refusal (issue 20).

The gateway app runs in-process (httpx's ASGI transport) on memory services: too large a body is
refused from its declared length or while streaming, before parsing; too deep a body,
a number that overflows a double and malformed JSON are 422s; unknown routes, wrong
methods and unexpected exceptions answer ``{"error": {"code", "message"}}`` too. Each
refusal leaves the catalog as it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from api_gateway.app import create_app
from api_gateway.json_body import OFF_LOOP_BYTES
from api_gateway.routes.registration import _metadata
from api_gateway.settings import GatewaySettings
from queues.errors import InvalidRequest, error_codes
from registry import json_limits
from tests import factories as f

LIMIT_MB = 1.0
JSON = {"content-type": "application/json"}
APP_BODY = {"id": "digits", "task": "classification", "input": {"name": "x", "dtype": "float32"}}


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    settings = GatewaySettings(freeze_heap=False, max_body_mb=LIMIT_MB, auth=False)
    state = f.gateway_state(tmp_path, settings)
    return create_app(settings, state.services)


class Client:
    """Requests to the app in this process, one event loop each."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
                return await http.request(method, path, **kwargs)

        return asyncio.run(send())

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)


@pytest.fixture
def client(app: FastAPI) -> Client:
    return Client(app)


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code, body
    assert error_codes()[code] == status
    return dict(body["error"])


def apps_in(client: Client) -> list[Any]:
    return list(client.app.state.infaas.services.catalog.list_apps())


def test_a_body_over_the_limit_is_refused_from_its_declared_length(client: Client) -> None:
    rows = [[0.5] * 64 for _ in range(10_000)]  # ~2 MB of JSON
    response = client.post("/v1/apps/digits/infer", content=orjson.dumps({"inputs": rows}))
    error = error_of(response, 413, "body_too_large")
    assert "INFAAS_MAX_BODY_MB" in error["message"]
    assert error["details"] == {"max_body_bytes": int(LIMIT_MB * 1024 * 1024)}


def test_a_streamed_body_is_cut_off_past_the_limit(client: Client) -> None:
    chunk = b" " * 65_536

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):  # 4 MB without a Content-Length
            yield chunk

    response = client.post(
        "/v1/apps",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    error_of(response, 413, "body_too_large")
    assert apps_in(client) == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested 100000 levels deep"),
        (b'{"inputs": [[1' + b"0" * 400 + b"]]}", "infinity"),
        (b'{"inputs": [[1e400]]}', "infinity"),
        (b'{"inputs": [[1, 2]', "not valid JSON"),
        (b'{"inputs": [NaN]}', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
    ],
    ids=["deep", "huge-int", "huge-float", "truncated", "nan", "not-utf8"],
)
def test_bodies_that_cannot_be_parsed_are_422(client: Client, body: bytes, words: str) -> None:
    for path in ("/v1/apps/digits/infer", "/v1/apps"):
        response = client.post(path, content=body, headers=JSON)
        assert words in error_of(response, 422, "invalid_request")["message"]
    assert apps_in(client) == []


def test_a_large_body_within_the_limit_is_parsed(client: Client) -> None:
    rows = [[0.5] * 2_000 for _ in range(64)]  # ~500 KB: parsed in a thread
    body = orjson.dumps({"inputs": rows})
    assert OFF_LOOP_BYTES < len(body) < LIMIT_MB * 1024 * 1024
    response = client.post("/v1/apps/digits/infer", content=body, headers=JSON)
    error_of(response, 404, "unknown_app")  # parsed, validated, then the app is looked up


def test_a_pydantic_refusal_keeps_the_contract(client: Client) -> None:
    response = client.post("/v1/apps", json={**APP_BODY, "surprise": 1})
    assert "unknown field" in error_of(response, 422, "invalid_request")["message"]
    assert apps_in(client) == []


def test_an_unknown_route_is_not_found(client: Client) -> None:
    error = error_of(client.get("/v1/nothing-here"), 404, "not_found")
    assert "GET /v1/nothing-here" in error["message"]


def test_a_wrong_method_is_405_with_allow(client: Client) -> None:
    response = client.delete("/v1/apps/digits/infer")
    error = error_of(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]
    assert "POST" in error["message"]


def test_an_unexpected_exception_is_internal_error(app: FastAPI) -> None:
    async def broken() -> None:
        raise KeyError("a bug")

    app.add_api_route("/v1/broken", broken)
    error = error_of(Client(app).get("/v1/broken"), 500, "internal_error")
    assert "KeyError" in error["message"]


def test_metadata_nested_deep_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="metadata is JSON nested 100000 levels deep"):
        _metadata('{"a": ' * 100_000 + "1" + "}" * 100_000)
    assert _metadata('{"source": "[[[[ not a bracket"}') == {"source": "[[[[ not a bracket"}


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"", 0),
        (b"1", 0),
        (b"[]", 1),
        (b'{"a": [[1, 2], {"b": []}]}', 4),
        (b'{"a": "[[[[\\"[[["}', 1),
        (b"[]" * 3_000_000 + b"[[[]]]", 3),
    ],
)
def test_nesting_depth(raw: bytes, depth: int) -> None:
    assert json_limits.nesting_depth(raw) == depth


def test_every_route_reads_its_body_through_the_limit(app: FastAPI) -> None:
    """A router made without the limiting route class would parse any body whole."""
    from fastapi.routing import APIRoute, iter_route_contexts

    from api_gateway.json_body import JSONBodyRoute

    unlimited = [
        context.original_route.path
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
        and not isinstance(context.original_route, JSONBodyRoute)
    ]
    assert unlimited == []
