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

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, create_engine, event, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from queues.errors import (
    ConfigError,
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
from registry.catalog_schema import (
    META_ROW_ID,
    AppRow,
    Base,
    CatalogMetaRow,
    ModelRow,
    VariantRow,
    create_schema,
)
from registry.types import (
    READY,
    VARIANT_STATUSES,
    App,
    CatalogSnapshot,
    InputSignature,
    Model,
    Profile,
    Variant,
    utcnow,
)

SQLITE_BUSY_TIMEOUT_S = 30.0
POSTGRES_CONNECT_TIMEOUT_S = 10
# Execution option marking a connection that will write (SQLite: BEGIN IMMEDIATE).
_WRITE_OPTION = "infaas_catalog_write"
_POSTGRES_ALIASES = frozenset({"postgres", "postgresql", "postgresql+psycopg2"})


# --------------------------------------------------------------------------- engine


def normalize_url(url: str) -> URL:
    """Parse a catalog URL; PostgreSQL URLs of any spelling use the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError as error:
        raise ConfigError(
            f"catalog URL {url!r} is not a valid database URL; use sqlite:///path/to/catalog.db "
            "or postgresql://user:password@host:port/database"
        ) from error
    if parsed.drivername in _POSTGRES_ALIASES:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _is_sqlite_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def _make_sqlite_folder(url: URL) -> None:
    if _is_sqlite_memory(url) or url.query.get("uri") or not url.database:
        return
    folder = Path(url.database).expanduser().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise Unavailable(
            f"cannot create the folder {str(folder)!r} of the SQLite catalog ({error}); "
            "pick a writable place with INFAAS_HOME or INFAAS_CATALOG_URL"
        ) from error


def _sqlite_engine(url: URL, *, echo: bool) -> Engine:
    _make_sqlite_folder(url)
    memory = _is_sqlite_memory(url)
    extra: dict[str, Any] = {"poolclass": StaticPool} if memory else {}
    engine = create_engine(
        url,
        echo=echo,
        pool_pre_ping=True,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
        **extra,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy emit BEGIN (see _on_begin): the sqlite3 module's legacy mode
        # never begins a transaction for SELECT, which would break snapshot().
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A writer takes the write lock up front, so it never has to upgrade a read
        # lock later (which fails at once with "database is locked" under WAL).
        writes = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

    return engine


def make_engine(url: URL, *, echo: bool = False) -> Engine:
    """An engine for the catalog database, configured for its backend."""
    try:
        if url.get_backend_name() == "sqlite":
            return _sqlite_engine(url, echo=echo)
        connect_args: dict[str, Any] = {}
        if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
        return create_engine(url, echo=echo, pool_pre_ping=True, connect_args=connect_args)
    except (sa_exc.NoSuchModuleError, ImportError) as error:
        raise ConfigError(
            f"no database driver for the catalog URL {_safe_url(url)} ({error}); "
            "use sqlite:///path or postgresql://user:password@host:port/database"
        ) from error


def _safe_url(url: URL) -> str:
    return url.render_as_string(hide_password=True)


# ----------------------------------------------------------------- record <-> row


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _app_row(app: App) -> AppRow:
    return AppRow(
        id=app.id,
        task=app.task,
        input_name=app.signature.name,
        input_dtype=app.signature.dtype,
        input_shape=list(app.signature.shape),
        output_kind=app.output_kind,
        num_classes=app.num_classes,
        description=app.description,
        created_at=_as_utc(app.created_at),
    )


def _app_record(row: AppRow) -> App:
    return App(
        id=row.id,
        task=row.task,
        signature=InputSignature(row.input_name, row.input_dtype, tuple(row.input_shape)),
        output_kind=row.output_kind,
        num_classes=row.num_classes,
        description=row.description,
        created_at=_as_utc(row.created_at),
    )


def _model_row(model: Model) -> ModelRow:
    return ModelRow(
        id=model.id,
        app_id=model.app,
        format=model.format,
        artifact_key=model.artifact_key,
        validation_key=model.validation_key,
        output_name=model.output_name,
        status=model.status,
        meta=dict(model.metadata),
        created_at=_as_utc(model.created_at),
        updated_at=utcnow(),
    )


def _model_record(row: ModelRow) -> Model:
    return Model(
        id=row.id,
        app=row.app_id,
        format=row.format,
        artifact_key=row.artifact_key,
        validation_key=row.validation_key,
        output_name=row.output_name,
        status=row.status,
        metadata=dict(row.meta),
        created_at=_as_utc(row.created_at),
    )


def _fill_variant_row(row: VariantRow, variant: Variant) -> None:
    """Copy every field but the id and the creation time onto ``row``."""
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


def _variant_record(row: VariantRow) -> Variant:
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
        created_at=_as_utc(row.created_at),
    )


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
        self.safe_url = _safe_url(self._url)
        self._engine = make_engine(self._url, echo=echo)
        self._writer = self._engine.execution_options(**{_WRITE_OPTION: True})
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
            row = _app_row(app)
            session.add(row)
            return _app_record(row)

    def get_app(self, app_id: str) -> App:
        with self.read_session() as session:
            return _app_record(_require_app(session, app_id))

    def list_apps(self) -> list[App]:
        with self.read_session() as session:
            return [_app_record(r) for r in session.scalars(select(AppRow).order_by(AppRow.id))]

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
        self, model: Model, *, with_rows: Sequence[Base] = (), new_app: App | None = None
    ) -> Model:
        """Add the model; ``with_rows`` (rows of later tables, e.g. its registration) are
        inserted in the same transaction, so either all of them exist or none does.
        ``new_app`` is created in that transaction too (Conflict if it exists): a model
        refused here leaves no empty app behind."""
        _check_status(model.status)
        with self.write_session() as session:
            if new_app is not None:
                if session.get(AppRow, new_app.id) is not None:
                    raise Conflict(
                        f"app {new_app.id!r} was created meanwhile; register the model "
                        "again to add it to that app"
                    )
                session.add(_app_row(new_app))
                session.flush()
            _require_app(session, model.app)
            taken = session.get(ModelRow, model.id)
            if taken is not None:
                raise Conflict(
                    f"model {model.id!r} already exists (in app {taken.app_id!r}); model ids "
                    "are unique across apps, so pick another id or delete that model first"
                )
            row = _model_row(model)
            session.add(row)
            session.add_all(list(with_rows))
            return _model_record(row)

    def get_model(self, model_id: str) -> Model:
        with self.read_session() as session:
            return _model_record(_require_model(session, model_id))

    def list_models(self, app_id: str | None = None) -> list[Model]:
        query = select(ModelRow).order_by(ModelRow.id)
        if app_id is not None:
            query = query.where(ModelRow.app_id == app_id)
        with self.read_session() as session:
            return [_model_record(r) for r in session.scalars(query)]

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
            deleted = [_variant_record(v) for v in variants]
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
                row = VariantRow(id=variant.id, created_at=_as_utc(variant.created_at))
                session.add(row)
            _fill_variant_row(row, variant)
            return _variant_record(row)

    def get_variant(self, variant_id: str) -> Variant:
        with self.read_session() as session:
            return _variant_record(_require_variant(session, variant_id))

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
            return [_variant_record(r) for r in session.scalars(query)]

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

    # -- everything at once

    def snapshot(self) -> CatalogSnapshot:
        """Apps, models, variants and the revision, read in one transaction."""
        with self._reachable(), self._snapshot_sessions.begin() as session:
            revision = _read_revision(session)
            apps = session.scalars(select(AppRow).order_by(AppRow.id))
            app_records = {row.id: _app_record(row) for row in apps}
            models = session.scalars(select(ModelRow).order_by(ModelRow.id))
            model_records = {row.id: _model_record(row) for row in models}
            variants = session.scalars(select(VariantRow).order_by(VariantRow.id))
            variant_records = {row.id: _variant_record(row) for row in variants}
        return CatalogSnapshot(
            revision=revision, apps=app_records, models=model_records, variants=variant_records
        )


def _read_revision(session: Session) -> int:
    value = session.scalar(select(CatalogMetaRow.revision).where(CatalogMetaRow.id == META_ROW_ID))
    return int(value or 0)
