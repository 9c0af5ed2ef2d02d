"""Engine and pool, and the migrations in ``db/`` applied once each."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gis_ioc.cluster import PrivateCluster
from gis_ioc.errors import DatabaseUnavailable, MigrationError
from gis_ioc.settings import Settings

# Per-connection settings for the service: JIT and parallel query halve tile and feature
# throughput on small machines (DESIGN.md, Performance).
SESSION_OPTIONS = "-c jit=off -c max_parallel_workers_per_gather=0 -c timezone=UTC"
MIGRATION_LOCK = 72_010_001  # pg_advisory_xact_lock key: one migrator at a time
_MIGRATION_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")


def database_url(settings: Settings) -> str:
    """The configured database, or the private cluster (started on demand)."""
    if settings.database_url:
        return settings.database_url
    return PrivateCluster(settings.home).ensure_running()


def make_engine(url: str, pool_size: int = 8) -> Engine:
    """A SQLAlchemy engine (psycopg2) with the service's session settings."""
    return sa.create_engine(
        _sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=0,  # a hard cap: more queries at once than cores only makes each slower
        pool_pre_ping=True,
        connect_args={"options": SESSION_OPTIONS, "application_name": "gis-ioc"},
    )


def _sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def connect(settings: Settings) -> Engine:
    """Engine for the configured database; a clear error when it cannot be reached."""
    engine = make_engine(database_url(settings), settings.pool_size)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as err:
        reason = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
        raise DatabaseUnavailable(f"cannot connect to the database: {reason}") from err
    return engine


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file of ``db/``."""

    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        """The file's SQL."""
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        """SHA-256 of the file, to notice an applied migration that was edited."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def migrations(folder: Path) -> list[Migration]:
    """The migrations in ``folder``, in order; a misnamed or duplicate file is an error."""
    found: dict[int, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path}: version {version} is also {found[version].path.name}")
        found[version] = Migration(version, match.group(2), path)
    return [found[v] for v in sorted(found)]


def migrate(engine: Engine, folder: Path) -> list[Migration]:
    """Apply the pending migrations, each in its own transaction; return those applied."""
    applied: list[Migration] = []
    pending = migrations(folder)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        )
    for migration in pending:
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
            row = conn.execute(
                sa.text("SELECT checksum FROM schema_migrations WHERE version = :v"), {"v": migration.version}
            ).first()
            if row is not None:
                if row.checksum != migration.checksum:
                    raise MigrationError(
                        f"{migration.path.name} was changed after it was applied; "
                        "never edit an applied migration, add a new one"
                    )
                continue
            try:
                # No parameters: psycopg2 then sends the file as it is (its % signs included).
                cursor: Any = conn.connection.cursor()
                with cursor as cur:
                    cur.execute(migration.sql)
            except psycopg2.Error as err:
                reason = str(err).strip().splitlines()[0]
                raise MigrationError(f"{migration.path.name}: {reason}") from err
            conn.execute(
                sa.text("INSERT INTO schema_migrations (version, name, checksum) VALUES (:v, :n, :c)"),
                {"v": migration.version, "n": migration.name, "c": migration.checksum},
            )
            applied.append(migration)
    return applied


def pending_migrations(engine: Engine, folder: Path) -> list[Migration]:
    """Migrations not applied yet."""
    with engine.connect() as conn:
        exists = conn.execute(sa.text("SELECT to_regclass('schema_migrations') IS NOT NULL")).scalar()
        done = (
            {r[0] for r in conn.execute(sa.text("SELECT version FROM schema_migrations"))} if exists else set()
        )
    return [m for m in migrations(folder) if m.version not in done]
