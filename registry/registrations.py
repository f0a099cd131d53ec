"""Registration records: one per uploaded model, with the progress of each hardware's
generation-and-profiling task and of every variant that task builds.

The gateway writes a registration in the same transaction as its model (so both exist or
neither does); workers write progress as they go; the gateway and the CLI read it. The
registry names the worker task (:data:`REGISTER_TASK`) and never imports the workers.

Progress writes do not bump the catalog revision: they change nothing the selector
reads (a variant's own row, written through the catalog, does).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKey, Integer, String, Text, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from queues.errors import InvalidRequest, NotFound
from registry.catalog_schema import Base, JSONColumn, UTCDateTime
from registry.tenancy import DEFAULT_TENANT, owner_of
from registry.types import FAILED, READY, VARIANT_STATUSES, iso, utcnow

if TYPE_CHECKING:
    from registry.catalog import Catalog

# The Celery task a worker of the named hardware runs: (registration id, hardware).
REGISTER_TASK = "infaas.registration.generate_and_profile"

# Status of one hardware's task, and of a whole registration.
TASK_QUEUED = "queued"
TASK_RUNNING = "running"
TASK_DONE = "done"
TASK_FAILED = "failed"
TASK_STATUSES = (TASK_QUEUED, TASK_RUNNING, TASK_DONE, TASK_FAILED)
FINISHED_TASK_STATUSES = frozenset({TASK_DONE, TASK_FAILED})

DEFAULT_BATCH_SIZES = (1, 4, 8, 16, 32, 64)
DEFAULT_BUDGET_S_PER_BATCH = 0.4


# ----------------------------------------------------------------------------- tables


class RegistrationRow(Base):
    __tablename__ = "registrations"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    tenant: Mapped[str] = mapped_column(String, nullable=False, default=DEFAULT_TENANT, index=True)
    app_id: Mapped[str] = mapped_column(String, nullable=False, index=True)
    model_id: Mapped[str] = mapped_column(String, nullable=False, index=True)
    options: Mapped[dict[str, Any]] = mapped_column(JSONColumn, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class RegistrationTaskRow(Base):
    """One hardware's generation-and-profiling task of a registration."""

    __tablename__ = "registration_tasks"

    registration_id: Mapped[str] = mapped_column(ForeignKey("registrations.id"), primary_key=True)
    hardware: Mapped[str] = mapped_column(String, primary_key=True)
    status: Mapped[str] = mapped_column(String, nullable=False)
    worker: Mapped[str] = mapped_column(String, nullable=False, default="")
    error: Mapped[str] = mapped_column(Text, nullable=False, default="")
    notes: Mapped[list[str]] = mapped_column(JSONColumn, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RegistrationResendRow(Base):
    """How often the gateway's sweeper sent a queued task again (registry/registration_sweep.py);
    a table of its own, so catalogs made before it gain it without a migration."""

    __tablename__ = "registration_resends"

    registration_id: Mapped[str] = mapped_column(ForeignKey("registrations.id"), primary_key=True)
    hardware: Mapped[str] = mapped_column(String, primary_key=True)
    sends: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class RegistrationVariantRow(Base):
    """Progress of one variant within a registration (kept after the variant is gone)."""

    __tablename__ = "registration_variants"

    registration_id: Mapped[str] = mapped_column(ForeignKey("registrations.id"), primary_key=True)
    variant_id: Mapped[str] = mapped_column(String, primary_key=True)
    hardware: Mapped[str] = mapped_column(String, nullable=False)
    status: Mapped[str] = mapped_column(String, nullable=False)
    error: Mapped[str] = mapped_column(Text, nullable=False, default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class RegistrationOptions:
    """How thoroughly to profile; chosen per registration, read by the workers."""

    budget_s_per_batch: float = DEFAULT_BUDGET_S_PER_BATCH
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES

    def __post_init__(self) -> None:
        if not 0.01 <= self.budget_s_per_batch <= 10.0:
            raise InvalidRequest(
                f"budget_s_per_batch {self.budget_s_per_batch:g} is outside [0.01, 10] "
                "seconds; pick a value in that range (default 0.4)"
            )
        sizes = self.batch_sizes
        if not sizes or any(b < 1 or b > 4096 for b in sizes) or list(sizes) != sorted(set(sizes)):
            raise InvalidRequest(
                f"batch_sizes {list(sizes)} must be increasing, distinct and in [1, 4096]; "
                f"e.g. {list(DEFAULT_BATCH_SIZES)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_s_per_batch": self.budget_s_per_batch,
            "batch_sizes": list(self.batch_sizes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegistrationOptions:
        return cls(
            budget_s_per_batch=float(data.get("budget_s_per_batch", DEFAULT_BUDGET_S_PER_BATCH)),
            batch_sizes=tuple(int(b) for b in data.get("batch_sizes", DEFAULT_BATCH_SIZES)),
        )


@dataclass(frozen=True, slots=True)
class TaskProgress:
    hardware: str
    status: str
    worker: str = ""
    error: str = ""
    notes: tuple[str, ...] = ()
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_TASK_STATUSES


@dataclass(frozen=True, slots=True)
class VariantProgress:
    variant: str
    hardware: str
    status: str
    error: str = ""
    updated_at: datetime = field(default_factory=utcnow)


def registration_status(tasks: Sequence[TaskProgress], variants: Sequence[VariantProgress]) -> str:
    """One word for a registration: ``queued`` until a worker starts, ``running`` while
    any task is unfinished, then ``ready`` if any variant is ready, else ``failed``."""
    if not tasks or all(t.status == TASK_QUEUED for t in tasks):
        return TASK_QUEUED
    if not all(t.finished for t in tasks):
        return TASK_RUNNING
    return READY if any(v.status == READY for v in variants) else FAILED


@dataclass(frozen=True, slots=True)
class Registration:
    id: str
    app: str
    model: str
    options: RegistrationOptions
    tasks: tuple[TaskProgress, ...]
    variants: tuple[VariantProgress, ...]
    created_at: datetime
    updated_at: datetime

    @property
    def status(self) -> str:
        return registration_status(self.tasks, self.variants)

    @property
    def finished(self) -> bool:
        return bool(self.tasks) and all(t.finished for t in self.tasks)

    def task(self, hardware: str) -> TaskProgress | None:
        return next((t for t in self.tasks if t.hardware == hardware), None)

    def to_dict(self, name: Callable[[str], str] = str) -> dict[str, Any]:
        """``name`` shows an internal app, model or variant id as the caller calls it
        (:meth:`registry.tenancy.Namespace.outside`)."""
        counts = dict.fromkeys(VARIANT_STATUSES, 0)
        for variant in self.variants:
            counts[variant.status] = counts.get(variant.status, 0) + 1
        return {
            "registration": self.id,
            "app": name(self.app),
            "model": name(self.model),
            "status": self.status,
            "finished": self.finished,
            "options": self.options.to_dict(),
            "hardware": {
                t.hardware: {
                    "status": t.status,
                    "worker": t.worker or None,
                    "error": t.error or None,
                    "notes": list(t.notes),
                    "attempts": t.attempts,
                    "started_at": iso(t.started_at),
                    "finished_at": iso(t.finished_at),
                }
                for t in self.tasks
            },
            "variants": [
                {
                    "id": name(v.variant),
                    "hardware": v.hardware,
                    "status": v.status,
                    "error": v.error or None,
                    "updated_at": iso(v.updated_at),
                }
                for v in self.variants
            ],
            "counts": counts,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class QueuedTask:
    """A task no worker has started: what the sweeper decides on."""

    registration: str
    model: str
    hardware: str
    created_at: datetime
    resends: int = 0
    resent_at: datetime | None = None


def new_registration_id() -> str:
    return uuid.uuid4().hex


def new_registration_rows(
    registration_id: str,
    app: str,
    model: str,
    hardware: Iterable[str],
    options: RegistrationOptions,
) -> list[Base]:
    """The rows of a new registration (one queued task per hardware), to insert together
    with its model (:meth:`registry.catalog.Catalog.add_model` ``with_rows``)."""
    now = utcnow()
    targets = sorted(set(hardware))
    if not targets:
        raise InvalidRequest("a registration needs at least one hardware kind (cpu or gpu)")
    rows: list[Base] = [
        RegistrationRow(
            id=registration_id,
            tenant=owner_of(model),
            app_id=app,
            model_id=model,
            options=options.to_dict(),
            created_at=now,
            updated_at=now,
        )
    ]
    rows.extend(
        RegistrationTaskRow(
            registration_id=registration_id, hardware=hw, status=TASK_QUEUED, notes=[], attempts=0
        )
        for hw in targets
    )
    return rows


# ------------------------------------------------------------------------------ store


class UnknownRegistration(NotFound):
    pass


def unknown_registration(registration_id: str) -> UnknownRegistration:
    return UnknownRegistration(
        f"registration {registration_id!r} does not exist; use the id that "
        "POST /v1/apps/<app>/models answered with"
    )


def _task_record(row: RegistrationTaskRow) -> TaskProgress:
    return TaskProgress(
        hardware=row.hardware,
        status=row.status,
        worker=row.worker,
        error=row.error,
        notes=tuple(row.notes or ()),
        attempts=row.attempts,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _variant_record(row: RegistrationVariantRow) -> VariantProgress:
    return VariantProgress(
        variant=row.variant_id,
        hardware=row.hardware,
        status=row.status,
        error=row.error,
        updated_at=row.updated_at,
    )


class RegistrationStore:
    """Registration records in the catalog's database."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    # -- reading

    def get(self, registration_id: str) -> Registration:
        with self._catalog.read_session() as session:
            return self._load(session, registration_id)

    def for_model(self, model_id: str) -> list[Registration]:
        with self._catalog.read_session() as session:
            ids = session.scalars(
                select(RegistrationRow.id)
                .where(RegistrationRow.model_id == model_id)
                .order_by(RegistrationRow.created_at)
            ).all()
            return [self._load(session, reg_id) for reg_id in ids]

    def all(self) -> list[Registration]:
        with self._catalog.read_session() as session:
            ids = session.scalars(
                select(RegistrationRow.id).order_by(RegistrationRow.created_at)
            ).all()
            return [self._load(session, reg_id) for reg_id in ids]

    def _load(self, session: Session, registration_id: str) -> Registration:
        row = session.get(RegistrationRow, registration_id)
        if row is None:
            raise unknown_registration(registration_id)
        tasks = session.scalars(
            select(RegistrationTaskRow)
            .where(RegistrationTaskRow.registration_id == registration_id)
            .order_by(RegistrationTaskRow.hardware)
        ).all()
        variants = session.scalars(
            select(RegistrationVariantRow)
            .where(RegistrationVariantRow.registration_id == registration_id)
            .order_by(RegistrationVariantRow.variant_id)
        ).all()
        return Registration(
            id=row.id,
            app=row.app_id,
            model=row.model_id,
            options=RegistrationOptions.from_dict(row.options),
            tasks=tuple(_task_record(t) for t in tasks),
            variants=tuple(_variant_record(v) for v in variants),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def queued_tasks(self) -> list[QueuedTask]:
        """Every task still queued, with how often the sweeper sent it again."""
        with self._catalog.read_session() as session:
            rows = session.execute(
                select(RegistrationTaskRow, RegistrationRow, RegistrationResendRow)
                .join(RegistrationRow, RegistrationRow.id == RegistrationTaskRow.registration_id)
                .outerjoin(
                    RegistrationResendRow,
                    (RegistrationResendRow.registration_id == RegistrationTaskRow.registration_id)
                    & (RegistrationResendRow.hardware == RegistrationTaskRow.hardware),
                )
                .where(RegistrationTaskRow.status == TASK_QUEUED)
                .order_by(RegistrationRow.created_at, RegistrationTaskRow.hardware)
            ).all()
            return [
                QueuedTask(
                    registration=reg.id,
                    model=reg.model_id,
                    hardware=task.hardware,
                    created_at=reg.created_at,
                    resends=resend.sends if resend is not None else 0,
                    resent_at=resend.sent_at if resend is not None else None,
                )
                for task, reg, resend in rows
            ]

    # -- writing (the gateway's sweeper)

    def mark_resent(self, registration_id: str, hardware: str) -> None:
        with self._catalog.write_session(bump=False) as session:
            self._require(session, registration_id)
            row = session.get(RegistrationResendRow, (registration_id, hardware))
            if row is None:
                row = RegistrationResendRow(
                    registration_id=registration_id, hardware=hardware, sends=0
                )
                session.add(row)
            row.sends = (row.sends or 0) + 1
            row.sent_at = utcnow()

    # -- writing (workers)

    def start_task(self, registration_id: str, hardware: str, worker: str) -> Registration:
        """Mark this hardware's task running (again, if a killed worker's task is redone)."""
        with self._catalog.write_session(bump=False) as session:
            reg = self._require(session, registration_id)
            task = session.get(RegistrationTaskRow, (registration_id, hardware))
            if task is None:
                task = RegistrationTaskRow(
                    registration_id=registration_id, hardware=hardware, notes=[], attempts=0
                )
                session.add(task)
            task.status = TASK_RUNNING
            task.worker = worker
            task.error = ""
            task.notes = []
            task.attempts = (task.attempts or 0) + 1
            task.started_at = utcnow()
            task.finished_at = None
            reg.updated_at = utcnow()
        return self.get(registration_id)

    def finish_task(
        self,
        registration_id: str,
        hardware: str,
        *,
        failed: bool = False,
        error: str = "",
        notes: Sequence[str] = (),
    ) -> None:
        with self._catalog.write_session(bump=False) as session:
            reg = self._require(session, registration_id)
            task = session.get(RegistrationTaskRow, (registration_id, hardware))
            if task is None:
                raise UnknownRegistration(
                    f"registration {registration_id!r} has no {hardware} task"
                )
            task.status = TASK_FAILED if failed else TASK_DONE
            task.error = error
            task.notes = list(notes)
            task.finished_at = utcnow()
            reg.updated_at = utcnow()

    def set_variant(
        self, registration_id: str, variant_id: str, hardware: str, status: str, error: str = ""
    ) -> None:
        if status not in VARIANT_STATUSES:
            raise InvalidRequest(f"status {status!r} is not one of {list(VARIANT_STATUSES)}")
        with self._catalog.write_session(bump=False) as session:
            reg = self._require(session, registration_id)
            row = session.get(RegistrationVariantRow, (registration_id, variant_id))
            if row is None:
                row = RegistrationVariantRow(registration_id=registration_id, variant_id=variant_id)
                session.add(row)
            row.hardware = hardware
            row.status = status
            row.error = error
            row.updated_at = utcnow()
            reg.updated_at = row.updated_at

    def delete_for_model(self, model_id: str) -> int:
        """Remove every registration of ``model_id``; returns how many there were."""
        with self._catalog.write_session(bump=False) as session:
            ids = list(
                session.scalars(
                    select(RegistrationRow.id).where(RegistrationRow.model_id == model_id)
                )
            )
            if ids:
                for table in (RegistrationVariantRow, RegistrationResendRow, RegistrationTaskRow):
                    session.execute(delete(table).where(table.registration_id.in_(ids)))
                session.execute(delete(RegistrationRow).where(RegistrationRow.id.in_(ids)))
            return len(ids)

    @staticmethod
    def _require(session: Session, registration_id: str) -> RegistrationRow:
        row = session.get(RegistrationRow, registration_id)
        if row is None:
            raise UnknownRegistration(
                f"registration {registration_id!r} does not exist (its model may have been deleted)"
            )
        return row
