"""What a replace or an upsert does to the rows already there.

A layer with a ``natural_key`` (admin units: ``code`` + ``valid_from``) is matched by it: rows the
file brings again are updated in place, new ones inserted, and a replace removes only the rows of
the period its file covers (``valid_to_column``) that the file no longer has. Rows of other tables
that refer to a row about to go (``admin_lineage``) are never removed silently: the load is refused
with their names unless ``cascade`` is asked for, and the report counts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from gis_ioc.catalog import Layer, quote_ident, quote_table
from gis_ioc.errors import IngestError

STAGE = "_gis_ioc_load"  # the temporary table a staged load is copied into first


@dataclass
class Written:
    """What a load did to a layer's table."""

    rows: int = 0  # rows the file brought
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    cascaded: dict[str, int] = field(default_factory=dict)  # rows of other tables removed with them
    period: str | None = None  # the period a replace covered, when the layer has one
    analyze: bool = False  # enough rows changed that the planner's statistics must be made again


@dataclass
class Reference:
    """A foreign key of another table pointing at the layer's table."""

    table: str
    columns: list[str]  # in the referring table
    targets: list[str]  # in the layer's table
    on_delete: str  # c(ascade), n (set null), d (set default), r/a (refuse)


def references(cur: Any, layer: Layer) -> list[Reference]:
    """The foreign keys of other tables that point at the layer's table."""
    cur.execute(
        """
        SELECT c.conrelid::regclass::text, c.confdeltype,
               array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),
               array(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                     JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i)
        FROM pg_constraint c
        WHERE c.contype = 'f' AND c.confrelid = to_regclass(%s) AND c.conrelid <> c.confrelid
        ORDER BY 1
        """,
        (layer.table,),
    )
    return [Reference(table, list(cols), list(targets), kind) for table, kind, cols, targets in cur.fetchall()]


def stage(cur: Any, layer: Layer, columns: Any) -> None:
    """The temporary table a staged load is copied into (the layer's columns; only the file's must be set)."""
    cur.execute(f"CREATE TEMP TABLE {STAGE} (LIKE {quote_table(layer.table)} INCLUDING DEFAULTS) ON COMMIT DROP")
    cur.execute(f"SELECT attname::text FROM pg_attribute WHERE attrelid = '{STAGE}'::regclass AND attnum > 0 "
                "AND attnotnull AND NOT attisdropped")
    for (name,) in cur.fetchall():
        if name not in columns:  # the id (identity) and what the table's triggers fill
            cur.execute(f"ALTER TABLE {STAGE} ALTER COLUMN {quote_ident(name)} DROP NOT NULL")


def _tuple(alias: str, columns: list[str]) -> str:
    return "(" + ", ".join(f"{alias}.{quote_ident(c)}" for c in columns) + ")"


def _text(value: Any) -> str:
    return value.isoformat() if isinstance(value, date | datetime) else str(value)


def remove(cur: Any, layer: Layer, condition: str, params: tuple[Any, ...], *, cascade: bool,
           written: Written) -> None:
    """Delete the layer's rows that meet ``condition`` (SQL on alias ``t``), minding what refers to them."""
    table = quote_table(layer.table)
    refs = references(cur, layer)
    if refs:
        cur.execute(f"CREATE TEMP TABLE _gis_ioc_gone ON COMMIT DROP AS SELECT t.ctid AS row_id FROM {table} t "
                    f"WHERE {condition}", params)
        found = []
        for ref in refs:
            shown = ", ".join(f"'{c}=' || r.{quote_ident(c)}::text" for c in ref.columns)
            cur.execute(
                f"SELECT count(*), (array_agg(concat_ws(', ', {shown}) ORDER BY {_tuple('r', ref.columns)}))[1:3] "
                f"FROM {ref.table} r WHERE EXISTS (SELECT 1 FROM {table} t JOIN _gis_ioc_gone g ON t.ctid = g.row_id "
                f"WHERE {_tuple('t', ref.targets)} = {_tuple('r', ref.columns)})"
            )
            count, sample = cur.fetchone()
            if count:
                found.append((ref, count, sample or []))
        if found and not cascade:
            cur.execute("SELECT count(*) FROM _gis_ioc_gone")
            doomed = cur.fetchone()[0]
            named = "; ".join(f"{count} row(s) of {ref.table} ({' | '.join(sample)}{', …' if count > 3 else ''})"
                              for ref, count, sample in found)
            raise IngestError(
                f"--mode replace would remove {doomed} row(s) of {layer.id!r} that the file no longer has, and other "
                f"tables refer to them: {named}. Nothing was loaded: bring those rows in the file, load with --mode "
                "upsert, or pass --cascade to remove the referring rows too",
                param="mode",
            )
        # counted before and after, not summed from the references: a row may refer to two rows that go
        before = {ref.table: _count_rows(cur, ref.table) for ref, _c, _s in found}
        cur.execute(f"DELETE FROM {table} t USING _gis_ioc_gone g WHERE t.ctid = g.row_id")
        written.deleted = cur.rowcount
        for name, count in before.items():
            written.cascaded[name] = count - _count_rows(cur, name)
        cur.execute("DROP TABLE _gis_ioc_gone")
        return
    cur.execute(f"DELETE FROM {table} t WHERE {condition}", params)
    written.deleted = cur.rowcount


def _count_rows(cur: Any, table: str) -> int:
    cur.execute(f"SELECT count(*) FROM {table}")
    return int(cur.fetchone()[0])


def keyed(layer: Layer, columns: list[str]) -> list[str]:
    """The natural key, when the layer has one and the file brings all of it (else [])."""
    key = layer.natural_key
    return key if key and all(c in columns for c in key) else []


def check_unique(cur: Any, key: list[str]) -> None:
    """A file that brings the same natural key twice is refused, naming the key."""
    cols = ", ".join(quote_ident(c) for c in key)
    cur.execute(f"SELECT {cols} FROM {STAGE} GROUP BY {cols} HAVING count(*) > 1 LIMIT 3")
    twice = cur.fetchall()
    if twice:
        named = "; ".join(", ".join(f"{c}={_text(v)}" for c, v in zip(key, row, strict=True)) for row in twice)
        raise IngestError(f"the file has more than one row for the same {' + '.join(key)}: {named}",
                          param=key[0])


def merge(cur: Any, layer: Layer, columns: list[str], key: list[str], written: Written) -> None:
    """Update the rows whose natural key the file brings, insert the others (from the staged rows)."""
    table = quote_table(layer.table)
    cols = ", ".join(quote_ident(c) for c in columns)
    match = " AND ".join(f"t.{quote_ident(c)} = s.{quote_ident(c)}" for c in key)
    sets = ", ".join(f"{quote_ident(c)} = s.{quote_ident(c)}" for c in columns if c not in key)
    if sets:
        cur.execute(f"UPDATE {table} t SET {sets} FROM {STAGE} s WHERE {match}")
        written.updated = cur.rowcount
    cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {STAGE} s "
                f"WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {match})")
    written.inserted = cur.rowcount


def replace_keyed(cur: Any, layer: Layer, columns: list[str], key: list[str], *, cascade: bool,
                  written: Written) -> None:
    """A replace by natural key: the rows of the file's period it no longer has go; the others are merged."""
    absent = f"NOT EXISTS (SELECT 1 FROM {STAGE} s WHERE " + " AND ".join(
        f"s.{quote_ident(c)} = t.{quote_ident(c)}" for c in key) + ")"
    condition = absent
    params: tuple[Any, ...] = ()
    start, end = layer.datetime_column, layer.valid_to_column
    if start and end and start in columns:
        high_sql = (f"CASE WHEN bool_or(s.{quote_ident(end)} IS NULL) THEN NULL ELSE max(s.{quote_ident(end)}) END"
                    if end in columns else "NULL")
        cur.execute(f"SELECT min(s.{quote_ident(start)}), {high_sql} FROM {STAGE} s")
        low, high = cur.fetchone()
        condition = f"t.{quote_ident(start)} >= %s AND {absent}"
        params = (low,)
        if high is not None:
            condition = f"t.{quote_ident(start)} >= %s AND t.{quote_ident(start)} < %s AND {absent}"
            params = (low, high)
        written.period = f"{_text(low)} – {_text(high) if high is not None else 'open'}"
    remove(cur, layer, condition, params, cascade=cascade, written=written)
    merge(cur, layer, columns, key, written)
