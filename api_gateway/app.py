"""The gateway's FastAPI application, built from settings and services handed in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from api_gateway.fast_queries import QueryFastPath
from api_gateway.grpc_server import grpc_service
from api_gateway.json_body import JSONBodyRoute
from api_gateway.metrics import GatewayMetrics
from api_gateway.openapi_doc import GatewayApp
from api_gateway.responses import (
    http_exception_handler,
    infaas_error_handler,
    unexpected_error_handler,
    validation_error_handler,
)
from api_gateway.routes import admin, apps, health, infer, jobs, oip, registration, ui
from api_gateway.services import GatewayServices
from api_gateway.settings import GatewaySettings
from api_gateway.state import GatewayState
from queues.errors import InfaasError


def create_app(settings: GatewaySettings, services: GatewayServices) -> FastAPI:
    state = GatewayState(settings, services, GatewayMetrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.start()
        try:
            # the Open Inference Protocol's gRPC service, on this loop (grpc_server.py)
            async with grpc_service(state, app.version) as grpc_server:
                app.state.grpc = grpc_server
                yield
        finally:
            app.state.grpc = None
            await state.stop()

    app = GatewayApp(
        title="INFaaS gateway",
        description="Model-less inference: say what you need, the system picks the variant.",
        version="0.1.0",
        lifespan=lifespan,
        # served by routes/admin.py, behind the access rule of api_gateway/access.py
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # FastAPI asks OpenTelemetry on every request whether a provider is configured
        # (~17 µs of a v2 query's ~110 in-process); our metrics are Prometheus's
        telemetry=None
        if settings.opentelemetry
        else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.infaas = state
    app.state.grpc = None  # a GRPCServer while the app runs, unless INFAAS_GRPC_PORT=off
    app.add_exception_handler(InfaasError, infaas_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(HTTPException, http_exception_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
    app.router.route_class = JSONBodyRoute  # routers of their own set it themselves
    # the query routes first: FastAPI tries routes in order, ~3 µs each (issue 23)
    app.include_router(infer.router)
    app.include_router(oip.router)
    app.include_router(apps.router)
    app.include_router(registration.router)
    app.include_router(jobs.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(ui.router)  # the web console at /ui (routes/ui.py)
    # the /v1 query routes, answered before FastAPI's routing (fast_queries.py)
    app.add_middleware(QueryFastPath)
    return app
