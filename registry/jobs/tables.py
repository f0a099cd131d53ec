"""The catalog's tables of batch jobs: one row per job, one per chunk.

Importing this module declares them on the catalog's metadata (the catalog imports the
package for that)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from registry.catalog_schema import Base, JSONColumn, UTCDateTime


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("tenant", "idempotency_key"),)

    id: Mapped[str] = mapped_column(String, primary_key=True)
    tenant: Mapped[str] = mapped_column(String, nullable=False)
    app_id: Mapped[str] = mapped_column(String, nullable=False, index=True)
    status: Mapped[str] = mapped_column(String, nullable=False, index=True)
    variant_id: Mapped[str] = mapped_column(String, nullable=False)
    hardware: Mapped[str] = mapped_column(String, nullable=False)
    input_bucket: Mapped[str] = mapped_column(String, nullable=False)
    input_prefix: Mapped[str] = mapped_column(String, nullable=False)
    uploaded: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    output_bucket: Mapped[str] = mapped_column(String, nullable=False)
    output_prefix: Mapped[str] = mapped_column(String, nullable=False)
    min_accuracy: Mapped[float] = mapped_column(Float, nullable=False)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    max_cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String, nullable=True)
    fingerprint: Mapped[str] = mapped_column(String, nullable=False)
    chunk_items: Mapped[int] = mapped_column(Integer, nullable=False)
    items_total: Mapped[int] = mapped_column(Integer, nullable=False)
    chunks_total: Mapped[int] = mapped_column(Integer, nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False)
    estimate: Mapped[dict[str, Any]] = mapped_column(JSONColumn, nullable=False)
    error: Mapped[str] = mapped_column(Text, nullable=False, default="")
    manifest_key: Mapped[str] = mapped_column(String, nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ChunkRow(Base):
    __tablename__ = "job_chunks"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    chunk_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    input_key: Mapped[str] = mapped_column(String, nullable=False)
    input_size_bytes: Mapped[int] = mapped_column(Integer, nullable=False)
    row_start: Mapped[int] = mapped_column(Integer, nullable=False)
    row_stop: Mapped[int] = mapped_column(Integer, nullable=False)
    first_item: Mapped[int] = mapped_column(Integer, nullable=False)
    output_key: Mapped[str] = mapped_column(String, nullable=False)
    status: Mapped[str] = mapped_column(String, nullable=False)
    worker: Mapped[str] = mapped_column(String, nullable=False, default="")
    variant_id: Mapped[str] = mapped_column(String, nullable=False, default="")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    output_writes: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    publishes: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    model_ms: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    cost_usd: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    error: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
