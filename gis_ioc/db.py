"""Engine and pool, and the migrations in ``db/`` applied once each."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg2
import psycopg2.errors
import psycopg2.extras
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from gis_ioc.cluster import PrivateCluster
from gis_ioc.errors import Busy, DatabaseUnavailable, MigrationError
from gis_ioc.settings import Settings

# Per-connection settings for the service: JIT and parallel query halve tile and feature
# throughput on small machines (DESIGN.md, Performance).
SESSION_OPTIONS = "-c jit=off -c max_parallel_workers_per_gather=0 -c timezone=UTC"
MAX_PREPARED = 64  # statements prepared on one connection (db.rows' prepare) before it lets them all go
PING_IDLE_S = 1.0  # a pooled connection idle longer than this is checked at checkout (its SET statement_timeout)
CONNECT_TIMEOUT_S = 5  # a host that does not answer (a dead primary) fails over to the next within this
MIGRATION_LOCK = 72_010_001  # pg_advisory_xact_lock key: one migrator at a time
_MIGRATION_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")


def database_url(settings: Settings) -> str:
    """The configured database, or the private cluster (started on demand)."""
    if settings.database_url:
        return settings.database_url
    return PrivateCluster(settings.home).ensure_running()


@dataclass
class Budget:
    """What one request may spend in the database: a statement timeout, and the connections it holds.

    The web layer makes one per request (``BUDGET``); every connection checked out while it is current
    gets its ``statement_timeout`` and can be cancelled when the client goes away.
    """

    timeout_ms: int
    connections: set[Any] = field(default_factory=set)
    cancelled: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def hold(self, dbapi_connection: Any) -> None:
        """Note a connection checked out for this request."""
        with self._lock:
            self.connections.add(dbapi_connection)

    def release(self, dbapi_connection: Any) -> None:
        """Forget a connection given back to the pool."""
        with self._lock:
            self.connections.discard(dbapi_connection)

    def cancel(self) -> None:
        """Cancel whatever this request's connections are running (the client went away)."""
        with self._lock:
            self.cancelled = True
            held = list(self.connections)
        for connection in held:
            try:
                connection.cancel()
            except psycopg2.Error:
                pass


BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("gis_ioc_budget", default=None)


def make_engine(url: str, pool_size: int = 8, pool_timeout: float = 10.0) -> Engine:
    """A SQLAlchemy engine (psycopg2) with the service's session settings.

    Each checkout sets the request's ``statement_timeout`` (``BUDGET``; none outside a request), which
    is also the liveness check: a connection that fails it is replaced, as with ``pool_pre_ping``. A
    connection that has that timeout already and was given back within ``PING_IDLE_S`` is used as it is.
    """
    engine = sa.create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=0,  # a hard cap: more queries at once than cores only makes each slower
        pool_timeout=pool_timeout,
        connect_args={"options": SESSION_OPTIONS, "application_name": "gis-ioc",
                      **({} if "connect_timeout" in url else {"connect_timeout": CONNECT_TIMEOUT_S})},
    )
    event.listen(engine, "checkout", _checkout)
    event.listen(engine, "checkin", _checkin)
    return engine


def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    budget = BUDGET.get()
    timeout = budget.timeout_ms if budget is not None else 0
    idle = time.monotonic() - record.info.get("checked_in", 0.0)
    # one round trip: the request's timeout, and the check that the connection is alive; spared when the
    # connection already has that timeout and was in use a moment ago (a dead server breaks the next statement,
    # and SQLAlchemy then replaces every connection of the pool)
    if record.info.get("timeout_ms") != timeout or idle > PING_IDLE_S:
        try:
            dbapi_connection.autocommit = True
            with dbapi_connection.cursor() as cur:
                cur.execute("SET statement_timeout = %s", (timeout,))
            dbapi_connection.autocommit = False
        except psycopg2.Error as err:
            record.info.pop("timeout_ms", None)
            raise sa.exc.DisconnectionError(str(err)) from err
        record.info["timeout_ms"] = timeout
    if budget is not None:
        budget.hold(dbapi_connection)
        record.info["budget"] = budget


def _checkin(dbapi_connection: Any, record: Any) -> None:
    record.info["checked_in"] = time.monotonic()
    budget = record.info.pop("budget", None)
    if budget is not None:
        budget.release(dbapi_connection)


@contextlib.contextmanager
def autocommit(engine: Engine) -> Iterator[sa.Connection]:
    """A pooled connection in autocommit, for a single statement: no BEGIN and ROLLBACK round trips around it.

    psycopg2's client-side ``autocommit`` flag, set here and cleared before the connection goes back:
    SQLAlchemy's ``isolation_level="AUTOCOMMIT"`` sets and resets the level with psycopg2's
    ``set_isolation_level``, a round trip each way (0.12 ms; an uncached tile spent 5 % of its time there).
    """
    with engine.connect() as conn:
        raw: Any = conn.connection.dbapi_connection
        try:
            raw.autocommit = True
        except psycopg2.Error as err:  # closed under us (the server went away): never handed out again
            conn.invalidate()
            raise DatabaseUnavailable("the database connection was lost; try again") from err
        try:
            yield conn
        finally:
            try:
                if not raw.closed:
                    raw.autocommit = False
            except psycopg2.Error:
                conn.invalidate()


def one_row(conn: sa.Connection, sql: str) -> tuple[Any, ...]:
    """The first row of a statement without bound values, run on the driver's own cursor (no SQLAlchemy).

    For a hot path's fixed statement: a connection found closed is invalidated (never handed out again) and
    answered as ``DatabaseUnavailable``; any other driver error is raised as it is (``errors.from_database``
    reads it).
    """
    found = rows(conn, sql, named=False, first=True)
    if not found:
        raise sa.exc.NoResultFound("the statement returned no row")
    return tuple(found[0])


def rows(conn: sa.Connection, sql: str, params: Mapping[str, Any] | None = None, *, named: bool = True,
         first: bool = False, prepare: bool = False) -> list[Any]:
    """The rows of a statement, run on the driver's own cursor (no SQLAlchemy).

    For the long statements a hot path writes afresh each call (pgRouting's take their points as SQL text):
    ``sa.text`` would parse each one for bound names, 0.3–1 ms a statement. Values are written into the
    statement, or bound as ``:name`` (``params``): such a statement is compiled once (``bound``), and the
    driver quotes the values (SQLAlchemy's execution around it took 0.3 ms of a 2 ms statement). Rows are
    named tuples (``named``), or plain ones; ``first``: only the first row. The engine's
    ``before_cursor_execute`` listeners hear the statement as they hear SQLAlchemy's (``bench routing``
    replays what they hear). A connection found closed is ``DatabaseUnavailable``, as in ``one_row``; other
    driver errors are raised as they are (``errors.from_database`` reads them).

    ``prepare`` (with ``params``): the statement is prepared on the connection the first time it runs there
    (``PREPARE``, its values as ``$1``…) and executed from then on (``EXECUTE``): PostgreSQL keeps its plan.
    For a long statement with a fixed text, planning is a large share of its time (a route by road: 3–4 ms
    of planning for 5 ms of work). Listeners hear the statement and its values as without ``prepare``.
    """
    values: dict[str, Any] | None = None
    plan: Prepared | None = None
    if params is not None:
        compiled = bound(sql, conn.dialect)
        sql, values = compiled.string, compiled.construct_params(params)
        if prepare:
            plan = prepared(sql)
    raw: Any = conn.connection.dbapi_connection
    try:
        with raw.cursor(cursor_factory=psycopg2.extras.NamedTupleCursor if named else None) as cur:
            if conn.dispatch.before_cursor_execute:
                conn.dispatch.before_cursor_execute(conn, cur, sql, values, None, False)
            if plan is None:
                cur.execute(sql, values)
            else:
                _execute_prepared(conn, cur, plan, values)
            found = [] if cur.description is None else cur.fetchmany(1) if first else cur.fetchall()
            if plan is not None and not raw.autocommit:
                cur.execute("RESET plan_cache_mode")  # in autocommit, SET LOCAL ended with its message
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as err:
        if raw.closed:
            conn.invalidate()
            raise DatabaseUnavailable("the database connection was lost; try again") from err
        raise
    return list(found)


def _execute_prepared(conn: sa.Connection, cur: Any, prepared: Prepared, values: dict[str, Any] | None) -> None:
    """Prepare the statement on this connection the first time, then execute it with its generic plan.

    PostgreSQL would plan it again for its values each time (its custom plans cost less than the generic
    one), which is what preparing it is to spare: the generic plan for this statement only, set in one message
    with it. In autocommit the message is one implicit transaction, which ``SET LOCAL`` ends with (no round
    trip more); in a transaction the caller restores the session's mode (plpgsql's statements use it too). On
    an error the transaction takes the setting back with it.
    """
    known: set[str] = conn.connection.info.setdefault("prepared", set())  # lives with the connection
    for step in preparing(known, prepared):
        cur.execute(step)
    try:
        cur.execute(prepared.generic("LOCAL" if cur.connection.autocommit else "SESSION"), values)
    except psycopg2.errors.InvalidSqlStatementName:
        known.discard(prepared.name)  # let go on the server (DEALLOCATE, DISCARD): prepared again next time
        raise


@dataclass(frozen=True)
class Prepared:
    """A statement as PREPARE (run once per connection) and EXECUTE (run with its values) statements."""

    name: str
    prepare: str  # PREPARE name AS the statement with $1…, run without values
    execute: str  # EXECUTE name(%(a)s, …), run with the values

    def generic(self, scope: str) -> str:
        """``execute`` with the generic plan, set in the same message.

        ``scope``: ``LOCAL`` (the transaction; in autocommit the message's own) or ``SESSION`` (the caller resets it).
        """
        return f"SET {scope} plan_cache_mode = force_generic_plan; {self.execute}"


def preparing(known: set[str], plan: Prepared) -> Iterator[str]:
    """What to run (each in turn) before ``plan`` executes on a connection that has prepared ``known``.

    Nothing when it is known; else its PREPARE, after ``DEALLOCATE ALL`` when the connection holds
    ``MAX_PREPARED`` (texts that vary, a filter each: start again). ``known`` follows what has run: the name is
    added once its PREPARE has run (a step that raised is not resumed).
    """
    if plan.name in known:
        return
    if len(known) >= MAX_PREPARED:
        yield "DEALLOCATE ALL"
        known.clear()
    yield plan.prepare
    known.add(plan.name)


_DRIVER_PARAM = re.compile(r"%%|%\((\w+)\)s")


@functools.lru_cache(maxsize=256)
def prepared(driver_sql: str) -> Prepared:
    """A statement as the driver takes it (``%(name)s``, ``%%``) as PREPARE and EXECUTE statements."""
    order: list[str] = []

    def numbered(m: re.Match[str]) -> str:
        if m.group(1) is None:
            return "%"
        if m.group(1) not in order:
            order.append(m.group(1))
        return f"${order.index(m.group(1)) + 1}"

    body = _DRIVER_PARAM.sub(numbered, driver_sql)
    name = "gis_ioc_" + hashlib.sha1(driver_sql.encode()).hexdigest()[:20]
    arguments = ", ".join(f"%({n})s" for n in order)
    return Prepared(name, f"PREPARE {name} AS {body}", f"EXECUTE {name}({arguments})" if order else f"EXECUTE {name}")


@functools.lru_cache(maxsize=256)
def bound(sql: str, dialect: sa.engine.Dialect) -> Any:
    """A statement with ``:name`` values as the driver takes it (``%(name)s``, its ``%`` doubled), compiled once."""
    return sa.text(sql).compile(dialect=dialect)


def sqlalchemy_url(url: str) -> str:
    """A libpq URL as SQLAlchemy's psycopg2 dialect takes it.

    Several hosts (``postgresql://u:p@h1:5432,h2:5432/db?target_session_attrs=read-write``, libpq failover)
    become ``host=`` query parameters, which SQLAlchemy hands to libpq as its host and port lists.
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg2://" + url[len(prefix) :]
            break
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if sep and "," in hosts:
        database, question, query = tail.partition("?")
        params = "&".join(f"host={quote(h.strip(), safe='')}" for h in hosts.split(",") if h.strip())
        return f"{scheme}://{userinfo}{at}/{database}?{params}{'&' + query if question and query else ''}"
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


LOCK_TRY_MS = 100  # each try for a brief exclusive lock (take_lock_briefly): readers wait at most this long behind it
LOCK_GIVE_UP_S = 60.0  # a reader holding the table longer than this every time: give up (Busy), nothing changed


def take_lock_briefly(cur: Any, table: str, busy: str, mode: str = "ACCESS EXCLUSIVE") -> None:
    """Lock ``table``, asking for at most ``LOCK_TRY_MS`` at a time, again until granted.

    Readers queue behind a lock that waits: each try is short, with growing pauses between them; after
    ``LOCK_GIVE_UP_S`` it raises ``Busy(busy)``.
    """
    deadline = time.monotonic() + LOCK_GIVE_UP_S
    pause = 0.02
    while True:
        cur.execute("SAVEPOINT gis_ioc_lock")
        try:
            cur.execute(f"SET LOCAL lock_timeout = {LOCK_TRY_MS}")
            cur.execute(f"LOCK TABLE {table} IN {mode} MODE")
            cur.execute("SET LOCAL lock_timeout = 0")
            cur.execute("RELEASE SAVEPOINT gis_ioc_lock")
            return
        except psycopg2.errors.LockNotAvailable:
            cur.execute("ROLLBACK TO SAVEPOINT gis_ioc_lock")
            if time.monotonic() > deadline:
                raise Busy(busy) from None
            time.sleep(pause)
            pause = min(0.5, pause * 2)
