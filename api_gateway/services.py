"""What the gateway talks to, built by the caller (CLI, embedded runner, tests) and
handed to the gateway's parts: its state, the batch-job dispatcher, the sweepers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from api_gateway.quotas import QueryCounter
from queues.rpc import QueryClient
from queues.settings import BrokerSettings
from registry.catalog import Catalog
from registry.jobs.settings import JobSettings
from registry.livestate import LiveState
from registry.store import ObjectStore


@dataclass
class GatewayServices:
    """What the gateway talks to, built by the caller (CLI, embedded runner, tests)."""

    broker: BrokerSettings
    catalog: Catalog
    live: LiveState
    client: QueryClient
    store: ObjectStore | None = None
    celery: Any = None  # the Celery app, to send registration and batch-job tasks
    query_counter: QueryCounter | None = None  # quotas' buckets; None: in this process
    jobs: JobSettings = field(default_factory=JobSettings)  # read once, with the registry's
