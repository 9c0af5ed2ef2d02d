"""Layers partitioned by month (migration 020: incidents): their months, the months ahead, and the archive.

A month is a partition (``incidents_p202611``) of the months in the province's local time. ``ahead`` makes the
current month and the next two (the server does at start, loads do when they swap), so reports of today never
land in the default partition; strays that do (a report dated years back) get a month of their own there too.
``archive`` detaches every month that ended before a date and moves it into the schema ``archive``, under
``archive.incidents`` (the same shape, partitioned the same way), where analysis reads it when asked
(``archived=true``); the counts kept for statistics and the tile cells lose its rows, and the layer's
version moves on, so tiles and the wall see the layer without them. A later migration that changes
incidents' columns changes ``archive.incidents`` the same way.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from gis_ioc.db import take_lock_briefly
from gis_ioc.errors import InvalidInput

log = logging.getLogger(__name__)
ARCHIVE_SCHEMA = "archive"
MONTHS_AHEAD = 2  # partitions are kept for this month and this many after it (the server, loads, ``db months``)
MANY_MONTHS = 36  # beyond this many attached months, `db months` suggests archiving (docs/sizing.md)
AHEAD_LOCK_MS = 100  # a new month needs the table to itself for a moment: readers queue behind it at most this long


@dataclass
class Month:
    """One partition: its name, bounds and (estimated) rows."""

    name: str
    start: datetime | None  # None: the default partition
    end: datetime | None
    rows: int

    def ended_by(self, instant: datetime) -> bool:
        """A month (not the default partition) that ended by ``instant``."""
        return self.end is not None and self.end <= instant


@dataclass
class Archived:
    """What an archive moved."""

    months: list[str] = field(default_factory=list)
    rows: int = 0


# the column and time zone of a table gis-ioc partitions by month: one statement for SQLAlchemy and the driver
_PARTITIONING = ("SELECT m.column_name, m.time_zone FROM month_partitioned m JOIN pg_class c "
                 "ON c.oid = to_regclass(m.table_name) WHERE m.table_name = %s AND c.relkind = 'p'")


def partitioning(conn: Connection, table: str) -> tuple[str, str] | None:
    """The column and time zone ``table`` (``schema.name``) is partitioned by month on; None if it is not."""
    row = conn.exec_driver_sql(_PARTITIONING, (table,)).first()
    return (str(row[0]), str(row[1])) if row else None


def month_partitioning(cur: Any, table: str) -> tuple[str, str] | None:
    """``partitioning`` on a driver's cursor (a load's transaction)."""
    cur.execute(_PARTITIONING, (table,))
    row = cur.fetchone()
    return (str(row[0]), str(row[1])) if row else None


def months(conn: Connection, table: str) -> list[Month]:
    """The partitions of ``table``, oldest first, the default one last."""
    rows = conn.execute(sa.text(
        "SELECT n.nspname || '.' || c.relname, "
        "(regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\)'))[1]::timestamptz, "
        "(regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz, "
        "greatest(c.reltuples, 0) "
        "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE i.inhparent = to_regclass(:t)"), {"t": table}).all()
    found = [Month(str(name), start, end, int(tuples)) for name, start, end, tuples in rows]
    return sorted(found, key=lambda m: (m.start is None, m.start or datetime.min))


def ahead(conn: Connection, table: str = "public.incidents") -> int:
    """Partitions for this month and the ``MONTHS_AHEAD`` after it (strays in the default moved to months first).

    Returns how many it made.
    """
    if partitioning(conn, table) is None:
        return 0
    return int(conn.execute(sa.text("SELECT gis_ioc_month_partitions(to_regclass(:t), now(), "
                                     f"now() + interval '{MONTHS_AHEAD} months')"), {"t": table}).scalar_one())


def keep_ahead(engine: Engine, stop: threading.Event, every_s: float = 6 * 3600,
               keep_months: int | None = None, order: bool = False) -> None:
    """The server's months ahead, made at start and again every ``every_s``; months beyond ``keep_months`` archived.

    With ``order``, closed months are rewritten in spatial order too (``month_order``).

    Each round needs the table for a moment; if readers hold it longer the round gives up and the next one
    tries again (meanwhile reports land in the default partition: nothing is lost).
    """
    while True:
        wait = every_s
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(f"SET LOCAL lock_timeout = {AHEAD_LOCK_MS}"))
                tables = [str(t) for (t,) in conn.execute(sa.text("SELECT table_name FROM month_partitioned"))]
                for table in tables:
                    ahead(conn, table)
        except sa.exc.SQLAlchemyError as err:
            log.warning("months ahead not made this time: %s", str(err).splitlines()[0])
            tables, wait = [], 60.0  # readers held the table (or the database was away): soon again
        if keep_months:
            for table in tables:
                _archive_in_round(engine, keep_months, table)
        if order:
            for table in tables:
                _order_in_round(engine, table)
        if stop.wait(wait):
            return


def _archive_in_round(engine: Engine, keep_months: int, table: str) -> None:
    """The months round's archive of ``table``: logged, never raised (busy readers, a month archived before)."""
    try:
        done = archive_older(engine, keep_months, table)
    except (InvalidInput, sa.exc.SQLAlchemyError) as err:  # the next round tries again
        log.warning("old months of %s not archived this time: %s", table, str(err).splitlines()[0])
        return
    if done is not None and done.months:
        log.info("archived %d months of %s (%d rows), keeping %d: %s", len(done.months), table, done.rows,
                 keep_months, ", ".join(done.months))


def _order_in_round(engine: Engine, table: str) -> None:
    """The months round's rewrite of closed months in spatial order: logged, never raised (the next round tries)."""
    from gis_ioc import month_order

    try:
        done = month_order.order_months(engine, table)
    except (InvalidInput, sa.exc.SQLAlchemyError) as err:
        log.warning("closed months of %s not put in spatial order this time: %s", table, str(err).splitlines()[0])
        return
    for month in done or []:
        log.info("%s: %d rows in spatial order (%.1f s)", month.partition, month.rows, month.seconds)


@contextlib.contextmanager
def one_process(conn: Connection, task: str, table: str) -> Iterator[bool]:
    """Whether this process may do ``task`` on ``table`` now: an advisory lock held for the block, else False.

    The servers' rounds and the CLI never archive, or rewrite, a table's months twice at once.
    """
    lock = "SELECT {}(hashtext(:task), hashtext(:t))"
    taken = bool(conn.execute(sa.text(lock.format("pg_try_advisory_lock")), {"task": task, "t": table}).scalar())
    conn.commit()
    try:
        yield taken
    finally:
        if taken:
            conn.execute(sa.text(lock.format("pg_advisory_unlock")), {"task": task, "t": table})
            conn.commit()


def local_today(conn: Connection, zone: str) -> date:
    """Today's date in ``zone`` (the database's clock)."""
    today: date = conn.execute(sa.text("SELECT CAST(now() AT TIME ZONE :z AS date)"), {"z": zone}).scalar_one()
    return today


def month_start(today: date, back: int) -> date:
    """The first day of the month ``back`` months before ``today``'s (0: its own)."""
    months_ = today.year * 12 + today.month - 1 - back
    return date(months_ // 12, months_ % 12 + 1, 1)


def local_midnight(conn: Connection, day: date, zone: str) -> datetime:
    """The instant ``day`` begins in ``zone``."""
    instant: datetime = conn.execute(sa.text("SELECT CAST(:d AS timestamp) AT TIME ZONE :z"),
                                     {"d": day, "z": zone}).scalar_one()
    return instant


def archive_older(engine: Engine, keep_months: int, table: str = "public.incidents",
                  today: date | None = None) -> Archived | None:
    """Archive the months of ``table`` before its last ``keep_months`` (this month counted), local time.

    ``today``: the local date (default: the database's now in the layer's time zone). One process at a time
    (an advisory lock; the others skip the round). None when the table is not partitioned by month, has no
    archive table, or another process is archiving.
    """
    if keep_months < 1:
        raise InvalidInput(f"keep_months: {keep_months} is not 1 or more", param="keep_months")
    name = table.split(".", 1)[1]
    with engine.connect() as conn:
        found = partitioning(conn, table)
        if found is None or conn.execute(sa.text("SELECT to_regclass(:t)"),
                                         {"t": f"{ARCHIVE_SCHEMA}.{name}"}).scalar() is None:
            return None
        if today is None:
            today = local_today(conn, found[1])
        with one_process(conn, "gis_ioc_archive_older", table) as mine:
            return archive(engine, month_start(today, keep_months - 1), table) if mine else None


def archive(engine: Engine, before: date, table: str = "public.incidents") -> Archived:
    """Move every month of ``table`` that ended by local midnight starting ``before`` into the archive schema.

    One transaction: the months, their counts, the tile cells and the layer's version change together or not
    at all. The counts and cells lose the months' rows while the months are only locked against writes
    (readers go on); the table is then taken for the moment the months are detached, asked for briefly and
    again (``db.take_lock_briefly``), so readers never queue long behind it.
    """
    name = table.split(".", 1)[1]
    archived = Archived()
    with engine.begin() as conn:
        found = partitioning(conn, table)
        if found is None:
            raise InvalidInput(f"{table} is not partitioned by month: nothing to archive", param="layer")
        column, zone = found
        if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": f"{ARCHIVE_SCHEMA}.{name}"}).scalar() is None:
            raise InvalidInput(f"there is no {ARCHIVE_SCHEMA}.{name} to archive {table} into", param="layer")
        cur = conn.connection.cursor()
        busy = f"{table}: readers held it each time the archive tried to take it; nothing was archived, try again"
        cutoff = local_midnight(conn, before, zone)
        default = next((m.name for m in months(conn, table) if m.start is None), None)
        if default is not None and conn.execute(sa.text(f"SELECT EXISTS (SELECT 1 FROM {default} "
                                                        f"WHERE {column} < :cut)"), {"cut": cutoff}).scalar():
            take_lock_briefly(cur, table, busy)  # strays of those months get months of their own first
            conn.execute(sa.text("SELECT gis_ioc_split_default(to_regclass(:t), :c, :z)"),
                         {"t": table, "c": column, "z": zone})
        leaving = [m for m in months(conn, table) if m.ended_by(cutoff)]
        for month in leaving:
            part = month.name.split(".", 1)[1]
            if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": f"{ARCHIVE_SCHEMA}.{part}"}).scalar():
                raise InvalidInput(f"{ARCHIVE_SCHEMA}.{part} exists already: that month was archived before and "
                                   "has rows in the layer again; move them by hand", param="before")
            take_lock_briefly(cur, month.name, busy, mode="SHARE")  # no writes into it from here on
            archived.rows += int(conn.execute(sa.text(f"SELECT count(*) FROM {month.name}")).scalar_one())
            if table == "public.incidents":  # the counts kept for statistics (migration 018)
                conn.execute(sa.text("SELECT gis_ioc_count_rows(to_regclass(:p), -1)"), {"p": month.name})
            conn.execute(sa.text("SELECT gis_ioc_take_cells(:t, to_regclass(:p))"), {"t": table, "p": month.name})
        if leaving:
            take_lock_briefly(cur, table, busy)
        for month in leaving:
            part = month.name.split(".", 1)[1]
            conn.execute(sa.text(f"ALTER TABLE {table} DETACH PARTITION {month.name}"))
            conn.execute(sa.text(f"ALTER TABLE {month.name} SET SCHEMA {ARCHIVE_SCHEMA}"))
            conn.execute(sa.text(f"ALTER TABLE {ARCHIVE_SCHEMA}.{name} ATTACH PARTITION {ARCHIVE_SCHEMA}.{part} "
                                 "FOR VALUES FROM (CAST(:s AS timestamptz)) TO (CAST(:e AS timestamptz))"),
                         {"s": month.start, "e": month.end})
            archived.months.append(part)
        if leaving:
            _moved_on(conn, table, name)
    return archived


def _moved_on(conn: Connection, table: str, layer: str) -> None:
    """After rows left a layer without a statement on it: its version moves on, one reload for the wall."""
    conn.execute(sa.text("UPDATE layer_versions SET version = version + 1, changed_at = now() "
                         "WHERE table_name = :t"), {"t": table})
    conn.execute(sa.text("SELECT pg_notify('gis_ioc_changes', json_build_object('layer', CAST(:l AS text), "
                         "'op', 'reload')::text)"), {"l": layer})


def with_archive(conn: Connection, table: str) -> str:
    """``table`` and its archived months as one row source (a parenthesised SELECT), or ``table`` if none."""
    archived = f"{ARCHIVE_SCHEMA}.{table.split('.', 1)[1]}"
    if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": archived}).scalar() is None:
        return table
    return f"(SELECT * FROM {table} UNION ALL SELECT * FROM {archived})"


def describe(months_: list[Month]) -> list[dict[str, Any]]:
    """Months as rows for a listing: the month (local) by the partition's name, the partition, its rows."""
    rows = []
    for m in months_:
        named = re.search(r"_p(\d{4})(\d{2})$", m.name)
        month = f"{named[1]}-{named[2]}" if named else ("(default)" if m.start is None else m.start.date().isoformat())
        rows.append({"month": month, "partition": m.name.split(".", 1)[-1], "rows": m.rows})
    return rows
