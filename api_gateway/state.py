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
from dataclasses import replace

from api_gateway.accounting import Accounting
from api_gateway.history import LoadHistory
from api_gateway.jobs_dispatch import JobDispatcher
from api_gateway.keyring import KeyRing
from api_gateway.metrics import GatewayMetrics
from api_gateway.quotas import MemoryQueryCounter, Quotas
from api_gateway.services import GatewayServices
from api_gateway.settings import GatewaySettings
from queues.errors import (
    DeadlineExceeded,
    InfaasError,
    LoadFailed,
    NoEligibleVariant,
    NotFound,
    NoWorker,
)
from queues.heap import settle_heap
from registry import live_docs
from registry.audit import AuditLog
from registry.keys import KeyStore
from registry.live_docs import DemandDoc, LoadFailure, LoadRequest, PlanHeader
from registry.livestate import LiveSnapshot, now_ms
from registry.registration_sweep import RegistrationSweeper
from registry.routing import Routes
from registry.selector import Decision, Requirements, SelectorIndex, select
from registry.types import CatalogSnapshot

log = logging.getLogger(__name__)
PUBLISH_INTERVAL_S = 1.0
WAIT_POLL_S = 0.05  # how often a query waiting for its variant to load looks again


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
        metrics.messages_published.set_function(lambda: float(client.messages_sent))
        metrics.queries_published.set_function(lambda: float(client.queries_sent))
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
        self.load_failures: dict[str, LoadFailure] = {}
        self.scaler_running = False
        self.gateway_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.accounting = Accounting()
        self.history = LoadHistory()  # the console's last hour, sampled by the refresh loop
        self._published_at = 0.0
        self.jobs = JobDispatcher(services, lambda: self.live_snapshot)
        self.registrations = RegistrationSweeper(services.catalog, services.broker, services.celery)
        self.keys = KeyRing(KeyStore(services.catalog))
        self.audit = AuditLog(services.catalog)
        self.quotas = Quotas(settings, services.query_counter or MemoryQueryCounter())

    async def start(self) -> None:
        bootstrap = self.settings.bootstrap_admin_key
        await self.keys.start(
            bootstrap_key=bootstrap.get_secret_value() if bootstrap else None,
            auth_on=self.settings.auth_on,
        )
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
        await self.quotas.counter.close()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_interval_s)
            try:
                await self.refresh()
            except Exception:  # keep serving on the last good snapshots
                log.exception("refreshing the gateway's snapshots failed")
            self.history.sample(self.accounting.apps, time.time())
            await self.jobs.sweeper.tick()
            await self.registrations.tick()

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
                live = self.services.live
                header = await asyncio.to_thread(live_docs.read_plan_header, live)
                self.scaler_running = header is not None and header.fresh(now_ms())
                self.routes = self._routes_of(header)
                self.load_failures = await asyncio.to_thread(live_docs.read_load_failures, live)
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

    def _routes_of(self, plan: PlanHeader | None) -> Routes:
        """The split of each demand class in the scaler's last plan; none when there is
        no plan or it is stale (its scaler stopped: the selector's own rule serves)."""
        if plan is None or not plan.fresh(now_ms()):
            return Routes()
        if plan.tick != self._routes_tick or not self.routes:
            self._routes_tick = plan.tick
            return Routes.from_doc(plan.routes)
        return self.routes

    async def publish_accounting(self) -> None:
        """This gateway's SLO accounting and demand, for /stats and the scaler."""
        self._published_at = time.monotonic()
        now_s = time.time()
        totals = self.accounting.to_doc()
        demand = DemandDoc(self.gateway_id, now_s, tuple(self.accounting.demand(now_s)))
        live = self.services.live
        try:
            await asyncio.to_thread(live_docs.put_gateway_totals, live, self.gateway_id, totals)
            await asyncio.to_thread(live_docs.put_demand, live, demand)
        except InfaasError as exc:
            log.warning("could not publish accounting: %s", exc.message)

    async def select(self, req: Requirements, *, explain: bool = False) -> Decision:
        """Select on the in-memory index; on an unknown name, or an app with no ready
        variant, re-read once (it may have been registered or profiled since the last
        refresh) before refusing."""
        try:
            decision = select(self.index, req, explain=explain)
        except NotFound:
            if time.monotonic() - self._refreshed_at < WAIT_POLL_S:
                raise
            await self.refresh(force=True)
            decision = select(self.index, req, explain=explain)
        except NoEligibleVariant:
            revision = await asyncio.to_thread(self.services.catalog.revision)
            if revision == self.catalog_snapshot.revision:
                raise
            await self.refresh()
            decision = select(self.index, req, explain=explain)
        if decision.load_request is not None:
            await self._request_load(decision.load_request)
        return decision

    async def _request_load(self, variant_id: str) -> None:
        """Ask for a cold variant to be loaded (at most once per TTL per variant); the
        workers' loader, or the scaler where one runs, acts on it."""
        now = time.monotonic()
        last = self._load_requested.get(variant_id, -1e9)
        if now - last < live_docs.LOAD_REQUEST_TTL_S / 2:
            return
        variant = self.catalog_snapshot.variants.get(variant_id)
        if variant is None:
            return
        self._load_requested[variant_id] = now
        request = LoadRequest(variant.id, variant.app, variant.hardware, now_ms())
        try:
            await asyncio.to_thread(live_docs.put_load_request, self.services.live, request)
        except InfaasError as exc:
            log.warning("could not request a load of %s: %s", variant_id, exc.message)

    async def until_running(
        self, req: Requirements, decision: Decision, deadline: float, *, explain: bool = False
    ) -> Decision:
        """A query whose chosen variant runs nowhere yet waits for it to be loaded, until
        ``deadline`` (``time.perf_counter()``): each fresh look at live state selects again,
        so it goes to whichever eligible variant runs first. A failed load, or no worker
        that could load it, is answered at once."""
        started = time.perf_counter()
        while not self.live_snapshot.placements(decision.variant.id):
            variant = decision.variant
            failure = self.load_failures.get(decision.load_request or variant.id)
            if failure is not None:
                self._load_requested.pop(failure.variant, None)
                raise LoadFailed(
                    f"worker {failure.worker} could not load {failure.variant}: "
                    f"{failure.message}; it is not tried again for "
                    f"{live_docs.LOAD_FAILURE_TTL_S:g} s (fix the model, or query with "
                    "requirements another variant meets)"
                )
            hardware = variant.hardware
            if not self.scaler_running and not any(
                w.hardware == hardware and w.loads_on_demand
                for w in self.live_snapshot.workers.values()
            ):
                raise NoWorker(
                    f"{variant.id} runs on {hardware} and no live {hardware} worker loads "
                    f"variants on demand; start one with `infaas worker --hardware {hardware}`",
                    headers={"Retry-After": "1"},
                )
            if time.perf_counter() >= deadline:
                raise DeadlineExceeded(
                    f"{variant.id} was still being loaded when the query's deadline passed; "
                    "retry shortly, or give the query a longer timeout_ms"
                )
            if time.monotonic() - self._refreshed_at >= WAIT_POLL_S:
                await self.refresh()
            else:
                await asyncio.sleep(WAIT_POLL_S)
            decision = await self.select(req, explain=explain)
        waited_ms = (time.perf_counter() - started) * 1000
        return replace(
            decision, reason=f"{decision.reason} (after {waited_ms:.0f} ms waiting for a load)"
        )
