"""The catalog's database engine: URLs, drivers and per-backend settings.

SQLite gets WAL, a busy timeout, foreign keys and ``BEGIN IMMEDIATE`` for writers (so a
writer never upgrades a read lock, which fails at once under WAL); PostgreSQL URLs of
any spelling use the psycopg 3 driver with a connect timeout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from queues.errors import ConfigError, Unavailable

SQLITE_BUSY_TIMEOUT_S = 30.0
POSTGRES_CONNECT_TIMEOUT_S = 10
# Execution option marking a connection that will write (SQLite: BEGIN IMMEDIATE).
WRITE_OPTION = "infaas_catalog_write"
_POSTGRES_ALIASES = frozenset({"postgres", "postgresql", "postgresql+psycopg2"})


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
        writes = connection.get_execution_options().get(WRITE_OPTION, False)
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
            f"no database driver for the catalog URL {safe_url(url)} ({error}); "
            "use sqlite:///path or postgresql://user:password@host:port/database"
        ) from error


def safe_url(url: URL) -> str:
    return url.render_as_string(hide_password=True)
