"""The gateway's services over the opened ones: the same wiring for ``infaas gateway``
and the embedded runner."""

from __future__ import annotations

from api_gateway.quotas import open_query_counter
from api_gateway.services import GatewayServices
from infaas.services import Services
from queues.celery_app import create_celery_app
from queues.rpc import create_query_client


def gateway_services(services: Services) -> GatewayServices:
    """A query client on the broker, the Celery app that sends registration and batch
    tasks, and the quotas' counter where live state is kept."""
    return GatewayServices(
        broker=services.broker,
        catalog=services.catalog,
        live=services.live,
        client=create_query_client(services.broker),
        store=services.store,
        celery=create_celery_app(services.broker),
        query_counter=open_query_counter(
            services.registry.state_url, prefix=services.registry.state_prefix
        ),
        jobs=services.registry.jobs,
    )
