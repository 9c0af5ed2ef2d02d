"""The pre-aggregated cells of clustered layers: which layers keep them, and their rebuild after a bulk change.

A low-zoom tile of a clustered layer is made from ``tile_cells`` (counts and coordinate sums per grid cell and
category, kept by the database's row triggers), not from every feature. A bulk change marks a layer's cells
stale; the next tile (or the warm-up, or the start) rebuilds them, one thread per process at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gis_ioc.catalog import Catalog, Layer
from gis_ioc.errors import Busy

T = TypeVar("T")


def finest_cells(layer: Layer) -> float | None:
    """Cells per world axis at the layer's finest cluster zoom (None: not clustered)."""
    cluster = layer.tiles.cluster_below_zoom
    if cluster is None or cluster < 1:
        return None
    return float(2 ** (cluster - 1) * 256 / layer.tiles.cluster_cell_px)


def sync_cell_config(conn: Connection, catalog: Catalog) -> set[str]:
    """Tell the database which layers keep pre-aggregated cells; return their tables.

    Those are the layers clustered in the catalog whose table has the cell triggers (migration 005).
    """
    kept = set()
    for layer in catalog.layers(conn):
        cells = finest_cells(layer)
        tracked = cells is not None and conn.execute(sa.text(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'track_cells' AND tgrelid = to_regclass(:t))"),
            {"t": layer.table}).scalar()
        if not tracked:
            conn.execute(sa.text("DELETE FROM tile_cell_config WHERE layer_table = :t"), {"t": layer.table})
            continue
        conn.execute(sa.text(
            "INSERT INTO tile_cell_config AS c (layer_table, cells, category_column, not_counted_column) "
            "VALUES (:t, :cells, :cat, :merged) "
            "ON CONFLICT (layer_table) DO UPDATE SET cells = EXCLUDED.cells, "
            "category_column = EXCLUDED.category_column, not_counted_column = EXCLUDED.not_counted_column, "
            "stale = c.stale OR c.cells <> EXCLUDED.cells "
            "OR c.category_column IS DISTINCT FROM EXCLUDED.category_column "
            "OR c.not_counted_column IS DISTINCT FROM EXCLUDED.not_counted_column"),
            {"t": layer.table, "cells": cells, "cat": layer.style.color_by, "merged": layer.merged_column})
        kept.add(layer.table)
    conn.commit()
    return kept



class FreshCells:
    """When each layer's pre-aggregated cells were last found fresh, at which version (one per app: one database).

    Cells go stale only with a bulk change, which bumps the layer's version: while the version stays the one
    they were found fresh at, for ``hold_s`` (against a process started with other layer files), they are not
    asked about again.
    """

    def __init__(self, hold_s: float = 2.0) -> None:
        self.hold_s = hold_s
        self._seen: dict[str, tuple[int, float]] = {}

    def all_fresh(self, tables: list[str], known: Mapping[str, int] | None) -> bool:
        """Whether every one of ``tables`` was found fresh at the version ``known`` gives, a moment ago."""
        if known is None:
            return False
        now = time.monotonic()
        return all((seen := self._seen.get(t)) is not None and t in known and seen[0] == known[t]
                   and now - seen[1] < self.hold_s for t in tables)

    def found_fresh(self, table: str, version: int) -> None:
        """Note that ``table``'s cells were fresh at ``version``."""
        self._seen[table] = (version, time.monotonic())


class StaleCells(Exception):
    """Cells that need rebuilding were found where they cannot be rebuilt (a read replica): ask the primary."""


def fresh_cells(conn: Connection, layers: list[Layer], known: Mapping[str, int] | None = None,
                seen: FreshCells | None = None, rebuild: bool = True) -> frozenset[str]:
    """The tables of ``layers`` that keep pre-aggregated cells, stale ones rebuilt first (after a bulk load).

    ``known``: the layer versions as the listener heard them; ``seen``: the app's memory of fresh cells (then a
    tile whose cells were fresh a moment ago at these versions does not ask again). ``rebuild`` False (a
    replica): ``StaleCells`` instead of rebuilding.
    """
    clustered = [lyr.table for lyr in layers if lyr.tiles.cluster_below_zoom is not None]
    if not clustered:
        return frozenset()
    if seen is not None and seen.all_fresh(clustered, known):
        return frozenset(clustered)
    rows = conn.execute(sa.text(
        "SELECT c.layer_table, c.stale, coalesce(v.version, 0) AS version FROM tile_cell_config c "
        "LEFT JOIN layer_versions v ON v.table_name = c.layer_table WHERE c.layer_table = ANY(:t)"),
        {"t": clustered}).all()
    for table, stale, version in rows:
        if stale and not rebuild:
            raise StaleCells(str(table))
        if stale:
            rebuild_cells(conn, str(table))
        elif seen is not None:
            seen.found_fresh(str(table), int(version))
    return frozenset(str(r[0]) for r in rows)


class CellsRebuilding(Exception):
    """Another thread of this process is rebuilding these cells.

    Wait for ``done`` without a connection, then ask again (``wait_for_cells``).
    """

    def __init__(self, table: str, done: threading.Event) -> None:
        super().__init__(f"the tile cells of {table} are being rebuilt")
        self.done = done


_rebuilding: dict[str, threading.Event] = {}  # table → set when this process's rebuild of its cells ends
_rebuilding_lock = threading.Lock()
CELLS_WAIT_S = 60.0  # how long a tile waits for another thread's rebuild (10M incidents: ~11 s) before a 503


def rebuild_cells(conn: Connection, table: str) -> None:
    """Rebuild a layer's cells and commit, past the request's statement timeout (10M incidents take ~11 s).

    Under the timeout a big layer's rebuild was cancelled on every try and its low-zoom tiles never came; a
    rebuild that someone else finished while this one waited for its lock does nothing (migration 019). The
    connection's timeout is put back after. One thread per process rebuilds a table's cells: the others get
    ``CellsRebuilding`` and wait without holding a connection, so a wall asking many low-zoom tiles at once
    after a bulk change does not take every pooled connection for the length of a rebuild (items, events and
    the KPIs would wait for one).
    """
    with _rebuilding_lock:
        running = _rebuilding.get(table)
        if running is not None:
            raise CellsRebuilding(table, running)
        done = _rebuilding[table] = threading.Event()
    try:
        previous = conn.execute(sa.text("SHOW statement_timeout")).scalar()
        conn.execute(sa.text("SET statement_timeout = 0"))
        try:
            conn.execute(sa.text("SELECT gis_ioc_rebuild_stale_cells(:t)"), {"t": table})
            conn.commit()
        finally:
            conn.execute(sa.text("SELECT set_config('statement_timeout', :v, false)"), {"v": previous})
            conn.commit()
    finally:
        with _rebuilding_lock:
            _rebuilding.pop(table, None)
        done.set()


def wait_for_cells(make: Callable[[], T], wait_s: float = CELLS_WAIT_S) -> T:
    """``make()``, which takes its own connection, again after any rebuild of the cells it needs by another thread.

    The wait holds no connection. ``Busy`` (503) after ``wait_s``.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return make()
        except CellsRebuilding as busy:
            if not busy.done.wait(timeout=max(0.0, deadline - time.monotonic())):
                raise Busy("the low-zoom cells of a layer are being rebuilt after a bulk change; try again "
                           "shortly") from None


def rebuild_stale_cells(engine: Any, catalog: Catalog) -> None:
    """Rebuild every built-in layer's stale cells (at start, when no tiles are warmed). Errors are logged."""
    try:
        def rebuild() -> None:
            with engine.connect() as conn:
                fresh_cells(conn, list(catalog.builtin.values()))

        wait_for_cells(rebuild)
    except Exception as err:  # noqa: BLE001 - a start-up chore must never take the server down
        logging.getLogger("gis_ioc.tiles").warning("rebuilding stale tile cells failed: %s", err)
