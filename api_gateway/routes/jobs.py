"""Batch jobs: submit (JSON naming an input location, or multipart with an uploaded
``.npz``), follow, list, cancel.

A submission is checked completely before it is accepted (input readable and fitting the
app, output writable, a variant that reaches the accuracy floor by the deadline within the
cost cap); a refused one changes nothing. An ``Idempotency-Key`` header makes a retried
submission answer with the job it created the first time.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import FormData, UploadFile

from api_gateway.deps import State, Tenant, TenantContext
from api_gateway.jobs_dispatch import Submission
from api_gateway.json_body import JSONBodyRoute
from api_gateway.responses import JSONResponse
from api_gateway.upload_limits import MB, UploadLimit
from queues.errors import InvalidRequest, UnknownJob
from registry.jobs import Job, check_status_filter, job_summary, job_view
from registry.types import utcnow

router = APIRouter(tags=["batch jobs"], route_class=JSONBodyRoute)

_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
FORM_FILE = "inputs"


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    app: str = Field(min_length=1, max_length=64, description="the app whose models run the job")
    input: str | None = Field(
        default=None,
        description="s3://BUCKET/PREFIX: every .npz there (each with an array 'inputs' of "
        "shape [n, ...]); not with an uploaded file",
    )
    output: str = Field(description="s3://BUCKET/PREFIX: outputs go to PREFIX/<job_id>/")
    min_accuracy: float = Field(ge=0, le=1, description="accuracy floor of the variant")
    deadline: AwareDatetime | None = Field(
        default=None, description="finish by (RFC 3339 with a time zone)"
    )
    max_cost_usd: float | None = Field(default=None, gt=0, description="for the whole job")
    chunk_items: int | None = Field(
        default=None, ge=1, le=1_000_000, description="items per chunk (default 1000)"
    )


_SUBMIT_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": JobRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["app", "output", "min_accuracy", FORM_FILE],
                    "properties": {
                        FORM_FILE: {"type": "string", "format": "binary"},
                        "app": {"type": "string"},
                        "output": {"type": "string"},
                        "min_accuracy": {"type": "number"},
                        "deadline": {"type": "string"},
                        "max_cost_usd": {"type": "number"},
                        "chunk_items": {"type": "integer"},
                    },
                }
            },
        },
    }
}


def _check_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not _KEY_RE.match(key):
        raise InvalidRequest(
            "the Idempotency-Key header must be 1-255 visible ASCII characters, e.g. a UUID"
        )
    return key


def _validated(data: dict[str, Any] | bytes) -> JobRequest:
    try:
        if isinstance(data, bytes):
            return JobRequest.model_validate_json(data)
        return JobRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


def _save_upload(form: FormData, dest: Path) -> str:
    """Copy the uploaded file to ``dest``; returns its SHA-256."""
    value = form.get(FORM_FILE)
    if not isinstance(value, UploadFile):
        raise InvalidRequest(
            f"the upload has no file {FORM_FILE!r}; send the inputs as a .npz file "
            f"(curl -F {FORM_FILE}=@inputs.npz -F app=... -F output=s3://... "
            "-F min_accuracy=...)"
        )
    digest = hashlib.sha256()
    value.file.seek(0)
    with dest.open("wb") as out:
        while block := value.file.read(MB):
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def _form_fields(form: FormData) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, value in form.multi_items():
        if name == FORM_FILE:
            continue
        if not isinstance(value, str):
            raise InvalidRequest(
                f"unknown file {name!r}; send the inputs as the one file {FORM_FILE!r}"
            )
        if name == "input":
            raise InvalidRequest(
                "give either an input location (JSON) or an uploaded file (multipart), not both"
            )
        if value.strip():
            fields[name] = value.strip()
    return fields


def _submission(body: JobRequest, tenant: TenantContext, key: str | None) -> Submission:
    return Submission(
        tenant=tenant.tenant,
        app=body.app,
        input=body.input,
        output=body.output,
        min_accuracy=body.min_accuracy,
        deadline=body.deadline,
        max_cost_usd=body.max_cost_usd,
        chunk_items=body.chunk_items,
        idempotency_key=key,
    )


def _accepted(job: Job, replayed: bool) -> JSONResponse:
    status_url = f"/v1/jobs/{job.id}"
    body = {
        "job_id": job.id,
        "status_url": status_url,
        "status": job.status,
        "app": job.app,
        "variant": job.variant,
        "items_total": job.items_total,
        "chunks_total": job.chunks_total,
        "estimate": job.estimate,
        "replayed": replayed,
    }
    headers = {"Location": status_url}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body, status_code=202, headers=headers)


@router.post(
    "/v1/jobs",
    status_code=202,
    summary="Submit a batch job: inputs in the object store (JSON) or uploaded (multipart)",
    openapi_extra=_SUBMIT_DOC,
)
async def submit_job(
    request: Request,
    state: State,
    tenant: Tenant,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    key = _check_key(idempotency_key)
    dispatcher = state.jobs
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        limit = UploadLimit(
            int(dispatcher.settings.max_upload_mb * MB),
            "INFAAS_JOB_MAX_UPLOAD_MB",
            "put large inputs in the object store and give their s3:// location instead",
        )
        with tempfile.TemporaryDirectory(prefix="infaas-job-upload-") as tmp:
            form = await limit.read_form(request, max_files=1)
            try:
                path = Path(tmp) / "inputs.npz"
                digest = await asyncio.to_thread(_save_upload, form, path)
                body = _validated(_form_fields(form))
            finally:
                await form.close()
            sub = replace(_submission(body, tenant, key), upload=path, upload_sha256=digest)
            job, replayed = await asyncio.to_thread(dispatcher.submit, sub)
        tenant.audit_target(f"job={job.id} app={job.app}")
        return _accepted(job, replayed)
    if content_type and not content_type.startswith("application/json"):
        raise InvalidRequest(
            "send the job as JSON (content-type application/json) naming an s3:// input, "
            "or as multipart/form-data with the file 'inputs'"
        )
    body = _validated(await request.body())
    if body.input is None:
        raise InvalidRequest(
            'give the input location ("input": "s3://BUCKET/PREFIX"), or upload a .npz '
            "as multipart/form-data with the file 'inputs'"
        )
    job, replayed = await asyncio.to_thread(dispatcher.submit, _submission(body, tenant, key))
    tenant.audit_target(f"job={job.id} app={job.app}")
    return _accepted(job, replayed)


def _check_owner(job: Job, tenant: TenantContext) -> None:
    if job.tenant != tenant.tenant:
        raise UnknownJob(f"job {job.id!r} does not exist; GET /v1/jobs lists your jobs")


async def _own_job(state: State, tenant: TenantContext, job_id: str) -> Job:
    job = await asyncio.to_thread(state.jobs.jobs.get, job_id)
    _check_owner(job, tenant)
    return job


@router.get("/v1/jobs/{job_id}", summary="A job's status, progress, cost so far and outputs")
async def get_job(job_id: str, state: State, tenant: Tenant) -> JSONResponse:
    job, chunks = await asyncio.to_thread(state.jobs.jobs.get_with_chunks, job_id)
    _check_owner(job, tenant)
    return JSONResponse(job_view(job, chunks, utcnow()))


@router.get("/v1/jobs", summary="Jobs, newest first")
async def list_jobs(
    state: State,
    tenant: Tenant,
    app: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> JSONResponse:
    check_status_filter(status)
    found = await asyncio.to_thread(
        state.jobs.jobs.recent, tenant=tenant.tenant, app=app, status=status, limit=limit
    )
    return JSONResponse({"jobs": [job_summary(job, progress) for job, progress in found]})


@router.post("/v1/jobs/{job_id}/cancel", summary="Cancel a queued or running job")
async def cancel_job(job_id: str, state: State, tenant: Tenant) -> JSONResponse:
    await _own_job(state, tenant, job_id)
    await asyncio.to_thread(state.jobs.jobs.cancel, job_id)
    job, chunks = await asyncio.to_thread(state.jobs.jobs.get_with_chunks, job_id)
    return JSONResponse(job_view(job, chunks, utcnow()))
