"""Who may call which route (pure): the one table of the gateway's access policy.

Every route of the app has a row here; a route without one needs ``admin`` (closed by
default), and a test walks ``app.routes`` so that a new route cannot be forgotten.

* ``PUBLIC``: no key ever (liveness and readiness, for load balancers and probes);
* ``INFO``: metrics and the API docs, open when ``INFAAS_OPEN_DOCS_METRICS`` says so
  (default: when the gateway listens on loopback only), else any valid key;
* a :class:`~registry.keys.Role`: a key of that role or a larger one.

Changes (every route that needs ``deploy`` or ``admin`` and is not a read) are written
to the audit log.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from queues.errors import Unauthenticated
from registry.keys import MAX_KEY_CHARS, Role


class Open(StrEnum):
    PUBLIC = "public"
    INFO = "info"


Access = Role | Open

ROUTE_ACCESS: Mapping[tuple[str, str], Access] = {
    ("GET", "/healthz"): Open.PUBLIC,
    ("GET", "/readyz"): Open.PUBLIC,
    ("GET", "/metrics"): Open.INFO,
    ("GET", "/openapi.json"): Open.INFO,
    ("GET", "/docs"): Open.INFO,
    # queries and what a querying client reads
    ("POST", "/v1/apps/{app}/infer"): Role.QUERY,
    ("POST", "/v1/models/{model}/infer"): Role.QUERY,
    ("POST", "/v1/variants/{variant}/infer"): Role.QUERY,
    ("GET", "/v1/apps"): Role.QUERY,
    ("GET", "/v1/apps/{app}"): Role.QUERY,
    ("GET", "/v1/apps/{app}/stats"): Role.QUERY,
    # the Open Inference Protocol (routes/oip.py): probes open, the rest as queries
    ("GET", "/v2/health/live"): Open.PUBLIC,
    ("GET", "/v2/health/ready"): Open.PUBLIC,
    ("GET", "/v2"): Role.QUERY,
    ("GET", "/v2/models/{name}"): Role.QUERY,
    ("GET", "/v2/models/{name}/versions/{version}"): Role.QUERY,
    ("GET", "/v2/models/{name}/ready"): Role.QUERY,
    ("GET", "/v2/models/{name}/versions/{version}/ready"): Role.QUERY,
    ("POST", "/v2/models/{name}/infer"): Role.QUERY,
    ("POST", "/v2/models/{name}/versions/{version}/infer"): Role.QUERY,
    ("POST", "/v2/repository/index"): Role.QUERY,
    # deploying models and running batch jobs
    ("POST", "/v1/apps"): Role.DEPLOY,
    ("DELETE", "/v1/apps/{app}"): Role.DEPLOY,
    ("POST", "/v1/apps/{app}/models"): Role.DEPLOY,
    ("DELETE", "/v1/apps/{app}/models/{model}"): Role.DEPLOY,
    ("GET", "/v1/registrations/{registration}"): Role.DEPLOY,
    ("POST", "/v1/jobs"): Role.DEPLOY,
    ("GET", "/v1/jobs"): Role.DEPLOY,
    ("GET", "/v1/jobs/{job_id}"): Role.DEPLOY,
    ("POST", "/v1/jobs/{job_id}/cancel"): Role.DEPLOY,
    # running the system
    ("GET", "/v1/scaler"): Role.ADMIN,
    ("POST", "/v1/keys"): Role.ADMIN,
    ("GET", "/v1/keys"): Role.ADMIN,
    ("DELETE", "/v1/keys/{key_id}"): Role.ADMIN,
    ("GET", "/v1/audit"): Role.ADMIN,
    # the web console (routes/ui.py): its pages and assets hold no data and are open; the
    # data they show comes from the JSON routes, with the key typed into the console
    ("GET", "/ui"): Open.PUBLIC,
    ("GET", "/ui/apps/{app}"): Open.PUBLIC,
    ("GET", "/ui/scaler"): Open.PUBLIC,
    ("GET", "/ui/jobs"): Open.PUBLIC,
    ("GET", "/ui/registrations"): Open.PUBLIC,
    ("GET", "/ui/static/{name}"): Open.PUBLIC,
    ("GET", "/v1/console/overview"): Role.QUERY,
    ("GET", "/v1/console/apps/{app}/history"): Role.QUERY,
    ("GET", "/v1/console/registrations"): Role.DEPLOY,  # the tenant's (an admin: all)
    ("GET", "/v1/console/scaler"): Role.ADMIN,  # as /v1/scaler
}

# The Open Inference Protocol over gRPC (api_gateway/grpc_server.py), by method of
# inference.GRPCInferenceService: the probes open as on REST, the rest as queries.
GRPC_ACCESS: Mapping[str, Access] = {
    "ServerLive": Open.PUBLIC,
    "ServerReady": Open.PUBLIC,
    "ServerMetadata": Role.QUERY,
    "ModelMetadata": Role.QUERY,
    "ModelReady": Role.QUERY,
    "ModelInfer": Role.QUERY,
}

_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def access_of(method: str, path: str) -> Access:
    """The rule of a route (its path template, e.g. ``/v1/apps/{app}``); HEAD is GET's."""
    method = "GET" if method == "HEAD" else method
    return ROUTE_ACCESS.get((method, path), Role.ADMIN)


def audited(method: str, access: Access) -> bool:
    return method not in _READS and access in (Role.DEPLOY, Role.ADMIN)


def presented_key(authorization: str | None, x_api_key: str | None) -> str:
    """The key sent as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    key = ""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthenticated(
                "the Authorization header must be 'Bearer <API key>'; or send the key as X-API-Key"
            )
        key = value.strip()
    if x_api_key and x_api_key.strip():
        if key and key != x_api_key.strip():
            raise Unauthenticated(
                "Authorization and X-API-Key carry different keys; send one of them"
            )
        key = x_api_key.strip()
    if not key:
        raise Unauthenticated(
            "this route needs an API key: send 'Authorization: Bearer <key>' or "
            "'X-API-Key: <key>' (an admin makes keys with `infaas keys create`)"
        )
    if len(key) > MAX_KEY_CHARS:
        raise Unauthenticated("the API key is too long to be one of ours")
    return key
