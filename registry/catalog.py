"""The catalog: apps, models and variants (with their measured profiles) in SQL.

The embedded default is an SQLite file; production uses PostgreSQL. Every write runs
in one transaction that first bumps the one-row revision in ``catalog_meta``, so

* writers are serialized (the revision row is locked, or SQLite's write lock is held,
  before anything is read), which makes check-then-write safe across processes;
* a failed write (an error raised inside the transaction) leaves no trace, not even a
  new revision;
* readers can poll :meth:`Catalog.revision` (one row) and reload only when it moved.

:meth:`Catalog.snapshot` reads everything in one transaction (REPEATABLE READ on
PostgreSQL, one WAL read snapshot on SQLite), so the records and the revision agree.

Stores of later tables (declared on :class:`registry.catalog_schema.Base`) can share
this database through :meth:`Catalog.write_session` and :meth:`Catalog.read_session`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType

from sqlalchemy import Engine, func, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from queues.errors import (
    Conflict,
    InvalidRequest,
    Unavailable,
    UnknownApp,
    UnknownModel,
    UnknownVariant,
)
from registry import audit as _audit  # noqa: F401 (declares its tables)
from registry import jobs as _jobs  # noqa: F401 (declares its tables)
from registry import keys as _keys  # noqa: F401 (declares its tables)
from registry import registrations as _registrations  # noqa: F401 (declares its tables)
from registry.catalog_engine import WRITE_OPTION, make_engine, normalize_url, safe_url
from registry.catalog_rows import (
    app_record,
    app_row,
    as_utc,
    fill_variant_row,
    model_record,
    model_row,
    variant_record,
)
from registry.catalog_schema import (
    META_ROW_ID,
    AppRow,
    Base,
    CatalogMetaRow,
    ModelRow,
    VariantRow,
    create_schema,
)
from registry.tenancy import owner_of
from registry.types import (
    READY,
    VARIANT_STATUSES,
    App,
    CatalogSnapshot,
    Model,
    Profile,
    Variant,
    utcnow,
)

__all__ = ["Catalog", "TenantUsage", "normalize_url"]


@dataclass(frozen=True, slots=True)
class TenantUsage:
    """What a tenant holds in the catalog, against its quotas (api_gateway/quotas.py)."""

    tenant: str
    variants: int
    stored_bytes: int


# A check of a new model against its tenant's usage, made inside the model's write
# transaction (writers are serialized, so two gateways cannot both pass it): raises to
# refuse the model, which then changes nothing.
UsageCheck = Callable[[TenantUsage], None]


# ------------------------------------------------------------------------- checks


def _check_status(status: str) -> str:
    if status not in VARIANT_STATUSES:
        raise InvalidRequest(
            f"status {status!r} is not one of {list(VARIANT_STATUSES)}; use one of those"
        )
    return status


def _unknown_app(app_id: str) -> UnknownApp:
    return UnknownApp(f"app {app_id!r} does not exist; check the id against the list of apps")


def _unknown_model(model_id: str) -> UnknownModel:
    return UnknownModel(
        f"model {model_id!r} does not exist; check the id against the list of models"
    )


def _unknown_variant(variant_id: str) -> UnknownVariant:
    return UnknownVariant(
        f"variant {variant_id!r} does not exist; check the id against the list of variants"
    )


def _require_app(session: Session, app_id: str) -> AppRow:
    row = session.get(AppRow, app_id)
    if row is None:
        raise _unknown_app(app_id)
    return row


def _require_model(session: Session, model_id: str) -> ModelRow:
    row = session.get(ModelRow, model_id)
    if row is None:
        raise _unknown_model(model_id)
    return row


def _require_variant(session: Session, variant_id: str) -> VariantRow:
    row = session.get(VariantRow, variant_id)
    if row is None:
        raise _unknown_variant(variant_id)
    return row


def _names(ids: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


# ------------------------------------------------------------------------ catalog


class Catalog:
    """Apps, models and variants in an SQL database (SQLite file or PostgreSQL)."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self._url = normalize_url(url)
        self.safe_url = safe_url(self._url)
        self._engine = make_engine(self._url, echo=echo)
        self._writer = self._engine.execution_options(**{WRITE_OPTION: True})
        snapshot_engine = self._engine
        if self._engine.dialect.name == "postgresql":
            snapshot_engine = self._engine.execution_options(isolation_level="REPEATABLE READ")
        self._read_sessions = sessionmaker(self._engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self._writer, expire_on_commit=False)
        self._snapshot_sessions = sessionmaker(snapshot_engine, expire_on_commit=False)
        try:
            with self._reachable(), self._writer.begin() as connection:
                create_schema(connection)
        except BaseException:
            self._engine.dispose()
            raise

    # -- lifecycle and shared plumbing

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Catalog({self.safe_url!r})"

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        """Turn "cannot talk to the database" into :class:`Unavailable`."""
        try:
            yield
        except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as error:
            reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
            if self._url.password:
                reason = reason.replace(str(self._url.password), "***")
            raise Unavailable(
                f"the catalog database {self.safe_url} cannot be used ({reason}); check that "
                "it is running and reachable and that INFAAS_CATALOG_URL is right, then retry"
            ) from error

    @contextmanager
    def write_session(self, *, bump: bool = True) -> Iterator[Session]:
        """One write transaction, committed on success and rolled back on any error.

        It first bumps the revision (``bump=True``), which also serializes writers."""
        with self._reachable(), self._write_sessions.begin() as session:
            if bump:
                session.execute(
                    update(CatalogMetaRow)
                    .where(CatalogMetaRow.id == META_ROW_ID)
                    .values(revision=CatalogMetaRow.revision + 1, updated_at=utcnow())
                )
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """One read transaction."""
        with self._reachable(), self._read_sessions.begin() as session:
            yield session

    def revision(self) -> int:
        with self.read_session() as session:
            return _read_revision(session)

    # -- apps

    def create_app(self, app: App) -> App:
        with self.write_session() as session:
            if session.get(AppRow, app.id) is not None:
                raise Conflict(f"app {app.id!r} already exists; pick another id or delete it first")
            row = app_row(app)
            session.add(row)
            return app_record(row)

    def get_app(self, app_id: str) -> App:
        with self.read_session() as session:
            return app_record(_require_app(session, app_id))

    def list_apps(self) -> list[App]:
        with self.read_session() as session:
            return [app_record(r) for r in session.scalars(select(AppRow).order_by(AppRow.id))]

    def delete_app(self, app_id: str) -> None:
        with self.write_session() as session:
            row = _require_app(session, app_id)
            models = list(
                session.scalars(
                    select(ModelRow.id).where(ModelRow.app_id == app_id).order_by(ModelRow.id)
                )
            )
            if models:
                raise Conflict(
                    f"app {app_id!r} still has {len(models)} model(s) ({_names(models)}); "
                    "delete its models first"
                )
            session.delete(row)

    # -- models

    def add_model(
        self,
        model: Model,
        *,
        with_rows: Sequence[Base] = (),
        new_app: App | None = None,
        stored_bytes: int = 0,
        check_usage: UsageCheck | None = None,
    ) -> Model:
        """Add the model; ``with_rows`` (rows of later tables, e.g. its registration) are
        inserted in the same transaction, so either all of them exist or none does.
        ``new_app`` is created in that transaction too (Conflict if it exists): a model
        refused here leaves no empty app behind. ``stored_bytes``: what its files take in
        the store; ``check_usage`` sees its tenant's usage before it is added."""
        _check_status(model.status)
        with self.write_session() as session:
            if check_usage is not None:
                check_usage(_usage(session, owner_of(model.id)))
            if new_app is not None:
                if session.get(AppRow, new_app.id) is not None:
                    raise Conflict(
                        f"app {new_app.id!r} was created meanwhile; register the model "
                        "again to add it to that app"
                    )
                session.add(app_row(new_app))
                session.flush()
            _require_app(session, model.app)
            taken = session.get(ModelRow, model.id)
            if taken is not None:
                raise Conflict(
                    f"model {model.id!r} already exists (in app {taken.app_id!r}); model ids "
                    "are unique across apps, so pick another id or delete that model first"
                )
            row = model_row(model, stored_bytes=stored_bytes)
            session.add(row)
            session.add_all(list(with_rows))
            return model_record(row)

    def get_model(self, model_id: str) -> Model:
        with self.read_session() as session:
            return model_record(_require_model(session, model_id))

    def list_models(self, app_id: str | None = None) -> list[Model]:
        query = select(ModelRow).order_by(ModelRow.id)
        if app_id is not None:
            query = query.where(ModelRow.app_id == app_id)
        with self.read_session() as session:
            return [model_record(r) for r in session.scalars(query)]

    def set_model_status(self, model_id: str, status: str) -> None:
        _check_status(status)
        with self.write_session() as session:
            row = _require_model(session, model_id)
            row.status = status
            row.updated_at = utcnow()

    def delete_model(self, model_id: str) -> list[Variant]:
        """Delete the model and its variants; return the variants (to remove artifacts)."""
        with self.write_session() as session:
            row = _require_model(session, model_id)
            variants = list(
                session.scalars(
                    select(VariantRow)
                    .where(VariantRow.model_id == model_id)
                    .order_by(VariantRow.id)
                )
            )
            deleted = [variant_record(v) for v in variants]
            for variant in variants:
                session.delete(variant)
            session.flush()
            session.delete(row)
            return deleted

    # -- variants

    def upsert_variant(self, variant: Variant) -> Variant:
        """Insert the variant, or replace the one with its id (keeping its creation time)."""
        _check_status(variant.status)
        with self.write_session() as session:
            model = _require_model(session, variant.model)
            if model.app_id != variant.app:
                raise InvalidRequest(
                    f"variant {variant.id!r} names app {variant.app!r} but its model "
                    f"{variant.model!r} belongs to app {model.app_id!r}; set app to "
                    f"{model.app_id!r}"
                )
            row = session.get(VariantRow, variant.id)
            if row is None:
                row = VariantRow(id=variant.id, created_at=as_utc(variant.created_at))
                session.add(row)
            fill_variant_row(row, variant)
            return variant_record(row)

    def get_variant(self, variant_id: str) -> Variant:
        with self.read_session() as session:
            return variant_record(_require_variant(session, variant_id))

    def list_variants(
        self,
        *,
        app_id: str | None = None,
        model_id: str | None = None,
        hardware: str | None = None,
        status: str | None = None,
    ) -> list[Variant]:
        """Variants matching every filter given, ordered by id."""
        query = select(VariantRow).order_by(VariantRow.id)
        if app_id is not None:
            query = query.where(VariantRow.app_id == app_id)
        if model_id is not None:
            query = query.where(VariantRow.model_id == model_id)
        if hardware is not None:
            query = query.where(VariantRow.hardware == hardware)
        if status is not None:
            query = query.where(VariantRow.status == _check_status(status))
        with self.read_session() as session:
            return [variant_record(r) for r in session.scalars(query)]

    def set_variant_status(self, variant_id: str, status: str, error: str = "") -> None:
        _check_status(status)
        with self.write_session() as session:
            row = _require_variant(session, variant_id)
            row.status = status
            row.error = error
            row.updated_at = utcnow()

    def set_variant_profile(
        self,
        variant_id: str,
        profile: Profile,
        *,
        cost_per_hour: float | None = None,
        instance_class: str | None = None,
    ) -> None:
        """Store the measured profile and mark the variant ready (clearing any error)."""
        with self.write_session() as session:
            row = _require_variant(session, variant_id)
            row.profile = profile.to_dict()
            row.status = READY
            row.error = ""
            if cost_per_hour is not None:
                row.cost_usd_per_hour = cost_per_hour
            if instance_class is not None:
                row.instance_class = instance_class
            row.updated_at = utcnow()

    def usage(self, tenant: str) -> TenantUsage:
        with self.read_session() as session:
            return _usage(session, tenant)

    # -- everything at once

    def snapshot(self) -> CatalogSnapshot:
        """Apps, models, variants and the revision, read in one transaction."""
        with self._reachable(), self._snapshot_sessions.begin() as session:
            revision = _read_revision(session)
            apps = session.scalars(select(AppRow).order_by(AppRow.id))
            app_records = {row.id: app_record(row) for row in apps}
            models = session.scalars(select(ModelRow).order_by(ModelRow.id))
            model_records = {row.id: model_record(row) for row in models}
            variants = session.scalars(select(VariantRow).order_by(VariantRow.id))
            variant_records = {row.id: variant_record(row) for row in variants}
        return CatalogSnapshot(
            revision=revision, apps=app_records, models=model_records, variants=variant_records
        )


def _usage(session: Session, tenant: str) -> TenantUsage:
    variants = session.scalar(
        select(func.count()).select_from(VariantRow).where(VariantRow.tenant == tenant)
    )
    stored = session.scalar(
        select(func.coalesce(func.sum(ModelRow.stored_bytes), 0)).where(ModelRow.tenant == tenant)
    )
    return TenantUsage(tenant, int(variants or 0), int(stored or 0))


def _read_revision(session: Session) -> int:
    value = session.scalar(select(CatalogMetaRow.revision).where(CatalogMetaRow.id == META_ROW_ID))
    return int(value or 0)
