"""The Open Inference Protocol's test gateway: in-process, on a catalog of one app with
two models, and a stub query client in place of the broker. A query goes through the
real selection, dispatch and accounting; the stub answers with the first ten columns of
its inputs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI

from api_gateway.app import create_app
from api_gateway.services import GatewayServices
from api_gateway.settings import GatewaySettings
from queues.messages import Query, Reply
from registry.livestate import ACTIVE
from registry.types import App, InputSignature, Model
from tests import factories as f

SIGNATURE = InputSignature("x", "float32", (-1, 64))
SVC = "digits-svc.onnx-fp32.cpu"
MLP = "digits-mlp.onnx-fp32.cpu"


class StubClient:
    """Answers every query at once with its inputs' first ten columns (as float32)."""

    def __init__(self) -> None:
        self.queries: list[Query] = []

    @property
    def connected(self) -> bool:
        return True

    messages_sent = 0
    queries_sent = 0

    @property
    def expired_answered(self) -> int:
        return 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def call(
        self, queue: str, query: Query, *, timeout_s: float, pack_rows: int = 0
    ) -> Reply:
        self.queries.append(query)
        outputs = np.ascontiguousarray(query.inputs[:, :10], dtype=np.float32)
        return Reply(query.request_id, True, outputs, model_ms=1.0, batch_size=len(outputs))


def oip_app(tmp_path: Path, **settings: Any) -> FastAPI:
    """The gateway on one app, two models, their variants on one worker, a stub client."""
    gateway = GatewaySettings(**({"freeze_heap": False, "auth": False} | settings))
    base = f.gateway_state(tmp_path, gateway).services
    catalog = base.catalog
    catalog.create_app(App("digits", "classification", SIGNATURE, num_classes=10))
    catalog.add_model(Model("digits-svc", "digits", "onnx", "m/svc.onnx", "v.npz", "probs"))
    catalog.add_model(Model("digits-mlp", "digits", "onnx", "m/mlp.onnx", "v.npz"))
    catalog.upsert_variant(f.variant(SVC, 0.97, 2.0))
    catalog.upsert_variant(f.variant(MLP, 0.90, 1.0))
    base.live.put_worker(f.worker("w1", {SVC: ACTIVE, MLP: ACTIVE}))
    services = GatewayServices(base.broker, catalog, base.live, StubClient())
    return create_app(gateway, services)


def call(app: FastAPI, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def send() -> httpx.Response:
        await app.state.infaas.refresh(force=True)
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            return await http.request(method, path, **kwargs)

    return asyncio.run(send())


def tensor(rows: int = 2, **changes: Any) -> dict[str, Any]:
    data = np.arange(rows * 64, dtype=np.float32).reshape(rows, 64) / 100
    return {"name": "x", "shape": [rows, 64], "datatype": "FP32", "data": data.tolist()} | changes


def oip_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"], str), body
    assert response.headers["x-infaas-error"] == code
    return str(body["error"])
