"""The catalog's records (registry/types.py) to and from their rows
(registry/catalog_schema.py). A row's tenant is not a field of its record: it is the
owner of the row's id (registry/tenancy.py), written here and nowhere else."""

from __future__ import annotations

from datetime import UTC, datetime

from registry.catalog_schema import AppRow, ModelRow, VariantRow
from registry.tenancy import owner_of
from registry.types import App, InputSignature, Model, Profile, Variant, utcnow


def as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def app_row(app: App) -> AppRow:
    return AppRow(
        id=app.id,
        tenant=owner_of(app.id),
        task=app.task,
        input_name=app.signature.name,
        input_dtype=app.signature.dtype,
        input_shape=list(app.signature.shape),
        output_kind=app.output_kind,
        num_classes=app.num_classes,
        description=app.description,
        created_at=as_utc(app.created_at),
    )


def app_record(row: AppRow) -> App:
    return App(
        id=row.id,
        task=row.task,
        signature=InputSignature(row.input_name, row.input_dtype, tuple(row.input_shape)),
        output_kind=row.output_kind,
        num_classes=row.num_classes,
        description=row.description,
        created_at=as_utc(row.created_at),
    )


def model_row(model: Model, *, stored_bytes: int = 0) -> ModelRow:
    return ModelRow(
        id=model.id,
        tenant=owner_of(model.id),
        stored_bytes=stored_bytes,
        app_id=model.app,
        format=model.format,
        artifact_key=model.artifact_key,
        validation_key=model.validation_key,
        output_name=model.output_name,
        status=model.status,
        meta=dict(model.metadata),
        created_at=as_utc(model.created_at),
        updated_at=utcnow(),
    )


def model_record(row: ModelRow) -> Model:
    return Model(
        id=row.id,
        app=row.app_id,
        format=row.format,
        artifact_key=row.artifact_key,
        validation_key=row.validation_key,
        output_name=row.output_name,
        status=row.status,
        metadata=dict(row.meta),
        created_at=as_utc(row.created_at),
    )


def fill_variant_row(row: VariantRow, variant: Variant) -> None:
    """Copy every field but the id and the creation time onto ``row``."""
    row.tenant = owner_of(variant.model)
    row.model_id = variant.model
    row.app_id = variant.app
    row.runtime = variant.runtime
    row.precision = variant.precision
    row.opt = variant.opt
    row.hardware = variant.hardware
    row.threads = variant.threads
    row.artifact_key = variant.artifact_key
    row.instance_class = variant.instance_class
    row.cost_usd_per_hour = variant.cost_per_hour
    row.status = variant.status
    row.error = variant.error
    row.profile = variant.profile.to_dict() if variant.profile is not None else None
    row.updated_at = utcnow()


def variant_record(row: VariantRow) -> Variant:
    return Variant(
        id=row.id,
        model=row.model_id,
        app=row.app_id,
        runtime=row.runtime,
        precision=row.precision,
        hardware=row.hardware,
        threads=row.threads,
        artifact_key=row.artifact_key,
        instance_class=row.instance_class,
        cost_per_hour=row.cost_usd_per_hour,
        opt=row.opt,
        status=row.status,
        error=row.error,
        profile=Profile.from_dict(row.profile) if row.profile is not None else None,
        created_at=as_utc(row.created_at),
    )
