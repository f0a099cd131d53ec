"""Quotas per tenant (api_gateway/quotas.py): the token bucket's arithmetic, the limits
of the settings with per-tenant overrides, and each quota's 429."""

from __future__ import annotations

import asyncio

import pytest

from api_gateway.quota_bucket import Bucket, take
from api_gateway.quotas import MB, MemoryQueryCounter, Quotas
from api_gateway.settings import GatewaySettings, QuotaLimits
from queues.errors import QuotaExceeded
from registry.catalog import TenantUsage


def test_a_missing_bucket_is_full_and_each_query_takes_one_token() -> None:
    bucket, wait_ms = take(None, 1000.0, rate_per_s=2.0, burst=3.0)
    assert (bucket, wait_ms) == (Bucket(2.0, 1000.0), 0.0)
    bucket, _ = take(bucket, 1000.0, 2.0, 3.0)
    bucket, _ = take(bucket, 1000.0, 2.0, 3.0)
    assert bucket.tokens == 0.0


def test_an_empty_bucket_says_how_long_until_a_token_and_takes_nothing() -> None:
    empty = Bucket(0.0, 1000.0)
    bucket, wait_ms = take(empty, 1100.0, rate_per_s=2.0, burst=3.0)  # 0.2 tokens back
    assert bucket.tokens == pytest.approx(0.2)
    assert wait_ms == pytest.approx(400.0)
    bucket, wait_ms = take(bucket, 1500.0, 2.0, 3.0)  # 1.0: admitted
    assert wait_ms == 0.0
    assert bucket.tokens == pytest.approx(0.0)


def test_a_bucket_refills_to_its_burst_and_no_further() -> None:
    bucket, _ = take(Bucket(0.0, 0.0), 60_000.0, rate_per_s=2.0, burst=3.0)
    assert bucket.tokens == pytest.approx(2.0)  # 3 at most, less the one taken


def test_a_clock_going_back_adds_nothing() -> None:
    bucket, wait_ms = take(Bucket(0.5, 1000.0), 900.0, rate_per_s=1.0, burst=2.0)
    assert bucket.tokens == 0.5
    assert wait_ms == pytest.approx(500.0)


def test_limits_come_from_the_settings_with_per_tenant_overrides() -> None:
    settings = GatewaySettings(
        quota_qps=10,
        quota_jobs=2,
        quota_tenants={"acme": QuotaLimits(qps=1, variants=5)},
    )
    assert settings.quota_of("beta") == QuotaLimits(qps=10, jobs=2)
    assert settings.quota_of("acme") == QuotaLimits(qps=1, jobs=2, variants=5)
    assert settings.query_quota_on
    assert not GatewaySettings().query_quota_on


def test_per_tenant_overrides_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFAAS_QUOTA_TENANTS", '{"acme": {"qps": 5, "stored_mb": 100}}')
    settings = GatewaySettings()
    assert settings.quota_of("acme") == QuotaLimits(qps=5, stored_mb=100)
    assert settings.query_quota_on


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ('{"acme": {"qps": -1}}', "qps"),
        ('{"acme": {"queries": 5}}', "queries"),
        ('{"Acme Corp": {"qps": 5}}', "tenant id 'Acme Corp' is not valid"),
    ],
)
def test_a_bad_override_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, overrides: str, words: str
) -> None:
    monkeypatch.setenv("INFAAS_QUOTA_TENANTS", overrides)
    with pytest.raises(ValueError, match=words):
        GatewaySettings()


def _over(call: object) -> QuotaExceeded:
    assert isinstance(call, QuotaExceeded)
    return call


def test_queries_over_the_rate_get_429_naming_the_quota_with_retry_after() -> None:
    quotas = Quotas(GatewaySettings(quota_qps=2, quota_burst=2), MemoryQueryCounter())

    async def run() -> list[object]:
        outcomes: list[object] = []
        for _ in range(3):
            try:
                await quotas.take_query("acme")
                outcomes.append("ok")
            except QuotaExceeded as exc:
                outcomes.append(exc)
        await quotas.take_query("beta")  # a bucket per tenant
        return outcomes

    first, second, third = asyncio.run(run())
    assert (first, second) == ("ok", "ok")
    error = _over(third)
    assert error.status_code == 429
    assert error.details == {"quota": "qps", "limit": 2, "tenant": "acme"}
    assert error.headers["Retry-After"] == "1"
    assert "2 queries per second" in error.message


def test_no_quota_no_counter() -> None:
    class Refuses(MemoryQueryCounter):
        async def take(self, tenant: str, rate_per_s: float, burst: float) -> float:
            raise AssertionError("quotas off: a query must not touch the counter")

    asyncio.run(Quotas(GatewaySettings(), Refuses()).take_query("acme"))


def test_jobs_variants_and_stored_bytes() -> None:
    quotas = Quotas(
        GatewaySettings(quota_jobs=2, quota_variants=3, quota_stored_mb=1), MemoryQueryCounter()
    )
    quotas.check_jobs("acme", 1)
    with pytest.raises(QuotaExceeded, match="2 batch job") as jobs:
        quotas.check_jobs("acme", 2)
    assert jobs.value.details["quota"] == "jobs"
    assert jobs.value.headers["Retry-After"] == "30"
    check = quotas.usage_check("acme", adding_bytes=MB // 2)
    assert check is not None
    check(TenantUsage("acme", variants=2, stored_bytes=MB // 2))
    with pytest.raises(QuotaExceeded) as variants:
        check(TenantUsage("acme", variants=3, stored_bytes=0))
    assert variants.value.details == {"quota": "variants", "limit": 3, "tenant": "acme"}
    with pytest.raises(QuotaExceeded) as stored:
        check(TenantUsage("acme", variants=0, stored_bytes=MB // 2 + 1))
    assert stored.value.details == {"quota": "stored_mb", "limit": 1.0, "tenant": "acme"}
    assert Quotas(GatewaySettings(), MemoryQueryCounter()).usage_check("acme", 10) is None


def test_the_gateway_says_which_quotas_it_applies() -> None:
    assert GatewaySettings().describe_quotas().startswith("quotas: none")
    line = GatewaySettings(
        quota_qps=5, quota_tenants={"acme": QuotaLimits(qps=50)}
    ).describe_quotas()
    assert line == "quotas per tenant: qps=5 (own limits: acme)"


def test_an_unreachable_counter_is_a_503_not_a_free_pass() -> None:
    from api_gateway.quotas import RedisQueryCounter
    from queues.errors import Unavailable
    from tests.services import free_port

    counter = RedisQueryCounter(f"redis://127.0.0.1:{free_port()}/0", prefix="nowhere")
    quotas = Quotas(GatewaySettings(quota_qps=5), counter)

    async def run() -> None:
        try:
            await quotas.take_query("acme")
        finally:
            await counter.close()

    with pytest.raises(Unavailable, match="quota counter"):
        asyncio.run(run())
