"""API keys: who may call the gateway, for which tenant, with which role.

A key is ``infaas_<id>_<secret>``: a 12-hex-digit public id (shown in listings and the
audit log) and 32 random bytes. The catalog keeps only the SHA-256 of the whole key, so
a copy of the database lets nobody call the gateway. A plain SHA-256 is enough because
the secret is 256 random bits: a slow password hash (bcrypt, argon2) protects guessable
secrets and would cost every query tens of milliseconds. Keys are looked up by their id
and compared in constant time (:func:`hmac.compare_digest`).

A key chosen by the operator (``INFAAS_BOOTSTRAP_ADMIN_KEY``) need not have that shape;
its id is then derived from its hash (``ext-<8 hex>``).

Roles are ordered: ``query`` sends queries and reads apps and stats; ``deploy`` also
registers and deletes apps and models and runs batch jobs; ``admin`` does everything
(keys, the scaler's plan, the audit log) for every tenant.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, Text, func, select
from sqlalchemy.orm import Mapped, mapped_column

from queues.errors import ConfigError, Conflict, InvalidRequest, NotFound
from registry.catalog_schema import Base, UTCDateTime
from registry.tenancy import check_tenant
from registry.types import iso, utcnow

if TYPE_CHECKING:
    from registry.catalog import Catalog

KEY_PREFIX = "infaas_"
_KEY_RE = re.compile(r"^infaas_(?P<id>[0-9a-f]{12})_[A-Za-z0-9_-]{43}$")
MIN_CHOSEN_KEY_CHARS = 32
MAX_KEY_CHARS = 512
MAX_NOTE_CHARS = 200


class Role(StrEnum):
    QUERY = "query"
    DEPLOY = "deploy"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        """Whether a key of this role may call a route that needs ``needed``."""
        return self.rank >= needed.rank


_RANKS = {Role.QUERY: 0, Role.DEPLOY: 1, Role.ADMIN: 2}


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidRequest(
            f"role {value!r} is not one of {[r.value for r in Role]}: query sends queries, "
            "deploy also registers models and runs jobs, admin does everything"
        ) from None


# ------------------------------------------------------------------ key material


def new_key() -> tuple[str, str]:
    """A fresh key and its id."""
    key_id = secrets.token_hex(6)
    return f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}", key_id


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id_of(key: str) -> str:
    """The id a presented key claims: the one in its text, or, for a key of another
    shape (an operator's bootstrap key), one derived from its hash."""
    match = _KEY_RE.match(key)
    if match:
        return match.group("id")
    return "ext-" + hash_key(key)[:8]


def matches(key: str, key_hash: str) -> bool:
    """Constant-time: does ``key`` hash to ``key_hash``?"""
    return hmac.compare_digest(hash_key(key).encode(), key_hash.encode())


def check_chosen_key(key: str) -> str:
    """An operator-chosen key (the bootstrap setting) must be long enough to guess."""
    if len(key) < MIN_CHOSEN_KEY_CHARS or len(key) > MAX_KEY_CHARS or not key.isprintable():
        raise ConfigError(
            f"INFAAS_BOOTSTRAP_ADMIN_KEY must be {MIN_CHOSEN_KEY_CHARS} to {MAX_KEY_CHARS} "
            "printable characters; make one with `python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`"
        )
    return key


# ---------------------------------------------------------------------- table


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    key_hash: Mapped[str] = mapped_column(String, nullable=False)
    tenant: Mapped[str] = mapped_column(String, nullable=False, index=True)
    role: Mapped[str] = mapped_column(String, nullable=False)
    note: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_by: Mapped[str] = mapped_column(String, nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key's record; never its secret."""

    id: str
    key_hash: str
    tenant: str
    role: Role
    note: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "role": self.role.value,
            "note": self.note,
            "created_by": self.created_by,
            "created_at": iso(self.created_at),
            "revoked_at": iso(self.revoked_at),
        }


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made: the only time its secret is seen."""

    key: str
    record: ApiKey

    def to_dict(self) -> dict[str, Any]:
        return {**self.record.to_dict(), "key": self.key}


def _record(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        key_hash=row.key_hash,
        tenant=row.tenant,
        role=Role(row.role),
        note=row.note,
        created_by=row.created_by,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _check_note(note: str) -> str:
    if len(note) > MAX_NOTE_CHARS or not note.isprintable():
        raise InvalidRequest(f"note must be at most {MAX_NOTE_CHARS} printable characters")
    return note


# ---------------------------------------------------------------------- store


class KeyStore:
    """Keys in the catalog database. Creating and revoking bump the catalog revision,
    which serializes them (so "the last admin key" checks are safe across gateways)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def create(
        self, tenant: str, role: Role | str, *, note: str = "", created_by: str = ""
    ) -> NewKey:
        check_tenant(tenant)
        role = parse_role(role) if isinstance(role, str) else role
        key, key_id = new_key()
        record = self._insert(key, key_id, tenant, role, _check_note(note), created_by)
        return NewKey(key, record)

    def _insert(
        self, key: str, key_id: str, tenant: str, role: Role, note: str, created_by: str
    ) -> ApiKey:
        with self.catalog.write_session() as session:
            if session.get(ApiKeyRow, key_id) is not None:
                raise Conflict(f"an API key with id {key_id!r} exists already; make another")
            row = ApiKeyRow(
                id=key_id,
                key_hash=hash_key(key),
                tenant=tenant,
                role=role.value,
                note=note,
                created_by=created_by,
                created_at=utcnow(),
            )
            session.add(row)
            return _record(row)

    def bootstrap_admin(self, key: str, *, tenant: str = "default") -> ApiKey | None:
        """Make ``key`` an admin key when no active admin key exists; None when one does
        (or this key was made, and revoked, before: a revoked key never comes back)."""
        check_chosen_key(key)
        key_id = key_id_of(key)
        with self.catalog.write_session() as session:
            admins = session.scalar(
                select(func.count())
                .select_from(ApiKeyRow)
                .where(ApiKeyRow.role == Role.ADMIN.value, ApiKeyRow.revoked_at.is_(None))
            )
            if admins or session.get(ApiKeyRow, key_id) is not None:
                return None
            row = ApiKeyRow(
                id=key_id,
                key_hash=hash_key(key),
                tenant=tenant,
                role=Role.ADMIN.value,
                note="INFAAS_BOOTSTRAP_ADMIN_KEY",
                created_by="bootstrap",
                created_at=utcnow(),
            )
            session.add(row)
            return _record(row)

    def get(self, key_id: str) -> ApiKey:
        with self.catalog.read_session() as session:
            row = session.get(ApiKeyRow, key_id)
            if row is None:
                raise _unknown(key_id)
            return _record(row)

    def all(self, *, include_revoked: bool = True) -> list[ApiKey]:
        with self.catalog.read_session() as session:
            query = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
            if not include_revoked:
                query = query.where(ApiKeyRow.revoked_at.is_(None))
            return [_record(row) for row in session.scalars(query)]

    def revoke(self, key_id: str, *, keep_an_admin: bool = False) -> ApiKey:
        """Revoke a key for good. ``keep_an_admin`` refuses to revoke the last active
        admin key (over HTTP, so nobody locks every admin out by mistake)."""
        with self.catalog.write_session() as session:
            row = session.get(ApiKeyRow, key_id)
            if row is None:
                raise _unknown(key_id)
            if row.revoked_at is not None:
                raise Conflict(f"API key {key_id!r} was revoked already, at {iso(row.revoked_at)}")
            if keep_an_admin and row.role == Role.ADMIN.value:
                others = session.scalar(
                    select(func.count())
                    .select_from(ApiKeyRow)
                    .where(
                        ApiKeyRow.role == Role.ADMIN.value,
                        ApiKeyRow.revoked_at.is_(None),
                        ApiKeyRow.id != key_id,
                    )
                )
                if not others:
                    raise Conflict(
                        f"API key {key_id!r} is the last active admin key; create another "
                        "admin key first (or revoke it on the catalog with `infaas keys revoke`)"
                    )
            row.revoked_at = utcnow()
            return _record(row)


def _unknown(key_id: str) -> NotFound:
    return NotFound(f"no API key with id {key_id!r}; `infaas keys list` or GET /v1/keys lists them")
