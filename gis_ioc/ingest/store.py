"""Storing rows: COPY in one transaction beside the readers; a failure leaves the layer as it was."""

from __future__ import annotations

import contextlib
import io
import itertools
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pgpq
import psycopg2
import pyarrow as pa
import pyarrow.csv as pacsv
import pyogrio
import shapely
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gis_ioc import db
from gis_ioc.catalog import Catalog, Layer, quote_ident, quote_table
from gis_ioc.errors import IngestError, QueryTimeout
from gis_ioc.ingest import crs_check, derive, drivers, replace, rows
from gis_ioc.ingest.derive import CommuneLookup
from gis_ioc.ingest.read import open_source, read_batches
from gis_ioc.ingest.replace import Written
from gis_ioc.ingest.rows import Prepared, check_constants, check_rows, conform, parse_crs, plan_load
from gis_ioc.ingest.shadow import Shadow
from gis_ioc.load_service import MODES, LoadReport

Mode = Literal["append", "replace", "upsert"]
Progress = Callable[[int, int], None]  # (rows written so far, total rows)

BULK_ROWS = 10_000  # a load of at least this many rows goes through a shadow table (ingest.shadow)
CHUNK_ROWS = 50_000  # rows checked and written at once; each chunk costs ~25 ms of pandas whatever its size
SMALL_CHUNK_ROWS = 10_000  # a file under BIG_FILE_ROWS goes in smaller chunks, so its COPY starts early
BIG_FILE_ROWS = 200_000


def _arrow(frame: pd.DataFrame, columns: Sequence[str]) -> pa.Table:
    """The columns of a checked chunk as an Arrow table."""
    return pa.Table.from_pandas(frame[list(columns)], preserve_index=False)


def _csv_chunks(frames: Iterable[pd.DataFrame], columns: Sequence[str]) -> Iterator[tuple[bytes, int]]:
    """COPY CSV (NULL = unquoted empty, strings quoted) per chunk, written by Arrow's C++ writer."""
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    for frame in frames:
        selected = frame[list(columns)]
        # Arrow writes zone-aware timestamps ~15x slower than naive ones: write UTC wall time, which
        # the COPY reads under ``SET LOCAL timezone = 'UTC'`` (see write_rows).
        aware = [c for c in selected.columns if isinstance(selected[c].dtype, pd.DatetimeTZDtype)]
        if aware:
            selected = selected.assign(**{c: selected[c].dt.tz_convert("UTC").dt.tz_localize(None) for c in aware})
        table = _arrow(selected, columns)
        for index, field in enumerate(table.schema):  # EWKB: text formats take it as hex
            if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
                table = table.set_column(index, field.name, rows.hex_text(table.column(index)))
        sink = io.BytesIO()
        pacsv.write_csv(table, sink, options)
        yield sink.getvalue(), len(selected)


# PostgreSQL types whose binary COPY form pgpq writes from these Arrow types; any other column: CSV
_BINARY = {"text": pa.string(), "varchar": pa.string(), "bpchar": pa.string(), "int2": pa.int16(),
           "int4": pa.int32(), "int8": pa.int64(), "float4": pa.float32(), "float8": pa.float64(), "bool": pa.bool_(),
           "date": pa.date32(), "timestamptz": pa.timestamp("us", tz="UTC"), "timestamp": pa.timestamp("us"),
           "geometry": pa.binary()}


def _binary_types(cur: Any, table: str, columns: Sequence[str]) -> list[pa.DataType] | None:
    """The Arrow type of each column for a binary COPY into ``table``; None if one has no binary form here."""
    cur.execute("SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped", (table,))
    found = dict(cur.fetchall())
    types = [_BINARY.get(str(found.get(c))) for c in columns]
    return None if any(t is None for t in types) else types


def _binary_chunks(frames: Iterable[pd.DataFrame], columns: Sequence[str],
                   types: Sequence[pa.DataType]) -> Iterator[tuple[bytes, int]]:
    """COPY BINARY per chunk, encoded from Arrow by pgpq (Rust): ~40 % less work for the server than CSV."""
    schema = pa.schema([pa.field(c, t) for c, t in zip(columns, types, strict=True)])
    encoder = pgpq.ArrowToPostgresBinaryEncoder(schema)
    head = encoder.write_header()
    for frame in frames:
        table = _arrow(frame, columns)
        arrays = []
        for name, kind in zip(columns, types, strict=True):
            try:
                arrays.append(table.column(name).cast(kind, safe=not pa.types.is_timestamp(kind)))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise IngestError(f"column {name!r}: a value does not fit the table's column ({err})",
                                  param=name) from None
        batches = pa.Table.from_arrays(arrays, schema=schema).combine_chunks().to_batches()
        yield head + b"".join(encoder.write_batch(b) for b in batches), len(frame)
        head = b""
    yield head + encoder.finish(), 0


def _chunks_of(frame: pd.DataFrame) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), CHUNK_ROWS):
        yield frame.iloc[start : start + CHUNK_ROWS]


class _ChunkReader(io.RawIOBase):
    """A file-like object fed by a producer thread.

    Rows are checked and written as CSV while PostgreSQL parses the previous chunk. An error in
    the producer surfaces in ``read`` and so aborts the COPY.
    """

    def __init__(self, chunks: Iterator[tuple[bytes, int]], progress: Progress | None, total: int) -> None:
        self._queue: queue.Queue[tuple[bytes, int] | BaseException | None] = queue.Queue(maxsize=4)
        self._buffer: bytes | memoryview = b""
        self.rows = 0
        self._total = total
        self._progress = progress
        self._stop = threading.Event()
        self.failure: BaseException | None = None  # what the producer raised (checking a row), if anything
        self._thread = threading.Thread(target=self._produce, args=(chunks,), daemon=True)
        self._thread.start()

    def _produce(self, chunks: Iterator[tuple[bytes, int]]) -> None:
        try:
            for chunk in chunks:
                while not self._stop.is_set():
                    try:
                        self._queue.put(chunk, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as err:  # handed to the reading side
            self._queue.put(err)
            return
        self._queue.put(None)

    def close(self) -> None:
        self._stop.set()
        super().close()

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        while not self._buffer:
            item = self._queue.get()
            if item is None:
                self._queue.put(None)
                return b""
            if isinstance(item, BaseException):
                self.failure = item
                raise item
            self._buffer, rows = item
            self.rows += rows
            if self._progress:
                try:
                    self._progress(self.rows, self._total)
                except BaseException as err:  # e.g. the command that asked for the load went away
                    self.failure = err
                    raise
        if size is None or size < 0 or size >= len(self._buffer):
            out, self._buffer = self._buffer, b""
        else:  # a view of the rest: slicing bytes would copy what remains of a chunk at every read
            view = memoryview(self._buffer)
            out, self._buffer = bytes(view[:size]), view[size:]
        return bytes(out)


def _db_error(err: psycopg2.Error) -> IngestError:
    text = (getattr(err, "pgerror", None) or str(err)).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    detail = getattr(getattr(err, "diag", None), "message_detail", None) or ""
    found = re.match(r"Key \((.+)\)=\((.*)\) already exists", detail)
    if getattr(err, "pgcode", None) == "23505" and found:  # unique_violation: name the row
        names, values = found.group(1).split(", "), found.group(2).split(", ")
        pairs = ", ".join(f"{n}={v}" for n, v in zip(names, values, strict=False)) if len(names) == len(values) \
            else f"{found.group(1)}={found.group(2)}"
        return IngestError(f"a row of the file is already in the layer ({pairs}); nothing was loaded "
                           "(--mode upsert updates such rows)", param=names[0])
    return IngestError(f"the database refused the rows: {first.removeprefix('ERROR:').strip()}")


def _db_defaults(cur: Any, layer: Layer, columns: Sequence[str]) -> dict[str, str]:
    """Defaults of the NOT NULL columns being written, evaluated by the database once.

    COPY writes an explicit NULL where a value is empty; an INSERT would have used the default.
    """
    cur.execute(
        "SELECT column_name, column_default FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s AND is_nullable = 'NO' AND column_default IS NOT NULL "
        "AND is_identity = 'NO'",
        (layer.schema_name, layer.table_name),
    )
    defaults = {}
    for column, expression in cur.fetchall():
        if column in columns:
            cur.execute(f"SELECT ({expression})::text")
            defaults[column] = cur.fetchone()[0]
    return defaults


def _fill_defaults(frame: pd.DataFrame, defaults: dict[str, str]) -> pd.DataFrame:
    filled = {}
    for column, text in defaults.items():
        values = frame[column]
        if not values.isna().any():
            continue
        value: Any = text
        if pd.api.types.is_datetime64_any_dtype(values):
            value = pd.Timestamp(text).tz_convert("UTC")
        elif pd.api.types.is_numeric_dtype(values):
            value = pd.to_numeric(text)
        filled[column] = values.fillna(value)
    return frame.assign(**filled) if filled else frame


def write_rows(
    cur: Any,
    layer: Layer,
    columns: Sequence[str],
    frames: Iterable[pd.DataFrame],
    total: int,
    mode: Mode,
    progress: Progress | None = None,
    *,
    cascade: bool = False,
) -> Written:
    """COPY checked rows into a layer's table on an open transaction; say what was written and removed.

    ``frames`` may be lazy: checking and CSV writing then run beside the COPY, and an error in
    any chunk aborts it (the caller's transaction rolls everything back). The table keeps its
    indexes (dropping one would lock readers out for the whole load): readers go on seeing the old
    rows until the transaction commits. Upserts and replaces match rows by the id, else by the
    layer's natural key (``ingest.replace``); a replace never removes rows other tables refer to
    unless ``cascade``.
    """
    table = quote_table(layer.table)
    cols = ", ".join(quote_ident(c) for c in columns)
    key = replace.keyed(layer, list(columns))
    by_id = layer.id_column in columns
    if mode == "upsert" and not by_id and not key:
        named = f" or its key ({', '.join(layer.natural_key)})" if layer.natural_key else ""
        raise IngestError(f"--mode upsert needs the id column {layer.id_column!r}{named} in the file", param="mode")
    cur.execute("SET LOCAL timezone = 'UTC'")  # timestamps in the COPY stream are UTC wall time
    cur.execute("SET LOCAL gis_ioc.bulk = 'on'")  # one 'reload' event for the load, not one per row
    defaults = _db_defaults(cur, layer, columns)
    written = Written()
    staged = mode == "upsert" or (mode == "replace" and bool(key) and not by_id)
    shadow = Shadow.begin(cur, layer, mode) if not staged and _is_bulk(cur, layer, mode, total) else None
    if mode == "replace" and shadow is None and not staged:
        replace.remove(cur, layer, "true", (), cascade=cascade, written=written)
    appended_only = mode == "append" and shadow is None
    cur.execute("SELECT NOT stale FROM tile_cell_config WHERE layer_table = %s", (layer.table,))
    found = cur.fetchone()
    cells_current = bool(found and found[0])
    filled = (_fill_defaults(frame, defaults) for frame in frames)
    target = table if shadow is None else shadow.table
    if staged:
        replace.stage(cur, layer, columns)
        target = replace.STAGE
    binary = _binary_types(cur, layer.table, columns)
    chunks = _binary_chunks(filled, columns, binary) if binary else _csv_chunks(filled, columns)
    reader = _ChunkReader(chunks, progress, total)
    try:
        cur.copy_expert(f"COPY {target} ({cols}) FROM STDIN WITH (FORMAT {'binary' if binary else 'csv'})", reader,
                        size=1 << 20)
    except psycopg2.Error:
        if reader.failure is not None:  # a row failed its checks: say that, not what it did to the COPY
            raise reader.failure from None
        raise
    finally:
        reader.close()
    written.rows = reader.rows
    if reader.rows == 0:
        raise IngestError("no feature has a usable geometry: nothing to load", param="geometry")
    if staged and by_id and _unique(cur, layer.table, layer.id_column):
        updates = ", ".join(f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in columns if c != layer.id_column)
        cur.execute(
            f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {replace.STAGE} "
            f"ON CONFLICT ({quote_ident(layer.id_column)}) DO UPDATE SET {updates}"
        )
    elif staged and by_id:  # a partitioned table: its unique key holds the partition key too, no ON CONFLICT (id)
        ident = quote_ident(layer.id_column)
        updates = ", ".join(f"{quote_ident(c)} = s.{quote_ident(c)}" for c in columns if c != layer.id_column)
        if updates:
            cur.execute(f"UPDATE {table} t SET {updates} FROM {replace.STAGE} s WHERE t.{ident} = s.{ident}")
        cur.execute(f"INSERT INTO {table} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {replace.STAGE} s "
                    f"WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE t.{ident} = s.{ident})")
    elif staged:
        replace.check_unique(cur, key)
        if mode == "replace":
            replace.replace_keyed(cur, layer, list(columns), key, cascade=cascade, written=written)
        else:
            replace.merge(cur, layer, list(columns), key, written)
    else:
        written.inserted = reader.rows
    if shadow is not None:
        written.deleted = shadow.replaced
        shadow.finish()
        # the layer's own statement triggers, under its own name: version bumped, one reload event, cells
        cur.execute(f"DELETE FROM {table} WHERE false")
    # the low-zoom tile cells of this layer, brought up to date in this same transaction, so tiles never see new
    # rows with old cells and no reader is left to rebuild them: an append to cells that were current adds its
    # own rows (1,000 rows into a million: ~0.1 s), anything else rebuilds them from the layer (1M rows: ~2 s)
    cells = "gis_ioc_add_cells_of_this_transaction" if appended_only and cells_current else "gis_ioc_rebuild_cells"
    cur.execute(f"SELECT {cells}(layer_table) FROM tile_cell_config WHERE layer_table = %s", (layer.table,))
    if by_id:
        cur.execute(
            "SELECT pg_get_serial_sequence(%s, %s)", (f"{layer.schema_name}.{layer.table_name}", layer.id_column)
        )
        sequence = cur.fetchone()[0]
        if sequence:
            cur.execute(
                f"SELECT setval(%s, GREATEST((SELECT max({quote_ident(layer.id_column)}) FROM {table}), 1))",
                (sequence,),
            )
    written.analyze = reader.rows >= BULK_ROWS  # the planner's statistics, made again after the commit
    return written


def analyze(engine: Engine, layer: Layer) -> None:
    """Statistics of a layer's table made again after a big load (~0.4 s whatever the size: a 30,000-row sample).

    Outside the load's transaction: readers plan with the row count the index builds left until then, and
    the load's own time does not wait for it where the caller can answer first (the server's load socket).
    """
    # in autocommit: ANALYZE in a transaction the pool rolls back leaves no statistics (it did, through a raw
    # connection whose autocommit was set on the pool's proxy, not on psycopg2's connection: a load's table then
    # kept none until autovacuum came by, and the planner guessed 100 rows of a million — a page of 10 in a wide
    # bbox took 2 s)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f"ANALYZE {quote_table(layer.table)}"))
    except sa.exc.SQLAlchemyError:
        pass  # autovacuum makes them in a minute; a load that committed is not undone by this


def _unique(cur: Any, table: str, column: str) -> bool:
    """Whether ``column`` alone is a unique key of ``table`` (what ``ON CONFLICT (column)`` needs)."""
    cur.execute("SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = i.indkey[0] WHERE i.indrelid = to_regclass(%s) AND i.indisunique "
                "AND i.indnkeyatts = 1 AND i.indpred IS NULL AND a.attname = %s)", (table, column))
    return bool(cur.fetchone()[0])


def _is_bulk(cur: Any, layer: Layer, mode: Mode, total: int) -> bool:
    """A load big enough for a shadow table: many rows, and (appending) not fewer than the table holds."""
    if total < BULK_ROWS or mode == "upsert":
        return False
    if mode == "replace":
        return True
    cur.execute("SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = to_regclass(%s)", (layer.table,))
    found = cur.fetchone()
    return found is not None and float(found[0]) <= total


@contextlib.contextmanager
def _transaction(engine: Engine) -> Iterator[Any]:
    """One psycopg2 transaction: committed at the end, rolled back on any error.

    Database errors become an ``IngestError`` carrying the database's first line.
    """
    raw: Any = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            yield cur
        budget = db.BUDGET.get()
        if budget is not None and budget.cancelled:  # the request that asked for the load went away
            raise QueryTimeout("the client went away: its load was cancelled and nothing was written")
        raw.commit()
    except psycopg2.Error as err:
        raw.rollback()
        raise _db_error(err) from None
    except BaseException:
        raw.rollback()
        raise
    finally:
        raw.close()


def load_frame(
    engine: Engine,
    layer: Layer,
    prepared: Prepared,
    mode: Mode = "append",
    progress: Progress | None = None,
    *,
    cascade: bool = False,
) -> int:
    """Write prepared rows in one transaction; on any error the layer is left as it was.

    Derived columns the rows lack (``commune_code``) are derived here, as ``load`` does.
    """
    if mode not in MODES:
        raise IngestError(f"--mode: {mode!r} is not one of {', '.join(MODES)}", param="mode")
    with _transaction(engine) as cur:
        frame, columns = prepared.frame, list(prepared.columns)
        lookup = CommuneLookup.for_layer(cur, layer)
        if lookup is not None:
            known = frame[derive.COLUMN] if derive.COLUMN in frame else None
            if known is None or known.isna().any():
                frame = frame.copy()
                derive.fill(frame, shapely.from_wkb(frame["geom"].to_numpy()), lookup, layer.datetime_column)
                if derive.COLUMN not in columns:
                    columns.insert(columns.index("geom"), derive.COLUMN)
            cur.execute("SET LOCAL gis_ioc.derived = 'on'")
        written = write_rows(cur, layer, columns, _chunks_of(frame), len(frame), mode, progress, cascade=cascade)
    if written.analyze:
        analyze(engine, layer)
    return written.rows


def load(
    engine: Engine,
    catalog: Catalog,
    path: Path | str,
    layer_id: str,
    *,
    crs: str | None = None,
    mode: Mode = "append",
    mapping: dict[str, str] | None = None,
    constants: dict[str, str] | None = None,
    strict: bool = False,
    ignore_unknown: bool = False,
    cascade: bool = False,
    source_layer: str | None = None,
    region: tuple[float, float, float, float] | None = None,
    progress: Progress | None = None,
    analyze_after: bool = True,
) -> LoadReport:
    """Load a file into a layer (the ``gis-ioc load`` command, from Python).

    Columns and CRS are checked for the whole file first; rows are checked chunk by chunk while
    the previous chunk is copied, all in one transaction. A big load's statistics are made after the
    commit (``analyze_after=False``: by the caller, ``report.analyze`` says whether they are due).
    """
    started = time.perf_counter()
    if mode not in MODES:
        raise IngestError(f"--mode: {mode!r} is not one of {', '.join(MODES)}", param="mode")
    layer = catalog.get(layer_id)
    constants = check_constants(constants, layer)
    source_crs = parse_crs(crs)
    source = open_source(path, source_layer)
    total = -1  # a count is only needed for the progress bar, the chunk size and the bulk decision
    if not source.is_cap:  # CAP alerts are read without GDAL
        try:
            with drivers.offline():
                total = int(pyogrio.read_info(source.target, layer=source_layer, **source.options)["features"])
        except Exception:  # GDAL's several error types: the load goes on without a count
            total = -1
    batches = read_batches(source, CHUNK_ROWS if total < 0 or total >= BIG_FILE_ROWS else
                           min(CHUNK_ROWS, SMALL_CHUNK_ROWS))
    first = next(batches, None)
    if first is None or len(first) == 0:
        raise IngestError(f"{source.path}: the file has no features", param="file")
    first, plan = plan_load(first, layer, crs=source_crs, mapping=mapping, constants=constants, strict=strict,
                            ignore_unknown=ignore_unknown, region=region, source=str(path))
    report = LoadReport(layer=layer.id, mode=mode, source_crs=plan.crs_label, ignored_columns=plan.ignored)

    def checked() -> Iterator[pd.DataFrame]:
        offset = 0
        for number, batch in enumerate(itertools.chain([first], batches)):
            if number:
                batch = conform(batch, layer, mapping, constants)
            rows = check_rows(batch, plan, offset=offset)
            offset += len(batch)
            report.rows_read = offset
            report.repaired += rows.repaired
            report.refused += rows.refused
            yield rows.data

    with _transaction(engine) as cur:
        plan.communes = CommuneLookup.for_layer(cur, layer)
        plan.area = crs_check.province_area(cur, region)
        if plan.communes is not None:
            cur.execute("SET LOCAL gis_ioc.derived = 'on'")  # the row trigger need not look them up again
        written = write_rows(cur, layer, plan.copy_columns, checked(), max(total, len(first)), mode, progress,
                             cascade=cascade)
    if written.analyze and analyze_after:
        analyze(engine, layer)
    report.analyze = written.analyze and not analyze_after
    report.rows_loaded = written.rows
    report.inserted, report.updated, report.deleted = written.inserted, written.updated, written.deleted
    report.cascaded, report.period = written.cascaded, written.period
    report.seconds = time.perf_counter() - started
    return report
