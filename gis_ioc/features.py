"""Reading features: runs the statements of ``queries`` (used by the API, the CLI and notebooks)."""

from __future__ import annotations

import json
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
    counted = int(conn.execute(queries.count_statement(layer, req, queries.COUNT_BOUND)).scalar_one())
    if counted <= queries.COUNT_BOUND:
        return Page(features, returned, counted, following)
    if queries.filtered(req):
        return Page(features, returned, None, following)
    return Page(features, returned, count_within(conn, queries.count_statement(layer, req)), following)


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
