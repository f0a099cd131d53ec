"""A small Python client of the gateway's HTTP API."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np

from queues.errors import InfaasError, error_from_code

DEFAULT_URL = "http://127.0.0.1:8080"


def default_url() -> str:
    return os.environ.get("INFAAS_URL", DEFAULT_URL)


def default_api_key() -> str | None:
    return os.environ.get("INFAAS_API_KEY") or None


def given(**values: Any) -> dict[str, Any]:
    """The values given, without those left unset (None)."""
    return {key: value for key, value in values.items() if value is not None}


def form_fields(**values: Any) -> dict[str, str]:
    """Multipart form fields: the values given, as text."""
    return {key: str(value) for key, value in given(**values).items()}


def poll_until(
    fetch: Callable[[], dict[str, Any]],
    done: Callable[[dict[str, Any]], bool],
    timed_out: Callable[[dict[str, Any]], str],
    *,
    timeout_s: float | None,
    poll_s: float,
    on_progress: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    """``fetch()`` every ``poll_s`` until ``done`` says so (its last answer), or
    InfaasError with ``timed_out``'s message once ``timeout_s`` has passed (None: never)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        state = fetch()
        if on_progress is not None:
            on_progress(state)
        if done(state):
            return state
        if deadline is not None and time.monotonic() > deadline:
            raise InfaasError(timed_out(state))
        time.sleep(poll_s)


class InfaasClient:
    def __init__(
        self, url: str | None = None, *, timeout_s: float = 60.0, api_key: str | None = None
    ) -> None:
        """``api_key``: sent as ``Authorization: Bearer``; default ``$INFAAS_API_KEY``."""
        self.url = (url or default_url()).rstrip("/")
        key = api_key or default_api_key()
        headers = {"Authorization": f"Bearer {key}"} if key else None
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, headers=headers)

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
        timeout_ms: float | None = None,
        explain: bool = False,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"inputs": np.asarray(inputs).tolist()}
        for key, value in (
            ("latency_ms", latency_ms),
            ("min_accuracy", min_accuracy),
            ("max_cost_per_hour", max_cost_per_hour),
            ("timeout_ms", timeout_ms),
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
        return cast(dict[str, Any], self._call("POST", f"/v1/models/{model}/infer", json=body))

    def infer_variant(self, variant: str, inputs: np.ndarray | list[Any]) -> dict[str, Any]:
        body = {"inputs": np.asarray(inputs).tolist()}
        return cast(dict[str, Any], self._call("POST", f"/v1/variants/{variant}/infer", json=body))

    def apps(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/v1/apps")["apps"]
        return result

    def app(self, app: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._call("GET", f"/v1/apps/{app}"))

    # -- registration

    def create_app(
        self,
        app: str,
        *,
        input_name: str,
        dtype: str,
        shape: Sequence[int],
        num_classes: int | None = None,
        task: str = "classification",
        output_kind: str = "probabilities",
        description: str = "",
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": app,
            "task": task,
            "input": {"name": input_name, "dtype": dtype, "shape": list(shape)},
            "output_kind": output_kind,
            "description": description,
        }
        if num_classes is not None:
            body["num_classes"] = num_classes
        return cast(dict[str, Any], self._call("POST", "/v1/apps", json=body))

    def delete_app(self, app: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._call("DELETE", f"/v1/apps/{app}"))

    def register_model(
        self,
        app: str,
        model_path: Path | str,
        validation_path: Path | str,
        *,
        model_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        hardware: Sequence[str] | None = None,
        budget_s_per_batch: float | None = None,
        batch_sizes: Sequence[int] | None = None,
        output: str | None = None,
        model_format: str | None = None,
        create_app: bool = False,
        num_classes: int | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Upload a model and its validation set; answers at once (202) with the
        registration to follow with :meth:`registration` or :meth:`wait_for_registration`.

        ``create_app``: when the app does not exist, the gateway makes it from the
        model's input (``num_classes``, ``description`` for it) together with the model,
        so a refused upload leaves no app behind; ``app_created`` in the answer says so."""
        fields = form_fields(
            id=model_id,
            metadata=json.dumps(metadata) if metadata is not None else None,
            hardware=",".join(hardware) if hardware else None,
            budget_s_per_batch=budget_s_per_batch,
            batch_sizes=",".join(str(b) for b in batch_sizes) if batch_sizes else None,
            output=output,
            format=model_format,
            num_classes=num_classes,
            description=description or None,
        )
        model_file, validation_file = Path(model_path), Path(validation_path)
        with model_file.open("rb") as model_data, validation_file.open("rb") as validation_data:
            result: dict[str, Any] = self._call(
                "POST",
                f"/v1/apps/{app}/models",
                params={"create_app": "true"} if create_app else None,
                data=fields,
                files={
                    "model": (model_file.name, model_data, "application/octet-stream"),
                    "validation": (
                        validation_file.name,
                        validation_data,
                        "application/octet-stream",
                    ),
                },
            )
        return result

    def registration(self, registration_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._call("GET", f"/v1/registrations/{registration_id}"))

    def wait_for_registration(
        self,
        registration_id: str,
        *,
        timeout_s: float = 1800.0,
        poll_s: float = 0.5,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until every hardware's task finished; returns the last progress."""
        return poll_until(
            lambda: self.registration(registration_id),
            lambda progress: bool(progress["finished"]),
            lambda progress: (
                f"registration {registration_id} did not finish within {timeout_s:g} s "
                f"(status {progress['status']}); is a worker of each hardware running?"
            ),
            timeout_s=timeout_s,
            poll_s=poll_s,
            on_progress=on_progress,
        )

    def delete_model(self, app: str, model: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._call("DELETE", f"/v1/apps/{app}/models/{model}"))

    # -- batch jobs

    def submit_job(
        self,
        app: str,
        *,
        output: str,
        min_accuracy: float,
        input_url: str | None = None,
        upload: Path | str | None = None,
        deadline: datetime | str | None = None,
        max_cost_usd: float | None = None,
        chunk_items: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Submit a batch job over ``input_url`` (s3://BUCKET/PREFIX) or an uploaded .npz
        (``upload``); answers at once (202) with the job id to follow."""
        if (input_url is None) == (upload is None):
            raise InfaasError("give either input_url (s3://BUCKET/PREFIX) or upload (a .npz)")
        when = deadline.isoformat() if isinstance(deadline, datetime) else deadline
        fields = given(
            app=app,
            output=output,
            min_accuracy=min_accuracy,
            deadline=when,
            max_cost_usd=max_cost_usd,
            chunk_items=chunk_items,
        )
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        if upload is None:
            result: dict[str, Any] = self._call(
                "POST", "/v1/jobs", json={**fields, "input": input_url}, headers=headers
            )
            return result
        path = Path(upload)
        with path.open("rb") as data:
            uploaded: dict[str, Any] = self._call(
                "POST",
                "/v1/jobs",
                data=form_fields(**fields),
                files={"inputs": (path.name, data, "application/octet-stream")},
                headers=headers,
            )
        return uploaded

    def job(self, job_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._call("GET", f"/v1/jobs/{job_id}"))

    def jobs(
        self, *, app: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        params = given(limit=limit, app=app, status=status)
        result: list[dict[str, Any]] = self._call("GET", "/v1/jobs", params=params)["jobs"]
        return result

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._call("POST", f"/v1/jobs/{job_id}/cancel"))

    def wait_for_job(
        self,
        job_id: str,
        *,
        timeout_s: float | None = None,
        poll_s: float = 0.5,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job succeeded, failed or was cancelled; returns its last status."""
        return poll_until(
            lambda: self.job(job_id),
            lambda status: status["status"] in ("succeeded", "failed", "cancelled"),
            lambda status: (
                f"job {job_id} did not finish within {timeout_s or 0:g} s (status "
                f"{status['status']}, {status['progress']['items_done']} of "
                f"{status['progress']['items_total']} items); is a worker running?"
            ),
            timeout_s=timeout_s,
            poll_s=poll_s,
            on_progress=on_progress,
        )

    # -- keys and audit (admin)

    def create_key(self, tenant: str, role: str, *, note: str = "") -> dict[str, Any]:
        """A new API key; ``key`` in the answer is its secret, shown this once."""
        body = given(tenant=tenant, role=role, note=note)
        return cast(dict[str, Any], self._call("POST", "/v1/keys", json=body))

    def keys(self, *, revoked: bool = False) -> list[dict[str, Any]]:
        params = {"revoked": "true"} if revoked else None
        result: list[dict[str, Any]] = self._call("GET", "/v1/keys", params=params)["keys"]
        return result

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._call("DELETE", f"/v1/keys/{key_id}"))

    def audit(self, *, limit: int = 100, tenant: str | None = None) -> list[dict[str, Any]]:
        params = given(limit=limit, tenant=tenant)
        result: list[dict[str, Any]] = self._call("GET", "/v1/audit", params=params)["records"]
        return result

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False
