"""The audit log: one row per change made through the gateway (registering, deleting,
cancelling, making or revoking a key), who made it and how it ended.

Rows are only ever appended; writing one does not bump the catalog revision (nothing the
selector reads changes). Refused attempts by a known key are kept too (``forbidden``,
``not_found``...); requests with no valid key are not, so that nobody without a key can
fill the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from registry.catalog_schema import Base, UTCDateTime
from registry.types import iso, utcnow

if TYPE_CHECKING:
    from registry.catalog import Catalog

OK = "ok"
MAX_MESSAGE_CHARS = 500


class AuditRow(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    tenant: Mapped[str] = mapped_column(String, nullable=False, index=True)
    key_id: Mapped[str | None] = mapped_column(String, nullable=True)
    role: Mapped[str] = mapped_column(String, nullable=False)
    method: Mapped[str] = mapped_column(String, nullable=False)
    route: Mapped[str] = mapped_column(String, nullable=False)
    target: Mapped[str] = mapped_column(String, nullable=False, default="")
    outcome: Mapped[str] = mapped_column(String, nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False, default="")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change. ``key_id`` is None when authentication is off; ``outcome`` is ``ok``
    or the error code the caller got."""

    tenant: str
    key_id: str | None
    role: str
    method: str
    route: str
    target: str
    outcome: str
    message: str = ""
    at: datetime | None = None
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": iso(self.at),
            "tenant": self.tenant,
            "key_id": self.key_id,
            "role": self.role,
            "method": self.method,
            "route": self.route,
            "target": self.target,
            "outcome": self.outcome,
            "message": self.message,
        }


class AuditLog:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def record(self, entry: AuditEntry) -> None:
        with self.catalog.write_session(bump=False) as session:
            session.add(
                AuditRow(
                    at=entry.at or utcnow(),
                    tenant=entry.tenant,
                    key_id=entry.key_id,
                    role=entry.role,
                    method=entry.method,
                    route=entry.route,
                    target=entry.target[:MAX_MESSAGE_CHARS],
                    outcome=entry.outcome,
                    message=entry.message[:MAX_MESSAGE_CHARS],
                )
            )

    def recent(
        self, *, limit: int = 100, tenant: str | None = None, before: int | None = None
    ) -> list[AuditEntry]:
        """Newest first; ``before`` (an id) pages back."""
        query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        if tenant is not None:
            query = query.where(AuditRow.tenant == tenant)
        if before is not None:
            query = query.where(AuditRow.id < before)
        with self.catalog.read_session() as session:
            return [
                AuditEntry(
                    id=row.id,
                    at=row.at,
                    tenant=row.tenant,
                    key_id=row.key_id,
                    role=row.role,
                    method=row.method,
                    route=row.route,
                    target=row.target,
                    outcome=row.outcome,
                    message=row.message,
                )
                for row in session.scalars(query)
            ]
