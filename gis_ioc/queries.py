"""SQL for feature queries: bbox, datetime, property filters, CQL2 (``cql2_sql``), sorting, paging, CRS.

Pure: builds SQLAlchemy Core statements with bound values, never runs them. Identifiers come
from the catalog; every value from a request is a bound parameter. Bad input raises
``InvalidInput`` naming the parameter.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any

import numpy as np
import pyproj
import shapely
import shapely.geometry
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.sql.elements import ColumnElement

from gis_ioc import limits
from gis_ioc.catalog import Layer, PropertyType
from gis_ioc.cql2_sql import Cql2ToSql, check_filter_lang, geometry_literal, parse_filter, parse_instant
from gis_ioc.errors import InvalidInput

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 100
COUNT_BOUND = 10_000  # numberMatched: counted exactly up to here (cheap); above it only for a whole layer
# a filtered first page reads up to this many matches once, for both its page and their exact count: one
# statement where most boxes of a map need two (the page, then the count); a selection larger than this
# is paged and counted from the table as before
FEW_MATCHES = 1_000
COUNT_BUDGET_MS = 300  # a whole layer's count must take no longer, else numberMatched is left out (never estimated)


# -- coordinate reference systems -----------------------------------------------------------------


@dataclass(frozen=True)
class Crs:
    """A CRS a client may ask for: its URI, SRID, and whether its axis order is lat/lon."""

    uri: str
    srid: int
    lat_lon: bool = False


CRS84 = Crs("http://www.opengis.net/def/crs/OGC/1.3/CRS84", 4326)
SUPPORTED_CRS = {
    c.uri: c
    for c in (
        CRS84,
        Crs("http://www.opengis.net/def/crs/EPSG/0/4326", 4326, lat_lon=True),
        Crs("http://www.opengis.net/def/crs/EPSG/0/3857", 3857),
        Crs("http://www.opengis.net/def/crs/EPSG/0/9216", 9216),
    )
}
_CRS_SHORT = re.compile(r"^\[?(EPSG|OGC):(\w+)\]?$", re.IGNORECASE)


def parse_crs(value: str | None, param: str = "crs") -> Crs:
    """A supported CRS from its URI (or ``EPSG:9216`` / ``OGC:CRS84``); default CRS84."""
    if value is None or value == "":
        return CRS84
    text = value.strip()
    short = _CRS_SHORT.match(text)
    if short:
        auth, code = short.group(1).upper(), short.group(2)
        text = CRS84.uri if (auth, code.upper()) == ("OGC", "CRS84") else f"http://www.opengis.net/def/crs/{auth}/0/{code}"
    if text not in SUPPORTED_CRS:
        raise InvalidInput(f"{param}: unsupported CRS {value!r}; supported: {', '.join(SUPPORTED_CRS)}", param=param)
    return SUPPORTED_CRS[text]


# -- request parameters ---------------------------------------------------------------------------


@dataclass
class ItemsRequest:
    """The validated parameters of an items request."""

    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: Crs = CRS84
    interval: tuple[datetime | None, datetime | None] | None = None
    equals: dict[str, Any] = field(default_factory=dict)
    cql: dict[str, Any] | None = None
    sortby: list[tuple[str, bool]] = field(default_factory=list)  # (property, descending)
    properties: list[str] | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    after: list[Any] | None = None  # the sort values of the last row of the previous page (``cursor``)
    crs: Crs = CRS84


STANDARD_PARAMS = {"bbox", "bbox-crs", "datetime", "limit", "offset", "cursor", "filter", "filter-lang", "filter-crs",
                   "sortby", "properties", "crs", "f"}


def _int(value: str, param: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(f"{param}: {value!r} is not a whole number", param=param) from None
    if not low <= number <= high:
        raise InvalidInput(f"{param}: {number} is not between {low} and {high}", param=param)
    return number


def parse_bbox(value: str, param: str = "bbox") -> tuple[float, float, float, float]:
    """``minx,miny,maxx,maxy`` (a 6-number 3D box keeps its horizontal part)."""
    try:
        numbers = [float(v) for v in value.split(",")]
    except ValueError:
        raise InvalidInput(f"{param}: {value!r} is not 4 comma-separated numbers", param=param) from None
    if len(numbers) == 6:
        numbers = [numbers[0], numbers[1], numbers[3], numbers[4]]
    if len(numbers) != 4 or not all(math.isfinite(n) for n in numbers):
        raise InvalidInput(f"{param}: {value!r} is not 4 comma-separated numbers", param=param)
    xmin, ymin, xmax, ymax = numbers
    if ymin > ymax or xmin > xmax:
        raise InvalidInput(f"{param}: the lower corner {xmin},{ymin} is above the upper corner {xmax},{ymax}",
                           param=param)
    return xmin, ymin, xmax, ymax


def parse_datetime(value: str, param: str = "datetime") -> tuple[datetime | None, datetime | None]:
    """An instant, a closed interval ``a/b`` or a half-open one (``../b``, ``a/..``, ``a/``).

    The interval is half-open [start, end) for dates (a whole day), closed for instants.
    """
    if "/" not in value:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
            return parse_instant(value, param), parse_instant(value, param, end=True)
        moment = parse_instant(value, param)
        return moment, moment
    start_text, _, end_text = value.partition("/")
    start = None if start_text in ("", "..") else parse_instant(start_text, param)
    end = None if end_text in ("", "..") else parse_instant(end_text, param, end=True)
    if start is None and end is None:
        raise InvalidInput(f"{param}: {value!r} is open at both ends", param=param)
    if start and end and start > end:
        raise InvalidInput(f"{param}: the interval {value!r} ends before it starts", param=param)
    return start, end


def _typed(layer: Layer, name: str, value: str, param: str, *, enum: bool = True) -> Any:
    prop = layer.property(name, param)
    try:
        if prop.type == PropertyType.integer:
            return int(value)
        if prop.type == PropertyType.number:
            return float(value)
        if prop.type == PropertyType.boolean:
            return {"true": True, "false": False}[value.lower()]
        if prop.type in (PropertyType.datetime, PropertyType.date):
            return parse_instant(value, param)
    except (ValueError, KeyError):
        raise InvalidInput(f"{param}: {value!r} is not a {prop.type.value}", param=param) from None
    if enum and prop.enum is not None and value not in prop.enum:
        raise InvalidInput(f"{param}: {value!r} is not one of {', '.join(prop.enum)}", param=param)
    return value


def parse_items(layer: Layer, params: Mapping[str, str]) -> ItemsRequest:
    """Validate the query parameters of ``/collections/{id}/items``."""
    req = ItemsRequest()
    for name, value in params.items():
        if name in STANDARD_PARAMS:
            continue
        if name not in layer.properties:
            raise InvalidInput(
                f"{name}: unknown parameter; layer {layer.id!r} has the properties {', '.join(layer.properties)}",
                param=name,
            )
        req.equals[name] = _typed(layer, name, value, name)
    if "limit" in params:
        req.limit = _int(params["limit"], "limit", 1, MAX_LIMIT)
    if "offset" in params:
        req.offset = _int(params["offset"], "offset", 0, limits.MAX_OFFSET)
    if "bbox" in params:
        req.bbox = parse_bbox(params["bbox"])
    req.bbox_crs = parse_crs(params.get("bbox-crs"), "bbox-crs")
    if "bbox-crs" in params and req.bbox is None:
        raise InvalidInput("bbox-crs: given without bbox", param="bbox-crs")
    req.crs = parse_crs(params.get("crs"), "crs")
    if "datetime" in params:
        if not layer.datetime_column:
            raise InvalidInput(f"datetime: layer {layer.id!r} has no time column", param="datetime")
        req.interval = parse_datetime(params["datetime"])
    lang = check_filter_lang(params.get("filter-lang"))
    if lang and "filter" not in params:
        raise InvalidInput("filter-lang: given without filter", param="filter-lang")
    if "filter" in params:
        req.cql = parse_filter(params["filter"], lang)
        if params.get("filter-crs"):
            filter_crs = parse_crs(params["filter-crs"], "filter-crs")
            if filter_crs.srid != 4326 or filter_crs.lat_lon:
                raise InvalidInput("filter-crs: only CRS84 is supported for filter geometries", param="filter-crs")
    if "sortby" in params:
        for item in filter(None, (s.strip() for s in params["sortby"].split(","))):
            descending = item.startswith("-")
            name = item.lstrip("+-").strip()
            layer.property(name, "sortby")
            req.sortby.append((name, descending))
    if "properties" in params:
        names = [p.strip() for p in params["properties"].split(",") if p.strip()]
        for name in names:
            layer.property(name, "properties")
        req.properties = names
    if "cursor" in params:
        if req.offset:
            raise InvalidInput("cursor: comes from a next link, which has no offset; give one of them", param="cursor")
        req.after = decode_cursor(layer, req, params["cursor"])
    return req


# -- SQL ------------------------------------------------------------------------------------------


def table_of(layer: Layer) -> sa.TableClause:
    """A lightweight Core table for a layer, its columns from the catalog."""
    columns: list[sa.ColumnClause[Any]] = [sa.column(name) for name in layer.properties]
    columns.append(sa.column(layer.geometry.column))
    return sa.table(layer.table_name, *columns, schema=layer.schema_name)


def bbox_envelope(bbox: tuple[float, float, float, float], crs: Crs, param: str = "bbox") -> ColumnElement[Any]:
    """The bbox as a 4326 geometry; the literal is transformed, never the column (the index stays usable).

    A projected box is densified and transformed here (PROJ through pyproj), so a box outside the
    CRS's domain is a 400 naming ``param`` rather than an error inside PostGIS.
    """
    xmin, ymin, xmax, ymax = bbox
    if crs.lat_lon:
        xmin, ymin, xmax, ymax = ymin, xmin, ymax, xmax
    flat = xmin == xmax or ymin == ymax  # a box of no area is the point or line it is: GEOS finds nothing in a
    # polygon of no area
    if crs.srid == 4326 and not flat:
        return sa.func.ST_MakeEnvelope(xmin, ymin, xmax, ymax, 4326)
    steps = np.linspace(0.0, 1.0, 17)
    xs = np.concatenate([xmin + (xmax - xmin) * steps, np.full(17, xmax), xmax - (xmax - xmin) * steps,
                         np.full(17, xmin)])
    ys = np.concatenate([np.full(17, ymin), ymin + (ymax - ymin) * steps, np.full(17, ymax),
                         ymax - (ymax - ymin) * steps])
    if crs.srid == 4326:
        lons, lats = xs, ys
    else:
        try:
            lons, lats = _to_lonlat(crs.srid).transform(xs, ys, errcheck=True)
        except pyproj.exceptions.ProjError:
            lons = lats = np.array([np.inf])
        if not (np.all(np.isfinite(lons)) and np.all(np.isfinite(lats))):
            raise InvalidInput(f"{param}: {xmin:g},{ymin:g},{xmax:g},{ymax:g} lies outside the area where "
                               f"EPSG:{crs.srid} is defined", param=param)
    corners = np.column_stack([np.clip(lons, -180, 180), np.clip(lats, -90, 90)])
    if flat:  # the ring's first 34 points run from the lower corner to the upper one
        line = corners[:34]
        shape = shapely.Point(line[0]) if (line == line[0]).all() else shapely.LineString(line)
    else:
        shape = shapely.make_valid(shapely.Polygon(corners))
    return geometry_literal(shapely.geometry.mapping(shape))


@functools.cache
def _to_lonlat(srid: int) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(srid, 4326, always_xy=True)


def conditions(layer: Layer, req: ItemsRequest, table: sa.TableClause) -> list[ColumnElement[bool]]:
    """The WHERE conditions of an items request."""
    where: list[ColumnElement[bool]] = view_condition(layer, table)
    geom = table.c[layer.geometry.column]
    if req.bbox is not None:
        where.append(sa.func.ST_Intersects(geom, bbox_envelope(req.bbox, req.bbox_crs)))
    if req.interval is not None and layer.datetime_column:
        column = table.c[layer.datetime_column]
        start, end = req.interval
        if start is not None and end is not None and start == end:
            where.append(column == start)
        else:
            if start is not None:
                where.append(column >= start)
            if end is not None:
                where.append(column < end if end.time() == time() and end.tzinfo else column <= end)
    for name, value in req.equals.items():
        where.append(table.c[name] == value)
    if req.cql is not None:
        where.append(Cql2ToSql(layer, table)(req.cql))
    return where


def view_condition(layer: Layer, table: sa.TableClause) -> list[ColumnElement[bool]]:
    """A per-geometry view keeps the features of its dimension (``incidents.polygons``: 2)."""
    if layer.dimension is None:
        return []
    return [sa.func.ST_Dimension(table.c[layer.geometry.column]) == layer.dimension]


def output_geometry(layer: Layer, table: sa.TableClause, crs: Crs) -> ColumnElement[Any]:
    """The geometry in the requested CRS and axis order (Multi* throughout in a view that holds both forms)."""
    geom: ColumnElement[Any] = table.c[layer.geometry.column]
    if layer.as_multi:
        geom = sa.func.ST_Multi(geom)
    if crs.srid != 4326:
        geom = sa.func.ST_Transform(geom, crs.srid)
    if crs.lat_lon:
        geom = sa.func.ST_FlipCoordinates(geom)
    return geom


def _properties_json(table: sa.TableClause, names: list[str]) -> ColumnElement[Any]:
    """``json_build_object`` of the properties (in pieces of 40: PostgreSQL takes 100 arguments)."""
    pieces = []
    for start in range(0, len(names), 40):
        args: list[Any] = []
        for name in names[start : start + 40]:
            args += [sa.literal(name), table.c[name]]
        pieces.append(sa.func.jsonb_build_object(*args))
    if not pieces:
        return sa.func.jsonb_build_object()
    combined: ColumnElement[Any] = pieces[0]
    for piece in pieces[1:]:
        combined = combined.op("||")(piece)
    return combined


def feature_json(layer: Layer, table: sa.TableClause, req: ItemsRequest, decimals: int) -> ColumnElement[Any]:
    """One GeoJSON Feature, built by PostgreSQL."""
    names = req.properties if req.properties is not None else [n for n in layer.properties if n != layer.id_column]
    return sa.func.json_build_object(
        sa.literal("type"), sa.literal("Feature"),
        sa.literal("id"), table.c[layer.id_column],
        sa.literal("geometry"), sa.cast(sa.func.ST_AsGeoJSON(output_geometry(layer, table, req.crs), decimals),
                                         sa.JSON),
        sa.literal("properties"), _properties_json(table, names),
    )


def sort_keys(layer: Layer, req: ItemsRequest) -> list[tuple[str, bool]]:
    """The (property, descending) sort keys of a request, always ending with the id so that paging is stable."""
    keys = list(req.sortby)
    if layer.id_column not in [n for n, _ in keys]:
        keys.append((layer.id_column, False))
    return keys


def order_by(layer: Layer, table: sa.TableClause, req: ItemsRequest) -> list[Any]:
    """ORDER BY of a request (PostgreSQL's defaults: NULLs last going up, first going down)."""
    return [table.c[n].desc() if desc else table.c[n].asc() for n, desc in sort_keys(layer, req)]


def encode_cursor(keys: list[tuple[str, bool]], values: list[Any]) -> str:
    """The ``cursor`` of the next page: the sort keys and the last row's values, base64url JSON."""
    raw = json.dumps({"k": [[n, d] for n, d in keys], "v": values}, separators=(",", ":"), default=str)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(layer: Layer, req: ItemsRequest, token: str) -> list[Any]:
    """The last row's sort values from a ``cursor`` made for the same sort order (else a 400)."""
    problem = "cursor: not a cursor of this layer and sort order; follow the next link as given"
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        keys, values = data["k"], data["v"]
    except (ValueError, TypeError, KeyError):
        raise InvalidInput(problem, param="cursor") from None
    expected = sort_keys(layer, req)
    if not isinstance(values, list) or keys != [[n, d] for n, d in expected] or len(values) != len(expected):
        raise InvalidInput(problem, param="cursor")
    typed: list[Any] = []
    for (name, _), value in zip(expected, values, strict=True):
        if value is None:
            typed.append(None)
        elif isinstance(value, dict | list):
            raise InvalidInput(problem, param="cursor")
        else:
            typed.append(_typed(layer, name, str(value).lower() if isinstance(value, bool) else str(value),
                                "cursor", enum=False))
    return typed


def after_cursor(table: sa.TableClause, keys: list[tuple[str, bool]], values: list[Any]) -> ColumnElement[bool]:
    """Rows after ``values`` in the order of ``keys`` (keyset paging; NULLs last going up, first going down)."""

    def equal(column: Any, value: Any) -> Any:
        return column.is_(None) if value is None else column == value

    def later(column: Any, value: Any, descending: bool) -> Any:
        if descending:
            return column.is_not(None) if value is None else column < value
        return sa.false() if value is None else sa.or_(column > value, column.is_(None))

    branches = []
    for i, (name, descending) in enumerate(keys):
        earlier = [equal(table.c[n], v) for (n, _), v in zip(keys[:i], values[:i], strict=True)]
        branches.append(sa.and_(*earlier, later(table.c[name], values[i], descending)))
    return sa.or_(*branches)


def decimals_for(crs: Crs) -> int:
    """Coordinate precision: about 1 cm in degrees or metres."""
    return 7 if crs.srid == 4326 else 2


def items_statement(layer: Layer, req: ItemsRequest) -> sa.Select[str, int, Any, str]:
    """One statement for a page, built in the database.

    Returns the features as a JSON array (text), how many, whether another page follows (one row
    more is read to know), and the last row's sort values (the next page's cursor).
    """
    page = _page_rows(layer, req)
    # row_number counts the rows OFFSET skips too
    return sa.select(*_page_columns(page, req.offset + req.limit))


def items_rows_statement(layer: Layer, req: ItemsRequest) -> sa.Select[str, str]:
    """A page's rows one by one, for a page sent as it is read: each feature's JSON and its sort values (text).

    One row more than the page is read, to know that another page follows.
    """
    page = _page_rows(layer, req)
    return sa.select(sa.cast(page.c.feature, sa.Text), sa.cast(page.c.sort_values, sa.Text)).order_by(page.c.rn)


def _page_rows(layer: Layer, req: ItemsRequest) -> sa.Subquery:
    """The rows of a page and the one after it: the feature's JSON, its sort values, its number (``rn``)."""
    table = table_of(layer)
    keys = sort_keys(layer, req)
    ordering = order_by(layer, table, req)
    where = conditions(layer, req, table)
    if req.after is not None:
        where.append(after_cursor(table, keys, req.after))
    return (
        sa.select(feature_json(layer, table, req, decimals_for(req.crs)).label("feature"),
                  sa.func.json_build_array(*[table.c[n] for n, _ in keys]).label("sort_values"),
                  sa.func.row_number().over(order_by=ordering).label("rn"))
        .where(*where)
        .order_by(*ordering)
        .limit(req.limit + 1)
        .offset(req.offset)
        .subquery("page")
    )


def first_page_statement(layer: Layer, req: ItemsRequest, few: int) -> sa.Select[str, int, Any, str, int]:
    """A first page and its exact count in one statement, when at most ``few`` features match.

    Reads at most ``few`` + 1 matches (any of them, in whatever order the plan finds them) and counts them;
    when that is all of them, the page is made from those rows, else it is left empty (``matched`` > ``few``:
    ask ``items_statement`` and ``count_statement``). The columns of ``items_statement``, then ``matched``.
    """
    table = table_of(layer)
    keys = sort_keys(layer, req)
    matches = sa.select(table).where(*conditions(layer, req, table)).limit(few + 1).cte("matches")
    matched = sa.select(sa.func.count()).select_from(matches).scalar_subquery()
    ordering = [matches.c[n].desc() if desc else matches.c[n].asc() for n, desc in keys]
    top = (  # a top-N sort of the few; the features' JSON is made for the page's rows only
        sa.select(feature_json(layer, matches, req, decimals_for(req.crs)).label("feature"),  # type: ignore[arg-type]
                  sa.func.json_build_array(*[matches.c[n] for n, _ in keys]).label("sort_values"),
                  *[matches.c[n].label(f"key{i}") for i, (n, _) in enumerate(keys)])
        .where(matched <= few)  # a one-time filter: nothing is sorted or written when there are more
        .order_by(*ordering).limit(req.limit + 1).subquery("top")
    )
    again = [top.c[f"key{i}"].desc() if desc else top.c[f"key{i}"].asc() for i, (_, desc) in enumerate(keys)]
    page = sa.select(top.c.feature, top.c.sort_values,
                     sa.func.row_number().over(order_by=again).label("rn")).subquery("page")
    return sa.select(*_page_columns(page, req.limit), matched)


def _page_columns(page: sa.Subquery, last: int) -> list[ColumnElement[Any]]:
    """The features of rows ``rn`` ≤ ``last`` as a JSON array, how many, whether more follow, the last's keys."""
    on_page = page.c.rn <= last
    return [
        sa.func.coalesce(sa.cast(sa.func.json_agg(aggregate_order_by(page.c.feature, page.c.rn))
                                 .filter(on_page), sa.Text), sa.literal("[]")),
        sa.func.count().filter(on_page),
        sa.func.coalesce(sa.func.bool_or(page.c.rn > last), sa.false()),
        sa.cast(sa.func.array_agg(aggregate_order_by(page.c.sort_values, page.c.rn.desc()), type_=ARRAY(sa.JSON))
                .filter(on_page)[1], sa.Text),
    ]


def count_statement(layer: Layer, req: ItemsRequest, bound: int | None = None) -> sa.Select[Any]:
    """Count the matches (stopping at ``bound`` + 1 when given)."""
    table = table_of(layer)
    if bound is None:
        return sa.select(sa.func.count()).select_from(table).where(*conditions(layer, req, table))
    inner = sa.select(sa.literal(1)).select_from(table).where(*conditions(layer, req, table)).limit(bound + 1)
    return sa.select(sa.func.count()).select_from(inner.subquery("matches"))


def filtered(req: ItemsRequest) -> bool:
    """Whether a request selects part of a layer (bbox, datetime, property values, CQL2)."""
    return bool(req.bbox is not None or req.interval is not None or req.equals or req.cql is not None)


def item_statement(layer: Layer, feature_id: Any, crs: Crs) -> sa.Select[Any]:
    """One feature by id, as GeoJSON text."""
    table = table_of(layer)
    req = ItemsRequest(crs=crs)
    return sa.select(sa.cast(feature_json(layer, table, req, decimals_for(crs)), sa.Text)).where(
        table.c[layer.id_column] == feature_id, *view_condition(layer, table)
    )
