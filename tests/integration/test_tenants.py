"""Tenants and quotas on the real services: the catalog in PostgreSQL, live state and the
quotas' buckets in Redis (a database and a key prefix of this module's own, removed
after it), the object store in a folder, tasks on the memory transport (no worker is
needed: nothing here is served).

Tenant acme cannot see, query, delete or cancel tenant beta's apps, models, variants,
registrations and jobs (the 404 of a name that does not exist), both register the same
model id, and every quota answers 429 with Retry-After and changes nothing. The route
table's walk of the same 404 is tests/unit/test_auth_routes.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest

from api_gateway.app import create_app
from api_gateway.quotas import RedisQueryCounter
from api_gateway.services import GatewayServices
from api_gateway.settings import GatewaySettings, QuotaLimits
from api_gateway.state import GatewayState
from infaas.services import Services, open_services
from queues.celery_app import create_celery_app
from queues.rpc import create_query_client
from queues.settings import BrokerSettings
from registry.jobs import JobStore
from registry.keys import KeyStore, Role
from registry.settings import RegistrySettings
from tests import services
from tests.registration_models import Trained, sklearn_onnx
from tests.tenant_support import Seeded, seed_tenant

T = TypeVar("T")
pytestmark = pytest.mark.timeout(180)
QUOTAS = {
    # one query per second, one unfinished job, one variant
    "small": QuotaLimits(qps=1, burst=1, jobs=1, variants=1),
    "tiny": QuotaLimits(stored_mb=0.001),  # 1 kB: no model fits
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Services, str, str]]:
    """Services on a PostgreSQL database and a Redis prefix of this module's own."""
    with services.postgres_database() as catalog_url, services.redis_prefix() as state:
        broker = BrokerSettings(broker_url=None, queue_prefix=services.unique_name("q")[-20:])
        registry = RegistrySettings(
            home=tmp_path_factory.mktemp("tenants"),
            catalog_url=catalog_url,
            state_url=state[0],
            state_prefix=state[1],
        )
        built = open_services(broker, registry)
        try:
            yield built, state[0], state[1]
        finally:
            built.close()


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return sklearn_onnx(tmp_path_factory.mktemp("wine"), "wine-mlp", "wine", kind="logreg")


@dataclass
class Gateway:
    """A gateway on the module's services, with authentication on and the quotas above."""

    state: GatewayState
    app: Any
    keys: dict[str, str]

    def headers(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}


def gateway(stack: tuple[Services, str, str], tenants: tuple[str, ...]) -> Gateway:
    built, state_url, prefix = stack
    settings = GatewaySettings(auth=True, freeze_heap=False, quota_tenants=QUOTAS)
    app = create_app(
        settings,
        GatewayServices(
            broker=built.broker,
            catalog=built.catalog,
            live=built.live,
            client=create_query_client(built.broker),
            store=built.store,
            celery=create_celery_app(built.broker),
            query_counter=RedisQueryCounter(state_url, prefix=prefix),
        ),
    )
    store = KeyStore(built.catalog)
    keys = {t: store.create(t, Role.DEPLOY).key for t in tenants}
    return Gateway(app.state.infaas, app, keys)


def run(gateways: list[Gateway], calls: Callable[..., Awaitable[T]]) -> T:
    """``calls`` with one HTTP client per gateway, on one event loop (the quotas' Redis
    client is made on it), the gateways' catalogs read first."""

    async def main() -> T:
        clients = [
            httpx.AsyncClient(
                transport=httpx.ASGITransport(g.app, raise_app_exceptions=False),
                base_url="http://gw",
            )
            for g in gateways
        ]
        try:
            for g in gateways:
                await g.state.refresh(force=True)
            return await calls(*clients)
        finally:
            for client in clients:
                await client.aclose()
            for g in gateways:
                await g.state.quotas.counter.close()

    return asyncio.run(main())


def upload(model: Trained, model_id: str) -> dict[str, Any]:
    return {
        "files": {
            "model": (model.path.name, model.path.read_bytes()),
            "validation": ("val.npz", model.validation.read_bytes()),
        },
        "data": {"id": model_id},
    }


def trace(built: Services) -> tuple[Any, ...]:
    """What a refused request must leave as it was: the catalog's records, its jobs, the
    store's keys."""
    catalog = built.catalog
    jobs = JobStore(catalog)
    tenants = ("acme", "beta", "small", "tiny")
    return (
        sorted(a.id for a in catalog.list_apps()),
        sorted(m.id for m in catalog.list_models()),
        sorted(v.id for v in catalog.list_variants()),
        sorted((j.id, j.status) for t in tenants for j, _ in jobs.recent(tenant=t)),
        sorted(built.store.list()),
    )


def test_a_tenant_cannot_see_query_delete_or_cancel_anothers(
    stack: tuple[Services, str, str],
) -> None:
    built = stack[0]
    beta: Seeded = seed_tenant(built.catalog, "beta")
    gw = gateway(stack, ("acme", "beta"))
    before = trace(built)
    row = [[[0.0] * 8] * 8]

    async def calls(http: httpx.AsyncClient) -> dict[str, Any]:
        acme = gw.headers("acme")
        seen: dict[str, Any] = {}
        for shown in (beta.app, beta.internal(beta.app)):  # beta's name, and its internal id
            model = beta.model if shown == beta.app else beta.internal(beta.model)
            variant = beta.variant if shown == beta.app else beta.internal(beta.variant)
            attempts = {
                "app": await http.get(f"/v1/apps/{shown}", headers=acme),
                "stats": await http.get(f"/v1/apps/{shown}/stats", headers=acme),
                "query app": await http.post(
                    f"/v1/apps/{shown}/infer", json={"inputs": row}, headers=acme
                ),
                "query model": await http.post(
                    f"/v1/models/{model}/infer", json={"inputs": row}, headers=acme
                ),
                "query variant": await http.post(
                    f"/v1/variants/{variant}/infer", json={"inputs": row}, headers=acme
                ),
                "oip metadata": await http.get(f"/v2/models/{shown}", headers=acme),
                "delete model": await http.delete(f"/v1/apps/{shown}/models/{model}", headers=acme),
                "delete app": await http.delete(f"/v1/apps/{shown}", headers=acme),
            }
            seen |= {f"{what} ({shown})": r.status_code for what, r in attempts.items()}
        for what, response in {
            "registration": await http.get(f"/v1/registrations/{beta.registration}", headers=acme),
            "job": await http.get(f"/v1/jobs/{beta.job}", headers=acme),
            "cancel": await http.post(f"/v1/jobs/{beta.job}/cancel", headers=acme),
        }.items():
            seen[what] = response.status_code
        seen["apps"] = (await http.get("/v1/apps", headers=acme)).json()["apps"]
        seen["jobs"] = (await http.get("/v1/jobs", headers=acme)).json()["jobs"]
        mine = await http.get(f"/v1/apps/{beta.app}", headers=gw.headers("beta"))
        seen["beta sees its app"] = (mine.status_code, mine.json()["app"])
        return seen

    seen = run([gw], calls)
    assert seen.pop("apps") == []
    assert seen.pop("jobs") == []
    assert seen.pop("beta sees its app") == (200, beta.app)
    assert {what: code for what, code in seen.items() if code != 404} == {}
    assert trace(built) == before  # nothing deleted, nothing cancelled


def test_two_tenants_register_the_same_model_id_and_keep_apart(
    stack: tuple[Services, str, str], wine: Trained
) -> None:
    built = stack[0]
    gw = gateway(stack, ("acme", "beta"))

    async def calls(http: httpx.AsyncClient) -> dict[str, Any]:
        answers = {}
        for tenant in ("acme", "beta"):
            made = await http.post(
                "/v1/apps/wine/models?create_app=true",
                headers=gw.headers(tenant),
                **upload(wine, "wine-mlp"),
            )
            assert made.status_code == 202, made.text
            answers[tenant] = made.json()
        other = await http.get(
            f"/v1/registrations/{answers['beta']['registration']}", headers=gw.headers("acme")
        )
        listed = await http.get("/v1/apps", headers=gw.headers("acme"))
        return {"made": answers, "other": other.status_code, "listed": listed.json()["apps"]}

    seen = run([gw], calls)
    assert {t: (a["app"], a["model"]) for t, a in seen["made"].items()} == {
        "acme": ("wine", "wine-mlp"),
        "beta": ("wine", "wine-mlp"),
    }
    assert seen["other"] == 404
    wine_apps = [a for a in seen["listed"] if a["app"] == "wine"]
    assert [a["models"] for a in wine_apps] == [["wine-mlp"]]
    models = {m.id: m for m in built.catalog.list_models(app_id="acme--wine")}
    models |= {m.id: m for m in built.catalog.list_models(app_id="beta--wine")}
    assert sorted(models) == ["acme--wine-mlp", "beta--wine-mlp"]
    assert models["acme--wine-mlp"].artifact_key.startswith("models/acme--wine-mlp/")
    assert built.catalog.usage("acme").stored_bytes > wine.path.stat().st_size


def test_every_quota_is_a_429_with_retry_after_and_changes_nothing(
    stack: tuple[Services, str, str], wine: Trained
) -> None:
    built, state_url, prefix = stack
    small = seed_tenant(built.catalog, "small")  # one variant and one queued job: at quota
    gw, other_gw = gateway(stack, ("small", "tiny")), gateway(stack, ())
    other_gw.keys = gw.keys
    before = trace(built)
    job = {"app": small.app, "input": "s3://jobs-in/run", "output": "s3://jobs-out/x"}

    async def calls(http: httpx.AsyncClient, other: httpx.AsyncClient) -> dict[str, Any]:
        row = {"inputs": [[[0.0] * 8] * 8], "timeout_ms": 50}
        first = await http.post("/v1/apps/nothing/infer", json=row, headers=gw.headers("small"))
        # the second query of the second comes through another gateway: one bucket in Redis
        second = await other.post("/v1/apps/nothing/infer", json=row, headers=gw.headers("small"))
        return {
            "first query": first,
            "qps": second,
            "jobs": await http.post(
                "/v1/jobs", json={**job, "min_accuracy": 0.5}, headers=gw.headers("small")
            ),
            "variants": await http.post(
                f"/v1/apps/{small.app}/models", headers=gw.headers("small"), **upload(wine, "m2")
            ),
            "stored_mb": await http.post(
                "/v1/apps/wine/models?create_app=true",
                headers=gw.headers("tiny"),
                **upload(wine, "m3"),
            ),
        }

    answers = run([gw, other_gw], calls)
    assert answers.pop("first query").status_code == 404  # admitted, then no such app
    limits = {"qps": 1, "jobs": 1, "variants": 1, "stored_mb": 0.001}
    for quota, response in answers.items():
        assert response.status_code == 429, (quota, response.text)
        error = response.json()["error"]
        assert error["code"] == "quota_exceeded"
        tenant = "tiny" if quota == "stored_mb" else "small"
        assert error["details"] == {"quota": quota, "limit": limits[quota], "tenant": tenant}
        assert int(response.headers["Retry-After"]) >= 1
    assert trace(built) == before
    import redis

    client = redis.Redis.from_url(state_url)
    try:
        assert client.exists(f"{prefix}:quota:qps:small")
        assert not client.exists(f"{prefix}:quota:qps:tiny")
    finally:
        client.close()


def test_a_postgresql_catalog_from_before_tenants_gains_its_columns() -> None:
    """The columns are dropped from a fresh catalog to make one as it was before
    tenants; opening it again adds them back, its rows the default tenant's."""
    from sqlalchemy import text

    from registry.catalog import Catalog
    from tests.catalog_cases import make_app, make_model

    with services.postgres_database() as url:
        with Catalog(url) as catalog:
            catalog.create_app(make_app("digits"))
            catalog.add_model(make_model("digits-mlp", "digits"))
            with catalog.write_session(bump=False) as session:
                for table, column in (
                    ("apps", "tenant"),
                    ("models", "tenant"),
                    ("models", "stored_bytes"),
                    ("variants", "tenant"),
                    ("registrations", "tenant"),
                ):
                    session.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        with Catalog(url) as catalog:
            with catalog.read_session() as session:
                rows = session.execute(text("SELECT id, tenant FROM apps")).all()
                stored = session.execute(text("SELECT stored_bytes FROM models")).scalars().all()
            assert [tuple(r) for r in rows] == [("digits", "default")]
            assert list(stored) == [0]
            assert catalog.usage("default").stored_bytes == 0


def test_the_redis_bucket_does_the_pure_buckets_arithmetic(
    stack: tuple[Services, str, str],
) -> None:
    """A burst of 3 at 1 query per second: three queries pass, the fourth waits about a
    second (less the time the first three took), and a refused one takes nothing."""
    _, state_url, prefix = stack
    counter = RedisQueryCounter(state_url, prefix=prefix)

    async def main() -> list[float]:
        try:
            return [await counter.take("arith", 1.0, 3.0) for _ in range(5)]
        finally:
            await counter.close()

    waits = asyncio.run(main())
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert 500 < waits[3] <= 1000
    assert 500 < waits[4] <= waits[3]  # the refused fourth took no token
