"""Closed months rewritten in spatial order: the rows of a box on few pages, not one page per row.

Reports arrive in time order, so a month's rows lie in the order they were reported (or a load's file had
them): the matches of a small box are spread over the whole month, one heap page each. At 10M incidents a
2×2 km box of ``bench sizes`` matched 8,811 rows of October 2026, and its page of 100 touched 8,960 buffers;
with the same rows written in PostGIS's own spatial order (``ORDER BY geom``: the Hilbert curve of each
box's centre) it touched 4,045 and took 11 ms instead of 36 warm, and cold it read 471 pages from disk
instead of 8,260.

Only months that ended before the previous month began are rewritten: the recent ones are read by time (the
wall's last 24 hours, the ragged hours of a window), where time order is the better one. A month is
rewritten beside itself and swapped in: writes to that month wait while it is copied (a month that old
rarely takes any); readers never wait longer than ``db.take_lock_briefly``'s tries, for the swap. Its rows,
ids, counts and tile cells do not change, so the layer's version does not either.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gis_ioc.catalog import quote_ident
from gis_ioc.db import take_lock_briefly
from gis_ioc.errors import InvalidInput
from gis_ioc.partitions import Month, local_midnight, local_today, month_start, months, one_process, partitioning

MARK = "gis-ioc: rows in spatial order"  # the month's comment once it is rewritten (with the date)
_INDEX = re.compile(r"^(CREATE (?:UNIQUE )?INDEX) \S+ ON (?:ONLY )?\S+ ")


@dataclass
class Ordered:
    """One month rewritten: its partition, rows and seconds."""

    partition: str
    rows: int
    seconds: float


def closed_before(engine: Engine, table: str) -> date:
    """The first day of the previous month in the layer's time zone: months that ended by then are rewritten."""
    with engine.connect() as conn:
        found = partitioning(conn, table)
        if found is None:
            raise InvalidInput(f"{table} is not partitioned by month", param="layer")
        return month_start(local_today(conn, found[1]), 1)


def pending(engine: Engine, table: str, before: date) -> list[Month]:
    """The months of ``table`` that ended by local midnight starting ``before``, with rows, not yet rewritten."""
    with engine.connect() as conn:
        found = partitioning(conn, table)
        if found is None:
            raise InvalidInput(f"{table} is not partitioned by month", param="layer")
        cutoff = local_midnight(conn, before, found[1])
        left = []
        for month in months(conn, table):
            if not month.ended_by(cutoff):
                continue
            note = conn.execute(sa.text("SELECT obj_description(to_regclass(:t), 'pg_class')"),
                                {"t": month.name}).scalar()
            if (note or "").startswith(MARK):
                continue
            if conn.execute(sa.text(f"SELECT EXISTS (SELECT 1 FROM {month.name})")).scalar():
                left.append(month)
    return left


def order_months(engine: Engine, table: str, before: date | None = None, geometry: str | None = None,
                 each: Callable[[Ordered], None] | None = None) -> list[Ordered] | None:
    """Rewrite every month of ``table`` that ended by ``before`` and is not in spatial order yet, oldest first.

    ``before``: default ``closed_before``; ``geometry``: the column to order by (default: the table's own).
    None when another process is rewriting this table's months (an advisory lock: the CLI and the servers'
    rounds never copy the same month twice). ``each``: told of each month as it is done.
    """
    cutoff = before or closed_before(engine, table)
    with engine.connect() as conn:
        if geometry is None:
            schema, name = table.split(".", 1)
            geometry = conn.execute(sa.text(
                "SELECT f_geometry_column FROM geometry_columns WHERE f_table_schema = :s AND f_table_name = :n "
                "ORDER BY 1 LIMIT 1"), {"s": schema, "n": name}).scalar()
            if geometry is None:
                raise InvalidInput(f"{table} has no geometry column to order its months by", param="layer")
        with one_process(conn, "gis_ioc_order_months", table) as mine:
            if not mine:
                return None
            done = []
            for month in pending(engine, table, cutoff):
                done.append(order_month(engine, table, month, geometry))
                if each is not None:
                    each(done[-1])
            return done


def order_month(engine: Engine, table: str, month: Month, geometry: str = "geom") -> Ordered:
    """Rewrite one month of ``table`` in the spatial order of ``geometry`` and swap it in (one transaction).

    The month is locked against writes (readers go on), copied in order beside itself with its indexes and a
    check of its bounds (so attaching it reads nothing), then swapped in while the table is taken for a
    moment. A failure leaves the month as it was.
    """
    started = time.perf_counter()
    schema, part = month.name.split(".", 1)
    staged = f"{schema}.{part[:50]}_ordering"
    busy = f"{table}: readers held it each time the rewrite of {part} tried to take it; nothing changed, try again"
    with engine.begin() as conn:
        cur: Any = conn.connection.cursor()
        take_lock_briefly(cur, month.name, busy, mode="SHARE")  # no writes into it from here on
        bound = conn.execute(sa.text("SELECT pg_get_partition_constraintdef(to_regclass(:t))"),
                             {"t": month.name}).scalar_one()
        # its indexes, and the constraints a unique index stands for (the primary key): attached as they are
        indexes = [(str(d), c) for d, c in conn.execute(sa.text(
            "SELECT pg_get_indexdef(i.indexrelid), pg_get_constraintdef(c.oid) FROM pg_index i LEFT JOIN "
            "pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid "
            "WHERE i.indrelid = to_regclass(:t) ORDER BY i.indexrelid"), {"t": month.name})]
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {staged}"))
        conn.execute(sa.text(f"CREATE TABLE {staged} (LIKE {month.name} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
                             "INCLUDING STORAGE INCLUDING COMPRESSION)"))
        rows = conn.execute(sa.text(f"INSERT INTO {staged} SELECT * FROM {month.name} "
                                    f"ORDER BY {quote_ident(geometry)}")).rowcount
        # written by the catalog (quoted literals and all): on the driver's cursor, nothing in them read as a value
        cur.execute(f"ALTER TABLE {staged} ADD CONSTRAINT gis_ioc_month_bound CHECK ({bound})")
        for definition, constraint in indexes:  # the same, so attaching finds each one made and builds nothing
            if constraint is not None:
                cur.execute(f"ALTER TABLE {staged} ADD {constraint}")
                continue
            made, count = _INDEX.subn(lambda m: f"{m.group(1)} ON {staged} ", definition, count=1)
            if count != 1:
                raise InvalidInput(f"{part}: an index this rewrite cannot copy: {definition[:120]}", param="layer")
            cur.execute(made)
        conn.execute(sa.text(f"ANALYZE {staged}"))
        take_lock_briefly(cur, table, busy)
        conn.execute(sa.text(f"ALTER TABLE {table} DETACH PARTITION {month.name}"))
        conn.execute(sa.text(f"DROP TABLE {month.name}"))
        conn.execute(sa.text(f"ALTER TABLE {staged} RENAME TO {part}"))
        conn.execute(sa.text(f"ALTER TABLE {table} ATTACH PARTITION {month.name} "
                             "FOR VALUES FROM (CAST(:s AS timestamptz)) TO (CAST(:e AS timestamptz))"),
                     {"s": month.start, "e": month.end})
        conn.execute(sa.text(f"ALTER TABLE {month.name} DROP CONSTRAINT gis_ioc_month_bound"))
        for (index,) in conn.execute(sa.text(  # the names the month's indexes had
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = to_regclass(:t)"), {"t": month.name}).all():
            prefix = f"{part[:50]}_ordering_"
            if index.startswith(prefix):
                kept = (part + "_" + index[len(prefix):])[:63]
                conn.execute(sa.text(f"ALTER INDEX {schema}.{index} RENAME TO {kept}"))
        conn.execute(sa.text(f"COMMENT ON TABLE {month.name} IS '{MARK} ({date.today().isoformat()})'"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"VACUUM {month.name}")  # its visibility map: counts read the indexes alone again
    return Ordered(part, int(rows), round(time.perf_counter() - started, 1))
