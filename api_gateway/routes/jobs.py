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
from api_gateway.state import GatewayState
from api_gateway.upload_limits import MB, UploadLimit
from queues.errors import InfaasError, InvalidRequest, UnknownApp, UnknownJob
from registry.jobs import Job, check_status_filter, job_summary, job_view
from registry.jobs.status import JOB_QUEUED, JOB_RUNNING
from registry.tenancy import Namespace, owner_of
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
    """The job as the dispatcher takes it: its app by internal id, and its tenant the
    app's (an admin's job on another tenant's app is that tenant's)."""
    app = tenant.names.inside(body.app)
    if app is None:
        raise UnknownApp(f"no app named {body.app!r}; GET /v1/apps lists the apps")
    return Submission(
        tenant=owner_of(app),
        app=app,
        input=body.input,
        output=body.output,
        min_accuracy=body.min_accuracy,
        deadline=body.deadline,
        max_cost_usd=body.max_cost_usd,
        chunk_items=body.chunk_items,
        idempotency_key=key,
    )


def _accepted(job: Job, replayed: bool, names: Namespace) -> JSONResponse:
    status_url = f"/v1/jobs/{job.id}"
    body = {
        "job_id": job.id,
        "status_url": status_url,
        "status": job.status,
        "app": names.outside(job.app),
        "variant": names.outside(job.variant) if job.variant else job.variant,
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
    try:
        return await _submit(request, state, tenant, _check_key(idempotency_key))
    except InfaasError as exc:
        tenant.names.shown(exc)
        raise


async def _submit(
    request: Request, state: GatewayState, tenant: TenantContext, key: str | None
) -> JSONResponse:
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
            await _check_jobs_quota(state, sub.tenant)
            job, replayed = await asyncio.to_thread(dispatcher.submit, sub)
        tenant.audit_target(f"job={job.id} app={job.app}")
        return _accepted(job, replayed, tenant.names)
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
    sub = _submission(body, tenant, key)
    await _check_jobs_quota(state, sub.tenant)
    job, replayed = await asyncio.to_thread(dispatcher.submit, sub)
    tenant.audit_target(f"job={job.id} app={job.app}")
    return _accepted(job, replayed, tenant.names)


async def _check_jobs_quota(state: GatewayState, tenant: str) -> None:
    """Refuse a job over ``tenant``'s quota of unfinished jobs (counted in the catalog
    that every gateway shares; two gateways submitting at the same instant may both
    pass, by one job). Not counted without a quota."""
    limit = state.settings.quota_of(tenant).jobs
    if limit is None:
        return
    store = state.jobs.jobs
    unfinished = 0
    for status in (JOB_QUEUED, JOB_RUNNING):
        found = await asyncio.to_thread(
            store.recent, tenant=tenant, status=status, limit=max(1, limit)
        )
        unfinished += len(found)
    state.quotas.check_jobs(tenant, unfinished)


def _check_owner(job: Job, tenant: TenantContext) -> None:
    """Another tenant's job is as unknown as one that does not exist (admins see all)."""
    if job.tenant != tenant.tenant and not tenant.names.everything:
        raise UnknownJob(f"job {job.id!r} does not exist; GET /v1/jobs lists your jobs")


def _shown(view: dict[str, Any], names: Namespace) -> dict[str, Any]:
    """A job's view in the caller's names."""
    view["app"] = names.outside(view["app"])
    if view.get("variant"):
        view["variant"] = names.outside(view["variant"])
    if "variants_used" in view:
        view["variants_used"] = [names.outside(v) for v in view["variants_used"]]
    return view


async def _own_job(state: State, tenant: TenantContext, job_id: str) -> Job:
    job = await asyncio.to_thread(state.jobs.jobs.get, job_id)
    _check_owner(job, tenant)
    return job


@router.get("/v1/jobs/{job_id}", summary="A job's status, progress, cost so far and outputs")
async def get_job(job_id: str, state: State, tenant: Tenant) -> JSONResponse:
    job, chunks = await asyncio.to_thread(state.jobs.jobs.get_with_chunks, job_id)
    _check_owner(job, tenant)
    return JSONResponse(_shown(job_view(job, chunks, utcnow()), tenant.names))


@router.get("/v1/jobs", summary="Jobs, newest first")
async def list_jobs(
    state: State,
    tenant: Tenant,
    app: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> JSONResponse:
    check_status_filter(status)
    names = tenant.names
    app_id = names.inside(app) if app is not None else None
    if app is not None and app_id is None:
        return JSONResponse({"jobs": []})  # no app of the caller's is called that
    # an admin lists another tenant's jobs by naming its app (``acme--digits``)
    owner = owner_of(app_id) if app_id is not None and names.everything else tenant.tenant
    found = await asyncio.to_thread(
        state.jobs.jobs.recent, tenant=owner, app=app_id, status=status, limit=limit
    )
    return JSONResponse({"jobs": [_shown(job_summary(j, p), names) for j, p in found]})


@router.post("/v1/jobs/{job_id}/cancel", summary="Cancel a queued or running job")
async def cancel_job(job_id: str, state: State, tenant: Tenant) -> JSONResponse:
    await _own_job(state, tenant, job_id)
    await asyncio.to_thread(state.jobs.jobs.cancel, job_id)
    job, chunks = await asyncio.to_thread(state.jobs.jobs.get_with_chunks, job_id)
    return JSONResponse(_shown(job_view(job, chunks, utcnow()), tenant.names))
