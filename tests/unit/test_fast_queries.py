"""The query routes' fast path (api_gateway/fast_queries.py), /v1 and the Open Inference
Protocol's /v2 infer, answers exactly as FastAPI's routes do: every request below gets
the same status, headers that matter and body (timings and ids aside) with the fast path
on and off, and the common queries are really answered by the fast path, the rest handed
on to FastAPI."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from starlette.types import Message

from api_gateway import fast_queries
from api_gateway.routes.infer import answer_v1
from api_gateway.routes.oip import answer_v2
from registry.keys import KeyStore, Role
from tests.oip_support import MLP, SVC, oip_app
from tests.oip_support import call as oip_call

ROWS = (np.arange(2 * 64, dtype=np.float32).reshape(2, 64) / 100).tolist()
VARYING = {"elapsed_ms", "model_ms", "request_id"}

# name: (path, JSON body or raw bytes, headers, answered by the fast path)
REQUESTS: dict[str, tuple[str, Any, dict[str, str], bool]] = {
    "model-less": ("/v1/apps/digits/infer", {"inputs": ROWS, "latency_ms": 50}, {}, True),
    "model-less needs": (
        "/v1/apps/digits/infer",
        {"inputs": ROWS, "min_accuracy": 0.95, "max_cost_per_hour": 5, "timeout_ms": 900},
        {},
        True,
    ),
    "model": ("/v1/models/digits-mlp/infer", {"inputs": ROWS}, {}, True),
    "variant": (f"/v1/variants/{SVC}/infer", {"inputs": ROWS}, {}, True),
    "unknown app": ("/v1/apps/nope/infer", {"inputs": ROWS}, {}, True),
    "unknown variant": ("/v1/variants/nope/infer", {"inputs": ROWS}, {}, True),
    "no variant meets it": ("/v1/apps/digits/infer", {"inputs": ROWS, "min_accuracy": 1}, {}, True),
    "wrong row width": ("/v1/apps/digits/infer", {"inputs": [[1.0, 2.0]]}, {}, True),
    "no rows": ("/v1/apps/digits/infer", {"inputs": []}, {}, True),
    "bad JSON": ("/v1/apps/digits/infer", b'{"inputs": [', {}, True),
    "explain": ("/v1/apps/digits/infer?explain=true", {"inputs": ROWS}, {}, False),
    "unknown field": ("/v1/apps/digits/infer", {"inputs": ROWS, "latency": 5}, {}, False),
    "out of range": ("/v1/apps/digits/infer", {"inputs": ROWS, "latency_ms": -1}, {}, False),
    "no inputs": ("/v1/models/digits-mlp/infer", {"latency_ms": 5}, {}, False),
    "a list": ("/v1/apps/digits/infer", [1, 2], {}, False),
    "empty body": ("/v1/apps/digits/infer", b"", {}, False),
    "text body": ("/v1/apps/digits/infer", b"hello", {"content-type": "text/plain"}, False),
    "model field on a variant": (
        f"/v1/variants/{MLP}/infer",
        {"inputs": ROWS, "latency_ms": 5},
        {},
        False,
    ),
}


def _send(app: FastAPI, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    async def go() -> httpx.Response:
        await app.state.infaas.refresh(force=True)
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            if isinstance(body, bytes):
                sent = {"content-type": "application/json"} | headers
                return await http.post(path, content=body, headers=sent)
            return await http.post(path, json=body, headers=headers)

    return asyncio.run(go())


def _seen(response: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    body = response.json()
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in VARYING}
    kept = {k: v for k, v in response.headers.items() if k.startswith("x-infaas") or k in (
        "content-type", "retry-after", "allow"
    )}  # fmt: skip
    return response.status_code, body, kept


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names queried through the fast path's own answer (FastAPI's routes call the
    same function through another module's name, which this does not count)."""
    calls: list[str] = []

    async def spy(state: Any, caller: Any, name: str, body: Any, *, explain: bool) -> Any:
        calls.append(name)
        return await answer_v1(state, caller, name, body, explain=explain)

    monkeypatch.setattr(fast_queries, "answer_v1", spy)
    return calls


@pytest.mark.parametrize("case", sorted(REQUESTS))
def test_the_fast_path_answers_as_fastapi_does(
    case: str, tmp_path: Path, counted: list[str]
) -> None:
    path, body, headers, fast = REQUESTS[case]
    on = _send(oip_app(tmp_path / "on"), path, body, headers)
    answered_fast = bool(counted)
    off = _send(oip_app(tmp_path / "off", query_fast_path=False), path, body, headers)
    assert _seen(on) == _seen(off), (on.text, off.text)
    if case != "bad JSON":  # refused while parsing, before any answer
        assert answered_fast == fast, f"{case}: answered by the fast path: {answered_fast}"
    assert len(counted) == int(answered_fast)  # the app with it off never used it


def test_a_body_over_the_limit_is_refused_alike(tmp_path: Path) -> None:
    body = {"inputs": [[0.5] * 64] * 3000}  # ~0.6 MB
    on = _send(oip_app(tmp_path / "on", max_body_mb=0.1), "/v1/apps/digits/infer", body, {})
    off = _send(
        oip_app(tmp_path / "off", max_body_mb=0.1, query_fast_path=False),
        "/v1/apps/digits/infer",
        body,
        {},
    )
    assert on.status_code == 413
    assert _seen(on) == _seen(off)


@pytest.mark.parametrize("key", ["none", "wrong", "revoked", "query"])
def test_keys_are_checked_alike(key: str, tmp_path: Path, counted: list[str]) -> None:
    seen = []
    for name, fast_on in (("on", True), ("off", False)):
        app = oip_app(tmp_path / name, auth=True, query_fast_path=fast_on)
        store = KeyStore(app.state.infaas.services.catalog)
        made = store.create("default", Role.QUERY)
        presented = {
            "none": {},
            "wrong": {"X-API-Key": made.key[:-4] + "zzzz"},
            "revoked": {"Authorization": f"Bearer {made.key}"},
            "query": {"Authorization": f"Bearer {made.key}"},
        }[key]
        if key == "revoked":
            store.revoke(made.record.id)
        status, body, headers = _seen(
            _send(app, "/v1/apps/digits/infer", {"inputs": ROWS}, presented)
        )
        if status != 200:  # each app has its own key: its id and revocation time aside
            message = body["error"]["message"].replace(made.record.id, "KEY")
            body["error"]["message"] = re.sub(r"\d{4}-\d\d-\d\dT[\d:.+]+", "TIME", message)
        seen.append((status, body, headers))
    assert seen[0] == seen[1]
    assert seen[0][0] == (200 if key == "query" else 401)
    assert counted == (["digits"] if key == "query" else [])


def test_a_client_gone_before_its_body_gets_no_answer_and_no_error(tmp_path: Path) -> None:
    app = oip_app(tmp_path)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    async def go() -> None:
        await app.state.infaas.refresh(force=True)
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/apps/digits/infer",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json")],
            "app": app,
        }
        await fast_queries.QueryFastPath(app)(scope, receive, send)

    asyncio.run(go())
    assert sent == []


# -- the Open Inference Protocol's two infer routes (issue 23)

V2_ROWS = np.arange(2 * 64, dtype=np.float32).reshape(2, 64) / 100
V2_JSON = {"name": "x", "shape": [2, 64], "datatype": "FP32", "data": V2_ROWS.tolist()}
V2_BINARY = {
    "name": "x",
    "shape": [2, 64],
    "datatype": "FP32",
    "parameters": {"binary_data_size": V2_ROWS.nbytes},
}


def _binary(header: dict[str, Any], raw: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + raw, {
        "Inference-Header-Content-Length": str(len(head)),
        "content-type": "application/octet-stream",
    }


def _v2_binary(header: dict[str, Any]) -> tuple[str, bytes, dict[str, str], bool]:
    body, headers = _binary(header, V2_ROWS.tobytes())
    return "/v2/models/digits/infer", body, headers, True


# name: (path, JSON body or raw bytes, headers, answered by the fast path)
V2_REQUESTS: dict[str, tuple[str, Any, dict[str, str], bool]] = {
    "app": ("/v2/models/digits/infer", {"inputs": [V2_JSON]}, {}, True),
    "app with needs": (
        "/v2/models/digits/infer",
        {"id": "q1", "inputs": [V2_JSON], "parameters": {"latency_ms": 50, "min_accuracy": 0.95}},
        {},
        True,
    ),
    "model": ("/v2/models/digits-mlp/infer", {"inputs": [V2_JSON]}, {}, True),
    "version": (f"/v2/models/digits-svc/versions/{SVC}/infer", {"inputs": [V2_JSON]}, {}, True),
    "binary in": _v2_binary({"inputs": [V2_BINARY]}),
    "binary in and out": _v2_binary(
        {"inputs": [V2_BINARY], "parameters": {"binary_data_output": True}}
    ),
    "unknown model": ("/v2/models/nope/infer", {"inputs": [V2_JSON]}, {}, True),
    "unknown version": ("/v2/models/digits/versions/nope/infer", {"inputs": [V2_JSON]}, {}, True),
    "datatype": (
        "/v2/models/digits/infer",
        {"inputs": [V2_JSON | {"datatype": "INT64"}]},
        {},
        True,
    ),
    "shape": ("/v2/models/digits/infer", {"inputs": [V2_JSON | {"shape": [4, 64]}]}, {}, True),
    "unknown output": (
        "/v2/models/digits/infer",
        {"inputs": [V2_JSON], "outputs": [{"name": "probs"}]},
        {},
        True,
    ),
    "no inputs": ("/v2/models/digits/infer", {"inputs": []}, {}, True),
    "not validated": ("/v2/models/digits/infer", {"inputs": [{"name": "x"}]}, {}, True),
    "bad JSON": ("/v2/models/digits/infer", b'{"inputs": [', {}, True),
    "empty body": ("/v2/models/digits/infer", b"", {}, True),
    "a header that lies": (
        "/v2/models/digits/infer",
        b'{"inputs": []}',
        {"Inference-Header-Content-Length": "999"},
        True,
    ),
    "query string": ("/v2/models/digits/infer?x=1", {"inputs": [V2_JSON]}, {}, False),
    "multipart": (
        "/v2/models/digits/infer",
        b"--b\r\n\r\n--b--",
        {"content-type": "multipart/form-data; boundary=b"},
        False,
    ),
}


@pytest.fixture
def counted_v2(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names queried through the fast path's own ``/v2`` answer."""
    calls: list[str] = []

    async def spy(state: Any, names: Any, name: str, version: Any, body: bytes, length: Any) -> Any:
        calls.append(name)
        return await answer_v2(state, names, name, version, body, length)

    monkeypatch.setattr(fast_queries, "answer_v2", spy)
    return calls


def _seen_v2(response: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    if response.headers.get("content-type") == "application/octet-stream":
        length = int(response.headers["inference-header-content-length"])
        head = json.loads(response.content[:length])
        body: Any = (head, response.content[length:])
    else:
        body = response.json()
    if isinstance(body, tuple):
        body[0].pop("id", None)
    elif isinstance(body, dict) and "outputs" in body:
        body.pop("id", None)  # the request id when the client sends none
    kept = {k: v for k, v in response.headers.items() if k.startswith("x-infaas") or k in (
        "content-type", "inference-header-content-length", "allow"
    )}  # fmt: skip
    return response.status_code, body, kept


@pytest.mark.parametrize("case", sorted(V2_REQUESTS))
def test_the_fast_path_answers_v2_as_fastapi_does(
    case: str, tmp_path: Path, counted_v2: list[str]
) -> None:
    path, body, headers, fast = V2_REQUESTS[case]
    on = _send(oip_app(tmp_path / "on"), path, body, headers)
    off = _send(oip_app(tmp_path / "off", query_fast_path=False), path, body, headers)
    assert _seen_v2(on) == _seen_v2(off), (on.text, off.text)
    assert on.status_code != 500, on.text
    assert bool(counted_v2) == fast, f"{case}: answered by the fast path: {bool(counted_v2)}"
    assert len(counted_v2) == int(fast)  # the app with it off never used it


def test_a_v2_body_over_the_limit_is_refused_alike(tmp_path: Path, counted_v2: list[str]) -> None:
    body = {"inputs": [V2_JSON | {"shape": [3000, 64], "data": [0.5] * 64 * 3000}]}
    seen = []
    for name, fast_on in (("on", True), ("off", False)):
        app = oip_app(tmp_path / name, max_body_mb=0.1, query_fast_path=fast_on)
        seen.append(_seen_v2(_send(app, "/v2/models/digits/infer", body, {})))
    assert seen[0] == seen[1]
    assert seen[0][0] == 413
    assert seen[0][2]["x-infaas-error"] == "body_too_large"
    assert counted_v2 == []  # refused before the answer


@pytest.mark.parametrize("key", ["none", "wrong", "query"])
def test_v2_keys_are_checked_alike(key: str, tmp_path: Path, counted_v2: list[str]) -> None:
    seen = []
    for name, fast_on in (("on", True), ("off", False)):
        app = oip_app(tmp_path / name, auth=True, query_fast_path=fast_on)
        made = KeyStore(app.state.infaas.services.catalog).create("default", Role.QUERY)
        presented = {
            "none": {},
            "wrong": {"X-API-Key": made.key[:-4] + "zzzz"},
            "query": {"Authorization": f"Bearer {made.key}"},
        }[key]
        seen.append(
            _seen_v2(_send(app, "/v2/models/digits/infer", {"inputs": [V2_JSON]}, presented))
        )
    assert seen[0] == seen[1]
    assert seen[0][0] == (200 if key == "query" else 401)
    assert counted_v2 == (["digits"] if key == "query" else [])


@pytest.mark.parametrize("opentelemetry", [False, True])
def test_fastapis_telemetry_check_runs_only_when_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opentelemetry: bool
) -> None:
    """FastAPI asks OpenTelemetry on every request whether a tracer provider is set up;
    the gateway turns that off unless ``INFAAS_OPENTELEMETRY`` is true."""
    from opentelemetry import trace

    asked: list[int] = []
    real = trace.get_tracer_provider

    def counting() -> Any:
        asked.append(1)
        return real()

    monkeypatch.setattr(trace, "get_tracer_provider", counting)
    app = oip_app(tmp_path, opentelemetry=opentelemetry)
    response = oip_call(app, "POST", "/v1/apps/digits/infer", json={"inputs": ROWS})
    assert response.status_code == 200
    assert bool(asked) is opentelemetry
