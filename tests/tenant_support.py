"""One tenant's app, model, variant, registration and batch job, written straight to a
catalog: what the cross-tenant tests (tests/unit/test_auth_routes.py,
tests/integration/test_tenants.py) try to reach from another tenant."""

from __future__ import annotations

from dataclasses import dataclass

from registry.catalog import Catalog
from registry.jobs import JobStore, NewJob, new_job_id
from registry.jobs.chunking import InputObject, plan_chunks
from registry.jobs.locations import Location
from registry.registrations import (
    RegistrationOptions,
    new_registration_id,
    new_registration_rows,
)
from registry.tenancy import Namespace
from tests.catalog_cases import make_app, make_model, make_variant


@dataclass(frozen=True)
class Seeded:
    """A tenant's things by the names it uses (``app``...) and by their internal ids."""

    tenant: str
    app: str
    model: str
    variant: str
    registration: str
    job: str

    @property
    def names(self) -> Namespace:
        return Namespace(self.tenant)

    def internal(self, name: str) -> str:
        found = self.names.inside(name)
        assert found is not None
        return found

    def path_values(self, *, internal: bool = False) -> dict[str, str]:
        """A value for each path parameter of the gateway's routes."""
        shown = self.internal if internal else str
        return {
            "app": shown(self.app),
            "model": shown(self.model),
            "variant": shown(self.variant),
            "name": shown(self.app),
            "version": shown(self.variant),
            "registration": self.registration,
            "job_id": self.job,
        }


def seed_tenant(catalog: Catalog, tenant: str, *, app: str = "digits") -> Seeded:
    names = Namespace(tenant)
    app_id = names.new_id("app", app)
    model_id = names.new_id("model", f"{app}-mlp")
    catalog.create_app(make_app(app_id))
    registration = new_registration_id()
    rows = new_registration_rows(registration, app_id, model_id, ["cpu"], RegistrationOptions())
    catalog.add_model(make_model(model_id, app_id), with_rows=rows)
    variant = catalog.upsert_variant(make_variant(model_id, app_id))
    objects = [InputObject("run/a.npz", 10, 1000)]
    job, _ = JobStore(catalog).create(
        NewJob(
            id=new_job_id(),
            tenant=tenant,
            app=app_id,
            variant=variant.id,
            hardware="cpu",
            input=Location("jobs-in", "run"),
            uploaded=False,
            output=Location("jobs-out", tenant),
            min_accuracy=0.5,
            deadline=None,
            max_cost_usd=None,
            idempotency_key=None,
            fingerprint="f1",
            chunk_items=10,
            priority=1,
            estimate={},
        ),
        plan_chunks(objects, 10),
        {o.key: o.size_bytes for o in objects},
    )
    return Seeded(
        tenant=tenant,
        app=app,
        model=f"{app}-mlp",
        variant=names.outside(variant.id),
        registration=registration,
        job=job.id,
    )
