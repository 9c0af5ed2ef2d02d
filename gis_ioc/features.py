"""Reading features: runs the statements of ``queries`` (used by the API, the CLI and notebooks)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gis_ioc import queries
from gis_ioc.catalog import Layer
from gis_ioc.queries import Crs, ItemsRequest


@dataclass
class Page:
    """One page of features: the GeoJSON features as JSON text, the counts, and the next page's cursor."""

    features: str
    returned: int
    matched: int | None  # exact, or None when counting would cost too much (and on pages after the first)
    next_cursor: str | None = None


def items_page(conn: Connection, layer: Layer, req: ItemsRequest) -> Page:
    """The features of one page, as JSON built by PostgreSQL, and how many match in all.

    The count is exact or absent, never an estimate (GDAL and QGIS show it as exact): the first page
    counts up to ``queries.COUNT_BOUND`` matches (a few ms), and a whole layer beyond that within
    ``queries.COUNT_BUDGET_MS``; a large filtered selection has none, and pages reached by a cursor do
    not count again. The next page is addressed by a cursor (the last row's sort values), so any page
    costs what the first does.

    A filtered first page (a map's box) with few matches (``queries.FEW_MATCHES``) is one statement, which
    reads them once for both the page and the count. With more, that statement stops at ``FEW_MATCHES`` + 1,
    and the page and the count are two statements, as for any other page. At ten million incidents a 2 km box
    holds about 400: its page took 11 ms as two statements, 8 as one.
    """
    keys = queries.sort_keys(layer, req)
    first = req.offset == 0 and req.after is None
    few = min(queries.FEW_MATCHES, queries.COUNT_BOUND)
    if first and queries.filtered(req) and req.limit < few:  # a larger page holds all of few matches: no count
        features, returned, more, last, matched = conn.execute(queries.first_page_statement(layer, req, few)).one()
        if matched <= few:
            following = queries.encode_cursor(keys, json.loads(last)) if more and last else None
            return Page(features, returned, matched, following)
    features, returned, more, last = conn.execute(queries.items_statement(layer, req)).one()
    following = queries.encode_cursor(keys, json.loads(last)) if more and last else None
    if first and not more:
        return Page(features, returned, returned)
    if req.after is not None:
        return Page(features, returned, None, following)
    return Page(features, returned, count_matched(conn, layer, req), following)


def count_matched(conn: Connection, layer: Layer, req: queries.ItemsRequest) -> int | None:
    """``numberMatched``: exact up to ``queries.COUNT_BOUND``, a whole layer's within its budget, else None."""
    counted = int(conn.execute(queries.count_statement(layer, req, queries.COUNT_BOUND)).scalar_one())
    if counted <= queries.COUNT_BOUND:
        return counted
    if queries.filtered(req):
        return None
    return count_within(conn, queries.count_statement(layer, req))


@dataclass
class Streamed:
    """A page sent as it was read: its features' JSON, in pieces, then what the rows said of the page."""

    returned: int = 0
    next_cursor: str | None = None


def stream_page(conn: Connection, layer: Layer, req: queries.ItemsRequest, streamed: Streamed,
                piece_chars: int = 256 * 1024) -> Iterator[str]:
    """The features of a page as comma-separated JSON, in pieces of about ``piece_chars``.

    The rows come through a server-side cursor a few hundred at a time, so a page of 10,000 features is never
    whole in memory. ``streamed`` is filled as the rows pass: how many, and the next page's cursor.
    """
    keys = queries.sort_keys(layer, req)
    result = conn.execution_options(yield_per=500).execute(queries.items_rows_statement(layer, req))
    pieces: list[str] = []
    size, last = 0, None
    for feature, sort_values in result:
        if streamed.returned == req.limit:  # the row after the page: another page follows
            streamed.next_cursor = queries.encode_cursor(keys, json.loads(last)) if last else None
            break
        pieces.append(feature if not streamed.returned else "," + feature)
        streamed.returned += 1
        size += len(feature)
        last = sort_values
        if size >= piece_chars:
            yield "".join(pieces)
            pieces, size = [], 0
    result.close()
    if pieces:
        yield "".join(pieces)


def count_within(conn: Connection, statement: sa.Select[Any], budget_ms: int = queries.COUNT_BUDGET_MS) -> int | None:
    """Run a count under a statement timeout of its own; None when it would take longer."""
    previous = conn.execute(sa.text("SELECT current_setting('statement_timeout')")).scalar_one()
    savepoint = conn.begin_nested()
    try:
        conn.execute(sa.text("SELECT set_config('statement_timeout', :t, true)"), {"t": str(budget_ms)})
        counted = int(conn.execute(statement).scalar_one())
    except sa.exc.OperationalError as err:
        if getattr(err.orig, "pgcode", None) != "57014":  # query_canceled: the count ran out of time
            raise
        savepoint.rollback()
        return None
    conn.execute(sa.text("SELECT set_config('statement_timeout', :t, true)"), {"t": previous})
    savepoint.commit()
    return counted


def item(conn: Connection, layer: Layer, feature_id: Any, crs: Crs = queries.CRS84) -> str | None:
    """One feature as GeoJSON text, or None."""
    return conn.execute(queries.item_statement(layer, feature_id, crs)).scalar_one_or_none()


def extent(conn: Connection, layer: Layer) -> dict[str, Any]:
    """Spatial (CRS84) and temporal extent of a layer."""
    table = queries.table_of(layer)
    geom = table.c[layer.geometry.column]
    box = conn.execute(
        sa.select(sa.func.ST_XMin(sa.func.ST_Extent(geom)), sa.func.ST_YMin(sa.func.ST_Extent(geom)),
                  sa.func.ST_XMax(sa.func.ST_Extent(geom)), sa.func.ST_YMax(sa.func.ST_Extent(geom)))
    ).one()
    result: dict[str, Any] = {}
    if box[0] is not None:
        result["spatial"] = {"bbox": [[round(v, 6) for v in box]], "crs": queries.CRS84.uri}
    if layer.datetime_column:
        column = table.c[layer.datetime_column]
        low, high = conn.execute(sa.select(sa.func.min(column), sa.func.max(column))).one()
        if low is not None:
            result["temporal"] = {"interval": [[low.isoformat(), high.isoformat()]], "trs":
                                  "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"}
    return result


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as a formula (OWASP's CSV injection)


def csv_text(frame: pd.DataFrame) -> str:
    """A frame as CSV a spreadsheet opens safely: a text cell that would start a formula gets a leading ``'``."""
    safe = frame.copy()
    for column in safe.columns:
        if pd.api.types.is_object_dtype(safe[column]) or pd.api.types.is_string_dtype(safe[column]):
            text = safe[column]
            risky = text.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_START))
            safe[column] = text.where(~risky, "'" + text.astype("string"))
    return str(safe.to_csv(index=False))


def to_frame(features_json: str, crs: Crs = queries.CRS84) -> gpd.GeoDataFrame:
    """GeoJSON features (as built by the database) as a GeoDataFrame."""
    features = json.loads(features_json)
    frame = gpd.GeoDataFrame.from_features(features, crs=4326 if crs.srid == 4326 else crs.srid)
    if features:
        frame.insert(0, "id", [f.get("id") for f in features])
    return frame
