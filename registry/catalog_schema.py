"""Tables of the catalog database.

Every table of the catalog database is declared on :class:`Base`, so one
:func:`create_schema` call creates them all. A later table (registrations, batch jobs,
API keys) is a new ``Base`` subclass here or in a module imported before the catalog
opens; it needs no change to :class:`registry.catalog.Catalog`.

Column names carry their unit where there is one; timestamps are timezone-aware UTC.
JSON fields (input shapes, metadata, profiles) are JSON columns (JSONB on PostgreSQL).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from registry.tenancy import DEFAULT_TENANT
from registry.types import utcnow

# Names constraints predictably, so later migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Columns added to tables after catalogs with those tables existed: (table, column, type
# and default). create_schema adds those missing, so an older catalog opens as it is;
# every row it holds predates tenants, hence the default tenant.
ADDED_COLUMNS = (
    ("apps", "tenant", f"VARCHAR NOT NULL DEFAULT '{DEFAULT_TENANT}'"),
    ("models", "tenant", f"VARCHAR NOT NULL DEFAULT '{DEFAULT_TENANT}'"),
    ("models", "stored_bytes", "BIGINT NOT NULL DEFAULT 0"),
    ("variants", "tenant", f"VARCHAR NOT NULL DEFAULT '{DEFAULT_TENANT}'"),
    ("registrations", "tenant", f"VARCHAR NOT NULL DEFAULT '{DEFAULT_TENANT}'"),
)

# Any 64-bit number works; every process creating the schema takes this lock first.
_SCHEMA_LOCK_KEY = 0x1AFAA5CA7A106
META_ROW_ID = 1


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp that always comes back in UTC.

    SQLite keeps no time zone, so values are stored as naive UTC there and given the UTC
    zone on the way out; a naive value handed in is taken to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self,
        value: datetime | None,
        dialect: Dialect,  # noqa: ARG002 (named by the base class)
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSONColumn = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class CatalogMetaRow(Base):
    """One row: the catalog's revision, bumped in the same transaction as every write."""

    __tablename__ = "catalog_meta"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class AppRow(Base):
    __tablename__ = "apps"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    tenant: Mapped[str] = mapped_column(String, nullable=False, default=DEFAULT_TENANT, index=True)
    task: Mapped[str] = mapped_column(String, nullable=False)
    input_name: Mapped[str] = mapped_column(String, nullable=False)
    input_dtype: Mapped[str] = mapped_column(String, nullable=False)
    input_shape: Mapped[list[int]] = mapped_column(JSONColumn, nullable=False)
    output_kind: Mapped[str] = mapped_column(String, nullable=False)
    num_classes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    tenant: Mapped[str] = mapped_column(String, nullable=False, default=DEFAULT_TENANT, index=True)
    # what its registration stored (model file and validation set), for the tenant's quota
    stored_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"), nullable=False, index=True)
    format: Mapped[str] = mapped_column(String, nullable=False)
    artifact_key: Mapped[str] = mapped_column(String, nullable=False)
    validation_key: Mapped[str] = mapped_column(String, nullable=False)
    output_name: Mapped[str] = mapped_column(String, nullable=False, default="")
    status: Mapped[str] = mapped_column(String, nullable=False)
    # ``metadata`` is taken by the declarative base, hence the attribute name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONColumn, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class VariantRow(Base):
    __tablename__ = "variants"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    tenant: Mapped[str] = mapped_column(String, nullable=False, default=DEFAULT_TENANT, index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), nullable=False, index=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"), nullable=False, index=True)
    runtime: Mapped[str] = mapped_column(String, nullable=False)
    precision: Mapped[str] = mapped_column(String, nullable=False)
    opt: Mapped[str] = mapped_column(String, nullable=False, default="")
    hardware: Mapped[str] = mapped_column(String, nullable=False, index=True)
    threads: Mapped[int] = mapped_column(Integer, nullable=False)
    artifact_key: Mapped[str] = mapped_column(String, nullable=False)
    instance_class: Mapped[str] = mapped_column(String, nullable=False)
    cost_usd_per_hour: Mapped[float] = mapped_column(Float, nullable=False)
    status: Mapped[str] = mapped_column(String, nullable=False, index=True)
    error: Mapped[str] = mapped_column(Text, nullable=False, default="")
    profile: Mapped[dict[str, Any] | None] = mapped_column(JSONColumn, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


def create_schema(connection: Connection) -> None:
    """Create every missing table of :class:`Base` and the revision row, in the caller's
    transaction. Safe when several processes start at once: on PostgreSQL an advisory
    lock held to the end of the transaction serializes them; on SQLite the caller's
    transaction must hold the write lock already (``BEGIN IMMEDIATE``)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
    Base.metadata.create_all(connection)
    add_missing_columns(connection)
    found = connection.execute(
        select(CatalogMetaRow.id).where(CatalogMetaRow.id == META_ROW_ID)
    ).first()
    if found is None:
        connection.execute(
            insert(CatalogMetaRow).values(id=META_ROW_ID, revision=0, updated_at=utcnow())
        )


def add_missing_columns(connection: Connection) -> list[str]:
    """Add the columns of :data:`ADDED_COLUMNS` that an older catalog lacks (with their
    index, named as :data:`NAMING_CONVENTION` would); returns ``table.column`` of each."""
    inspector = inspect(connection)
    tables = set(inspector.get_table_names())
    added = []
    for table, column, ddl in ADDED_COLUMNS:
        if table not in tables:
            continue  # create_all made it, with the column, or another module owns it
        if column in {c["name"] for c in inspector.get_columns(table)}:
            continue
        connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))
        if column == "tenant":
            connection.execute(text(f"CREATE INDEX ix_{table}_{column} ON {table} ({column})"))
        added.append(f"{table}.{column}")
    return added
