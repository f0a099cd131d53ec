"""Every error a route can answer is in the OpenAPI document (api_gateway/openapi_doc.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from api_gateway.openapi_doc import (
    ERROR_SCHEMA,
    OIP_ERROR_SCHEMA,
    GatewayApp,
    add_error_responses,
    error_statuses,
    inline_schema,
)


def test_a_public_probe_answers_only_unavailable() -> None:
    assert error_statuses("get", "/healthz", has_params=False, has_body=False) == [503]


def test_a_query_route_documents_keys_names_bodies_and_overload() -> None:
    statuses = error_statuses("post", "/v1/apps/{app}/infer", has_params=False, has_body=True)
    assert statuses == [401, 403, 404, 409, 413, 422, 429, 502, 503, 504]


def test_the_protocol_says_400_where_v1_says_422() -> None:
    statuses = error_statuses("post", "/v2/models/{name}/infer", has_params=False, has_body=True)
    assert 400 in statuses
    assert 422 not in statuses


def _schema() -> dict[str, Any]:
    return {
        "paths": {
            "/v1/apps/{app}": {
                "get": {"responses": {"200": {"description": "ok"}}},
                "delete": {
                    "responses": {
                        "200": {"description": "ok"},
                        "422": {"description": "FastAPI's HTTPValidationError"},
                    }
                },
            },
            "/v2/models/{name}/ready": {"get": {"responses": {"200": {"description": "ok"}}}},
        }
    }


def _ref(schema: dict[str, Any], path: str, method: str, status: int) -> str:
    response = schema["paths"][path][method]["responses"][str(status)]
    ref: str = response["content"]["application/json"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[-1]


def test_errors_are_added_in_the_contract_of_their_api() -> None:
    schema = add_error_responses(_schema())
    assert {ERROR_SCHEMA, OIP_ERROR_SCHEMA} <= set(schema["components"]["schemas"])
    assert _ref(schema, "/v1/apps/{app}", "get", 404) == ERROR_SCHEMA
    # FastAPI's own 422 is replaced by the error contract
    assert _ref(schema, "/v1/apps/{app}", "delete", 422) == ERROR_SCHEMA
    assert _ref(schema, "/v2/models/{name}/ready", "get", 404) == OIP_ERROR_SCHEMA
    # a refused key answers in the gateway's own shape, /v2 included
    assert _ref(schema, "/v2/models/{name}/ready", "get", 401) == ERROR_SCHEMA
    # what a route documents itself is kept
    assert schema["paths"]["/v1/apps/{app}"]["get"]["responses"]["200"] == {"description": "ok"}


class _Inner(BaseModel):
    name: str


class _Outer(BaseModel):
    items: list[_Inner] = Field(min_length=1)


def test_inline_schema_leaves_no_reference_behind() -> None:
    schema = inline_schema(_Outer)
    assert "$defs" not in schema
    assert "$ref" not in str(schema)
    assert schema["properties"]["items"]["items"]["properties"]["name"]["type"] == "string"
    assert schema["properties"]["items"]["minItems"] == 1


def test_the_app_builds_its_document_once() -> None:
    app = GatewayApp(title="t", version="1")

    @app.get("/v1/apps/{app}")
    async def get_app(app: str) -> dict[str, str]:
        return {"app": app}

    first = app.openapi()
    assert "404" in first["paths"]["/v1/apps/{app}"]["get"]["responses"]
    assert app.openapi() is first
