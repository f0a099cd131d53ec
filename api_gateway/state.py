"""What the gateway keeps in memory: the selector's index over catalog and live state,
refreshed in the background, so that no query waits on a database or on Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from api_gateway.accounting import Accounting
from api_gateway.jobs_dispatch import JobDispatcher
from api_gateway.metrics import GatewayMetrics
from api_gateway.settings import GatewaySettings
from queues.errors import InfaasError, NotFound
from queues.heap import settle_heap
from queues.rpc import QueryClient
from queues.settings import BrokerSettings
from registry.catalog import Catalog
from registry.livestate import SCALER_PLAN_DOC, LiveSnapshot, LiveState, now_ms
from registry.routing import Routes
from registry.selector import Decision, Requirements, SelectorIndex, select
from registry.store import ObjectStore
from registry.types import CatalogSnapshot

log = logging.getLogger(__name__)
LOAD_REQUEST_TTL_S = 30.0
PUBLISH_INTERVAL_S = 1.0
GATEWAY_DOC_TTL_S = 3600.0  # cumulative totals outlive their gateway for an hour
DEMAND_DOC_TTL_S = 5.0  # current demand: gone soon after its gateway
ROUTES_MAX_AGE_S = 10.0  # a plan older than this (its scaler stopped) routes nothing


@dataclass
class GatewayServices:
    """What the gateway talks to, built by the caller (CLI, embedded runner, tests)."""

    broker: BrokerSettings
    catalog: Catalog
    live: LiveState
    client: QueryClient
    store: ObjectStore | None = None
    celery: Any = None  # the Celery app, to send registration and batch-job tasks


class GatewayState:
    def __init__(
        self, settings: GatewaySettings, services: GatewayServices, metrics: GatewayMetrics
    ) -> None:
        self.settings = settings
        self.services = services
        self.metrics = metrics
        # read at scrape time: the count moves between refreshes
        client = services.client
        metrics.expired.set_function(lambda: float(client.expired_answered))
        self.catalog_snapshot = CatalogSnapshot.empty()
        self.live_snapshot = LiveSnapshot.empty()
        self.index = SelectorIndex(
            self.catalog_snapshot, self.live_snapshot, overhead_ms=settings.overhead_ms
        )
        self.routes = Routes()
        self._routes_tick: object = None
        self.catalog_error: str = "not read yet"
        self.live_error: str = "not read yet"
        self._refreshed_at = 0.0
        self._refresh_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._load_requested: dict[str, float] = {}
        self.gateway_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.accounting = Accounting()
        self._published_at = 0.0
        self.jobs = JobDispatcher(self)

    async def start(self) -> None:
        await self.services.client.start()
        await self.refresh(force=True)
        if self.settings.freeze_heap:
            settle_heap()
        self._task = asyncio.create_task(self._refresh_loop(), name="infaas-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.services.client.close()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_interval_s)
            try:
                await self.refresh()
            except Exception:  # keep serving on the last good snapshots
                log.exception("refreshing the gateway's snapshots failed")
            await self.jobs.tick()

    async def refresh(self, *, force: bool = False) -> None:
        async with self._refresh_lock:
            catalog = self.services.catalog
            try:
                revision = await asyncio.to_thread(catalog.revision)
                if force or revision != self.catalog_snapshot.revision:
                    self.catalog_snapshot = await asyncio.to_thread(catalog.snapshot)
                self.catalog_error = ""
            except InfaasError as exc:
                self.catalog_error = exc.message
            try:
                self.live_snapshot = await asyncio.to_thread(self.services.live.snapshot)
                self.live_error = ""
                plan = await asyncio.to_thread(self.services.live.get_doc, SCALER_PLAN_DOC)
                self.routes = self._routes_of(plan)
            except InfaasError as exc:
                self.live_error = exc.message
            self.index = SelectorIndex(
                self.catalog_snapshot,
                self.live_snapshot,
                overhead_ms=self.settings.overhead_ms,
                previous=self.index,
                routes=self.routes,
            )
            self.metrics.live_workers.set(len(self.live_snapshot.workers))
            self._refreshed_at = time.monotonic()
        if self._refreshed_at - self._published_at >= PUBLISH_INTERVAL_S:
            await self.publish_accounting()

    def _routes_of(self, plan: dict[str, Any] | None) -> Routes:
        """The split of each demand class in the scaler's last plan; none when there is
        no plan or it is stale (its scaler stopped: the selector's own rule serves)."""
        if plan is None:
            return Routes()
        planned_ms = plan.get("now_ms")
        if not isinstance(planned_ms, int | float):
            return Routes()
        if now_ms() - planned_ms > ROUTES_MAX_AGE_S * 1000:
            return Routes()
        if plan.get("tick") != self._routes_tick or not self.routes:
            self._routes_tick = plan.get("tick")
            return Routes.from_doc(plan.get("routes"))
        return self.routes

    async def publish_accounting(self) -> None:
        """This gateway's SLO accounting and demand, for /stats and the scaler."""
        self._published_at = time.monotonic()
        now_s = time.time()
        accounting = self.accounting.to_doc()
        demand = {
            "gateway": self.gateway_id,
            "at_s": now_s,
            "classes": self.accounting.demand(now_s),
        }
        live = self.services.live
        try:
            await asyncio.to_thread(
                live.put_doc, f"gateway:{self.gateway_id}", accounting, GATEWAY_DOC_TTL_S
            )
            await asyncio.to_thread(
                live.put_doc, f"demand:{self.gateway_id}", demand, DEMAND_DOC_TTL_S
            )
        except InfaasError as exc:
            log.warning("could not publish accounting: %s", exc.message)

    async def select(self, req: Requirements, *, explain: bool = False) -> Decision:
        """Select on the in-memory index; on an unknown name, re-read once (it may have
        been registered since the last refresh) before answering 404."""
        try:
            decision = select(self.index, req, explain=explain)
        except NotFound:
            if time.monotonic() - self._refreshed_at < 0.05:
                raise
            await self.refresh(force=True)
            decision = select(self.index, req, explain=explain)
        if decision.load_request is not None:
            await self._request_load(decision.load_request)
        return decision

    async def _request_load(self, variant_id: str) -> None:
        """Ask the scaler to load a cold variant (at most once per TTL per variant)."""
        now = time.monotonic()
        if now - self._load_requested.get(variant_id, -1e9) < LOAD_REQUEST_TTL_S / 2:
            return
        self._load_requested[variant_id] = now
        doc = {"variant": variant_id, "requested_at": time.time()}
        try:
            await asyncio.to_thread(
                self.services.live.put_doc, f"load-request:{variant_id}", doc, LOAD_REQUEST_TTL_S
            )
        except InfaasError as exc:
            log.warning("could not request a load of %s: %s", variant_id, exc.message)
