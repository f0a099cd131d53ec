"""A small Python client of the gateway's HTTP API."""

from __future__ import annotations

import os
from typing import Any

import httpx
import numpy as np

from queues.errors import InfaasError, error_from_code

DEFAULT_URL = "http://127.0.0.1:8080"


def default_url() -> str:
    return os.environ.get("INFAAS_URL", DEFAULT_URL)


class InfaasClient:
    def __init__(self, url: str | None = None, *, timeout_s: float = 60.0) -> None:
        self.url = (url or default_url()).rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s)

    def __enter__(self) -> InfaasClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise InfaasError(f"cannot reach the gateway at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                raise error_from_code(error["code"], error["message"])
            except (ValueError, KeyError, TypeError):
                raise InfaasError(
                    f"gateway answered {response.status_code}: {response.text[:200]}"
                ) from None
        return response.json()

    def infer(
        self,
        app: str,
        inputs: np.ndarray | list[Any],
        *,
        latency_ms: float | None = None,
        min_accuracy: float | None = None,
        max_cost_per_hour: float | None = None,
        explain: bool = False,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"inputs": np.asarray(inputs).tolist()}
        for key, value in (
            ("latency_ms", latency_ms),
            ("min_accuracy", min_accuracy),
            ("max_cost_per_hour", max_cost_per_hour),
        ):
            if value is not None:
                body[key] = value
        params = {"explain": "true"} if explain else None
        result: dict[str, Any] = self._call(
            "POST", f"/v1/apps/{app}/infer", json=body, params=params
        )
        return result

    def infer_model(
        self, model: str, inputs: np.ndarray | list[Any], *, latency_ms: float | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"inputs": np.asarray(inputs).tolist()}
        if latency_ms is not None:
            body["latency_ms"] = latency_ms
        result: dict[str, Any] = self._call("POST", f"/v1/models/{model}/infer", json=body)
        return result

    def infer_variant(self, variant: str, inputs: np.ndarray | list[Any]) -> dict[str, Any]:
        body = {"inputs": np.asarray(inputs).tolist()}
        result: dict[str, Any] = self._call("POST", f"/v1/variants/{variant}/infer", json=body)
        return result

    def apps(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/v1/apps")["apps"]
        return result

    def app(self, app: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/v1/apps/{app}")
        return result

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False
