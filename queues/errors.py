"""One error tree for the whole system.

Every error a user can see is an :class:`InfaasError` carrying an HTTP status and a
machine-readable ``code``; the gateway renders them all through one handler, and a
worker sends the code back in a reply so the gateway can raise the same error. The
message says what was wrong and what to do next.
"""

from __future__ import annotations

from typing import Any, ClassVar


class InfaasError(Exception):
    """Root of every error this project raises on purpose."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


class ConfigError(InfaasError):
    """A setting makes no sense; raised at start, before anything runs."""

    code = "config_error"


class InvalidRequest(InfaasError):
    status_code = 422
    code = "invalid_request"


class InvalidInput(InfaasError):
    status_code = 422
    code = "invalid_input"


class InvalidModel(InvalidRequest):
    """An uploaded model file cannot be registered (not ONNX, corrupt, unsafe, wrong inputs)."""

    code = "invalid_model"


class InvalidValidationSet(InvalidRequest):
    """An uploaded validation set does not fit the app (arrays, lengths, dtype, labels)."""

    code = "invalid_validation_set"


class UploadTooLarge(InfaasError):
    status_code = 413
    code = "upload_too_large"


class BodyTooLarge(UploadTooLarge):
    """A JSON request body over ``INFAAS_MAX_BODY_MB``, refused before it is parsed."""

    code = "body_too_large"


class InputUnreadable(InvalidInput):
    """A batch job's input location holds nothing readable (no .npz, not an .npz, no
    array ``inputs``, pickled objects)."""

    code = "input_unreadable"


class OutputNotWritable(InvalidRequest):
    """A batch job's output location cannot be written."""

    code = "output_not_writable"


class EmptyBatch(InfaasError):
    status_code = 422
    code = "empty_batch"


class BatchTooLarge(InfaasError):
    status_code = 422
    code = "batch_too_large"


class Unauthenticated(InfaasError):
    """No API key, or one that is unknown or revoked (``WWW-Authenticate: Bearer``)."""

    status_code = 401
    code = "unauthenticated"

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("WWW-Authenticate", 'Bearer realm="infaas"')


class Forbidden(InfaasError):
    """A valid API key whose role is too small for the route."""

    status_code = 403
    code = "forbidden"


class NotFound(InfaasError):
    status_code = 404
    code = "not_found"


class UnknownApp(NotFound):
    code = "unknown_app"


class UnknownModel(NotFound):
    code = "unknown_model"


class UnknownVariant(NotFound):
    code = "unknown_variant"


class UnknownJob(NotFound):
    code = "unknown_job"


class MethodNotAllowed(InfaasError):
    """The route exists but not with this HTTP method (``Allow`` names those it takes)."""

    status_code = 405
    code = "method_not_allowed"


class Conflict(InfaasError):
    status_code = 409
    code = "conflict"


class NoEligibleVariant(Conflict):
    code = "no_eligible_variant"


class QueueFull(InfaasError):
    status_code = 429
    code = "queue_full"

    def __init__(self, message: str, *, retry_after_s: int = 1, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("Retry-After", str(retry_after_s))


class QuotaExceeded(QueueFull):
    """A tenant is over one of its quotas (``details``: which, its limit, whose)."""

    code = "quota_exceeded"


class Unavailable(InfaasError):
    status_code = 503
    code = "unavailable"


class BrokerUnavailable(Unavailable):
    code = "broker_unavailable"


class NoWorker(Unavailable):
    code = "no_worker"


class StoreUnavailable(Unavailable):
    code = "store_unavailable"


class ObjectMissing(NotFound):
    code = "object_missing"


class DeadlineExceeded(InfaasError):
    status_code = 504
    code = "deadline_exceeded"


class WorkerError(InfaasError):
    """The worker could not run the query (the model failed, the artifact is missing)."""

    status_code = 502
    code = "worker_error"


class LoadFailed(WorkerError):
    """A worker could not load the variant chosen for the query (artifact missing, out of
    memory, the runtime refused it); it is not tried again for a minute."""

    code = "load_failed"


class ActuatorError(InfaasError):
    """The scaler could not add or remove a worker; the plan's other steps still run."""

    status_code = 502
    code = "actuator_error"


def _all_subclasses(cls: type[InfaasError]) -> list[type[InfaasError]]:
    found: list[type[InfaasError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


def error_from_code(code: str, message: str) -> InfaasError:
    """Rebuild the error a worker reported by its code (unknown codes become worker_error)."""
    classes: list[type[InfaasError]] = [InfaasError, *_all_subclasses(InfaasError)]
    for cls in classes:
        if cls.code == code:
            return cls(message)
    return WorkerError(f"{code}: {message}")


def error_codes() -> dict[str, int]:
    """Every error code and its HTTP status (the README's table is checked against this)."""
    classes: list[type[InfaasError]] = [InfaasError, *_all_subclasses(InfaasError)]
    return {cls.code: cls.status_code for cls in classes}
