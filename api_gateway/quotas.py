"""Quotas per tenant: queries per second, unfinished batch jobs, variants, stored bytes.

Queries per second are a token bucket per tenant (api_gateway/quota_bucket.py), in
Redis when the gateway's live state is (one script call per query, so every gateway
draws on the same bucket), else in this process. A query pays that one round trip only
when some tenant has a rate quota; none at all when no quota is set.

The other three are counted in the catalog, which every gateway shares: variants and
stored bytes inside the transaction that adds a model (writers are serialized, so two
gateways cannot both slip under a limit), jobs when one is submitted.

Over a quota: 429 in the error contract, ``details`` naming the quota, its limit and the
tenant, with ``Retry-After``: ``quota_exceeded``.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

from api_gateway.quota_bucket import TAKE_SCRIPT, Bucket, idle_ms, take
from api_gateway.settings import GatewaySettings
from queues.errors import QuotaExceeded
from registry.catalog import TenantUsage, UsageCheck

MB = 1024 * 1024
# How soon to try again after a quota that does not refill by itself (jobs, variants,
# bytes): the time a job or a deletion plausibly takes.
RETRY_HELD_S = 30


def quota_exceeded(
    quota: str, limit: float, tenant: str, message: str, *, retry_after_s: float
) -> QuotaExceeded:
    """The 429 of one quota: ``details`` say which, its limit and whose."""
    return QuotaExceeded(
        message,
        retry_after_s=max(1, math.ceil(retry_after_s)),
        details={"quota": quota, "limit": limit, "tenant": tenant},
    )


class QueryCounter(Protocol):
    async def take(self, tenant: str, rate_per_s: float, burst: float) -> float:
        """Take a token from ``tenant``'s bucket; the wait for one in ms (0: taken)."""
        ...

    async def close(self) -> None: ...


class MemoryQueryCounter:
    """Buckets in this process: the embedded gateway's (it is the only one)."""

    def __init__(self) -> None:
        self._buckets: dict[str, Bucket] = {}

    async def take(self, tenant: str, rate_per_s: float, burst: float) -> float:
        now_ms = time.monotonic() * 1000
        bucket, wait_ms = take(self._buckets.get(tenant), now_ms, rate_per_s, burst)
        self._buckets[tenant] = bucket
        if len(self._buckets) > 10_000:  # forget the full ones
            horizon = now_ms - idle_ms(rate_per_s, burst)
            self._buckets = {k: b for k, b in self._buckets.items() if b.at_ms > horizon}
        return wait_ms

    async def close(self) -> None:
        return None


class RedisQueryCounter:
    """Buckets in Redis under ``<prefix>:quota:qps:<tenant>``, shared by every gateway.
    The client is made on first use, on the loop that uses it."""

    def __init__(self, url: str, *, prefix: str) -> None:
        self._url = url
        self._prefix = prefix
        self._redis: Any = None
        self._script: Any = None

    def key(self, tenant: str) -> str:
        return f"{self._prefix}:quota:qps:{tenant}"

    async def take(self, tenant: str, rate_per_s: float, burst: float) -> float:
        import redis
        import redis.asyncio

        from queues.errors import Unavailable

        if self._redis is None:
            self._redis = redis.asyncio.Redis.from_url(
                self._url, socket_connect_timeout=2, socket_timeout=2
            )
            self._script = self._redis.register_script(TAKE_SCRIPT)
        try:
            wait = await self._script(keys=[self.key(tenant)], args=[rate_per_s, burst])
        except redis.RedisError as exc:
            host = self._url.split("@")[-1]
            raise Unavailable(
                f"the quota counter (Redis at {host}) is unreachable: {exc}; retry"
            ) from exc
        return float(wait)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None


def open_query_counter(state_url: str | None, *, prefix: str) -> QueryCounter:
    """Redis when the live state is there (``INFAAS_STATE_URL``), else this process."""
    if state_url:
        return RedisQueryCounter(state_url, prefix=prefix)
    return MemoryQueryCounter()


class Quotas:
    """The quotas of the settings, checked against the counter and the catalog."""

    def __init__(self, settings: GatewaySettings, counter: QueryCounter) -> None:
        self.settings = settings
        self.counter = counter
        self._queries_counted = settings.query_quota_on

    async def take_query(self, tenant: str) -> None:
        """Admit one query of ``tenant`` or raise its 429."""
        if not self._queries_counted:
            return
        limits = self.settings.quota_of(tenant)
        if limits.qps is None:
            return
        burst = limits.burst or max(1.0, limits.qps)
        wait_ms = await self.counter.take(tenant, limits.qps, burst)
        if wait_ms > 0:
            raise quota_exceeded(
                "qps",
                limits.qps,
                tenant,
                f"tenant {tenant!r} is over its quota of {limits.qps:g} queries per second "
                f"(bursts of {burst:g}); retry in {wait_ms:.0f} ms, or ask an admin for more",
                retry_after_s=wait_ms / 1000,
            )

    def check_jobs(self, tenant: str, unfinished: int) -> None:
        """Refuse a new job when ``tenant`` has ``unfinished`` ones at its limit."""
        limit = self.settings.quota_of(tenant).jobs
        if limit is not None and unfinished >= limit:
            raise quota_exceeded(
                "jobs",
                limit,
                tenant,
                f"tenant {tenant!r} has {unfinished} batch job(s) not yet finished and a "
                f"quota of {limit}; wait for one to finish (or cancel one), then submit again",
                retry_after_s=RETRY_HELD_S,
            )

    def usage_check(self, tenant: str, adding_bytes: int) -> UsageCheck | None:
        """The check of a new model of ``tenant`` storing ``adding_bytes``, to run in
        the transaction that adds it (None when the tenant has neither quota)."""
        limits = self.settings.quota_of(tenant)
        if limits.variants is None and limits.stored_mb is None:
            return None

        def check(usage: TenantUsage) -> None:
            variants = limits.variants
            if variants is not None and usage.variants >= variants:
                raise quota_exceeded(
                    "variants",
                    variants,
                    tenant,
                    f"tenant {tenant!r} has {usage.variants} variant(s) and a quota of "
                    f"{variants}; delete a model to register another",
                    retry_after_s=RETRY_HELD_S,
                )
            stored_mb = limits.stored_mb
            if stored_mb is not None and usage.stored_bytes + adding_bytes > stored_mb * MB:
                raise quota_exceeded(
                    "stored_mb",
                    stored_mb,
                    tenant,
                    f"tenant {tenant!r} stores {usage.stored_bytes / MB:.1f} MB and this "
                    f"upload adds {adding_bytes / MB:.1f} MB, over its quota of "
                    f"{stored_mb:g} MB; delete a model or upload a smaller one",
                    retry_after_s=RETRY_HELD_S,
                )

        return check
