"""Tenants on the query routes that the route-table walk reaches only with dummy bodies:
a real query of each protocol (/v1, the Open Inference Protocol over REST and over gRPC)
finds the caller's own app under its own names, answers in those names, and another
tenant's is the 404 of a name that does not exist (gRPC: NOT_FOUND)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as triton
from fastapi import FastAPI
from tritonclient.utils import InferenceServerException

from api_gateway.grpc_server import grpc_service
from registry.keys import KeyStore, Role
from registry.livestate import ACTIVE
from registry.types import App, Model
from tests import factories as f
from tests.oip_support import MLP, SIGNATURE, SVC, oip_app

ACME_MLP = "acme--" + MLP
ROWS = np.ones((2, 64), dtype=np.float32)


@pytest.fixture
def gateway(tmp_path: Path) -> tuple[FastAPI, dict[str, str]]:
    """The demo's ``digits`` (the default tenant's), and acme's own ``digits``."""
    app = oip_app(tmp_path, grpc_port=0, auth=True)
    state = app.state.infaas
    catalog = state.services.catalog
    catalog.create_app(App("acme--digits", "classification", SIGNATURE, num_classes=10))
    catalog.add_model(Model("acme--digits-mlp", "acme--digits", "onnx", "m/a.onnx", "v.npz"))
    catalog.upsert_variant(f.variant(ACME_MLP, 0.90, 1.0, app="acme--digits"))
    state.services.live.put_worker(f.worker("w2", {ACME_MLP: ACTIVE, SVC: ACTIVE, MLP: ACTIVE}))
    store = KeyStore(catalog)
    keys = {t: store.create(t, Role.QUERY).key for t in ("acme", "beta", "default")}
    return app, keys


def test_rest_queries_find_only_the_callers_own_and_answer_in_its_names(
    gateway: tuple[FastAPI, dict[str, str]],
) -> None:
    app, keys = gateway
    v2 = {"inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32", "data": [0.5] * 128}]}

    async def calls(http: httpx.AsyncClient) -> dict[str, Any]:
        await app.state.infaas.refresh(force=True)

        async def ask(tenant: str, path: str, body: dict[str, Any]) -> httpx.Response:
            return await http.post(path, json=body, headers={"X-API-Key": keys[tenant]})

        v1 = {"inputs": ROWS.tolist()}
        return {
            "acme v1": await ask("acme", "/v1/apps/digits/infer", v1),
            "acme v1 variant": await ask("acme", f"/v1/variants/{MLP}/infer", v1),
            "acme v2": await ask("acme", "/v2/models/digits/infer", v2),
            "acme v2 version": await ask("acme", f"/v2/models/digits/versions/{MLP}/infer", v2),
            "beta v1": await ask("beta", "/v1/apps/digits/infer", v1),
            "beta v1 internal": await ask("beta", "/v1/apps/acme--digits/infer", v1),
            "beta v2": await ask("beta", "/v2/models/digits/infer", v2),
            "beta v2 svc": await ask("beta", f"/v2/models/{SVC}/infer", v2),
            "default v2 acme's": await ask("default", "/v2/models/acme--digits/infer", v2),
        }

    async def main() -> dict[str, Any]:
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            return await calls(http)

    seen = asyncio.run(main())
    ok = {k: r for k, r in seen.items() if k.startswith("acme")}
    assert {k: r.status_code for k, r in ok.items()} == dict.fromkeys(ok, 200)
    assert (seen["acme v1"].json()["app"], seen["acme v1"].json()["variant"]) == ("digits", MLP)
    assert seen["acme v1"].headers["X-Infaas-Variant"] == MLP
    assert seen["acme v2"].json()["model_name"] == "digits-mlp"
    assert seen["acme v2"].json()["model_version"] == MLP
    assert seen["acme v2"].json()["parameters"]["app"] == "digits"
    refused = {k: r.status_code for k, r in seen.items() if not k.startswith("acme")}
    assert refused == dict.fromkeys(refused, 404)
    sent = [q.variant for q in app.state.infaas.services.client.queries]
    assert sent == [ACME_MLP] * 4  # only acme's queries reached a queue, all to its variant


def test_grpc_finds_only_the_callers_own(gateway: tuple[FastAPI, dict[str, str]]) -> None:
    app, keys = gateway

    async def main() -> dict[str, str]:
        state = app.state.infaas
        await state.refresh(force=True)
        async with grpc_service(state, app.version) as server:
            assert server is not None
            client = triton.InferenceServerClient(server.address)
            try:

                async def status(tenant: str, call: Any) -> str:
                    try:
                        answer = await call({"x-api-key": keys[tenant]})
                    except InferenceServerException as exc:
                        return str(exc.status())
                    if hasattr(answer, "get_response"):
                        response = answer.get_response()
                        return f"OK {response.model_name} {response.model_version}"
                    return f"OK {answer}"

                tensor = triton.InferInput("x", [2, 64], "FP32")
                tensor.set_data_from_numpy(ROWS)
                return {
                    "acme infer": await status(
                        "acme", lambda h: client.infer("digits", [tensor], headers=h)
                    ),
                    "acme ready": await status(
                        "acme", lambda h: client.is_model_ready("digits-mlp", headers=h)
                    ),
                    "beta infer": await status(
                        "beta", lambda h: client.infer("digits", [tensor], headers=h)
                    ),
                    "beta metadata": await status(
                        "beta", lambda h: client.get_model_metadata("acme--digits", headers=h)
                    ),
                    "default ready acme's": await status(
                        "default", lambda h: client.is_model_ready("acme--digits-mlp", headers=h)
                    ),
                }
            finally:
                await client.close()

    assert asyncio.run(main()) == {
        "acme infer": f"OK digits-mlp {MLP}",
        "acme ready": "OK True",
        "beta infer": str(grpc.StatusCode.NOT_FOUND),
        "beta metadata": str(grpc.StatusCode.NOT_FOUND),
        "default ready acme's": str(grpc.StatusCode.NOT_FOUND),
    }
