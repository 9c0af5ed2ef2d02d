"""SQL for feature queries: bbox, datetime, property filters, CQL2, sorting, paging, CRS.

Pure: builds SQLAlchemy Core statements with bound values, never runs them. Identifiers come
from the catalog; every value from a request is a bound parameter. Bad input raises
``InvalidInput`` naming the parameter.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import psycopg2 as postgresql_psycopg2
from sqlalchemy.sql.elements import ColumnElement

from gis_ioc.catalog import Layer, PropertyType
from gis_ioc.errors import InvalidInput

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 100
COUNT_BOUND = 10_000  # count exactly up to here, above it the planner's estimate (said so)


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
    crs: Crs = CRS84


STANDARD_PARAMS = {"bbox", "bbox-crs", "datetime", "limit", "offset", "filter", "filter-lang", "filter-crs", "sortby",
                   "properties", "crs", "f"}


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


def _instant(text: str, param: str, end: bool = False) -> datetime:
    text = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = date.fromisoformat(text)
            moment = datetime.combine(day + timedelta(days=1) if end else day, time(), tzinfo=UTC)
            return moment
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{param}: {text!r} is not an RFC 3339 date-time", param=param) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_datetime(value: str, param: str = "datetime") -> tuple[datetime | None, datetime | None]:
    """An instant, a closed interval ``a/b`` or a half-open one (``../b``, ``a/..``, ``a/``).

    The interval is half-open [start, end) for dates (a whole day), closed for instants.
    """
    if "/" not in value:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
            return _instant(value, param), _instant(value, param, end=True)
        moment = _instant(value, param)
        return moment, moment
    start_text, _, end_text = value.partition("/")
    start = None if start_text in ("", "..") else _instant(start_text, param)
    end = None if end_text in ("", "..") else _instant(end_text, param, end=True)
    if start is None and end is None:
        raise InvalidInput(f"{param}: {value!r} is open at both ends", param=param)
    if start and end and start > end:
        raise InvalidInput(f"{param}: the interval {value!r} ends before it starts", param=param)
    return start, end


def _typed(layer: Layer, name: str, value: str, param: str) -> Any:
    prop = layer.property(name, param)
    try:
        if prop.type == PropertyType.integer:
            return int(value)
        if prop.type == PropertyType.number:
            return float(value)
        if prop.type == PropertyType.boolean:
            return {"true": True, "false": False}[value.lower()]
        if prop.type in (PropertyType.datetime, PropertyType.date):
            return _instant(value, param)
    except (ValueError, KeyError):
        raise InvalidInput(f"{param}: {value!r} is not a {prop.type.value}", param=param) from None
    if prop.enum is not None and value not in prop.enum:
        raise InvalidInput(f"{param}: {value!r} is not one of {', '.join(prop.enum)}", param=param)
    return value


def parse_filter(value: str, lang: str | None) -> dict[str, Any]:
    """CQL2 text or JSON (parsed by the ``cql2`` library) as canonical CQL2-JSON."""
    import cql2

    lang = (lang or "").strip()
    if lang not in ("", "cql2-text", "cql2-json"):
        raise InvalidInput(f"filter-lang: {lang!r} is not cql2-text or cql2-json", param="filter-lang")
    try:
        if lang == "cql2-json" or (not lang and value.lstrip().startswith("{")):
            expr = cql2.Expr(json.loads(value))
        else:
            expr = cql2.Expr(value)
        return dict(expr.to_json())
    except (ValueError, json.JSONDecodeError, Exception) as err:  # cql2 raises its own ParseError types
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:4] if line.strip())
        raise InvalidInput(f"filter: not valid CQL2: {detail}", param="filter") from None


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
        req.offset = _int(params["offset"], "offset", 0, 10**9)
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
    if "filter" in params:
        req.cql = parse_filter(params["filter"], params.get("filter-lang"))
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
    return req


# -- SQL ------------------------------------------------------------------------------------------


def table_of(layer: Layer) -> sa.TableClause:
    """A lightweight Core table for a layer, its columns from the catalog."""
    columns: list[sa.ColumnClause[Any]] = [sa.column(name) for name in layer.properties]
    columns.append(sa.column(layer.geometry.column))
    return sa.table(layer.table_name, *columns, schema=layer.schema_name)


def _geometry_literal(geojson: dict[str, Any], srid: int = 4326) -> ColumnElement[Any]:
    return sa.func.ST_SetSRID(sa.func.ST_GeomFromGeoJSON(sa.literal(json.dumps(geojson))), srid)


def bbox_envelope(bbox: tuple[float, float, float, float], crs: Crs) -> ColumnElement[Any]:
    """The bbox as a 4326 geometry; the literal is transformed, never the column (the index stays usable)."""
    xmin, ymin, xmax, ymax = bbox
    if crs.lat_lon:
        xmin, ymin, xmax, ymax = ymin, xmin, ymax, xmax
    envelope = sa.func.ST_MakeEnvelope(xmin, ymin, xmax, ymax, crs.srid)
    if crs.srid != 4326:
        envelope = sa.func.ST_Transform(sa.func.ST_Segmentize(envelope, (xmax - xmin) / 16 or 1), 4326)
    return envelope


class Cql2ToSql:
    """Canonical CQL2-JSON (from the ``cql2`` parser) to a SQLAlchemy condition on one layer."""

    COMPARE = {"=": "__eq__", "<>": "__ne__", "<": "__lt__", "<=": "__le__", ">": "__gt__", ">=": "__ge__"}
    SPATIAL = {"s_intersects": "ST_Intersects", "s_within": "ST_Within", "s_contains": "ST_Contains",
               "s_disjoint": "ST_Disjoint", "s_touches": "ST_Touches", "s_crosses": "ST_Crosses",
               "s_overlaps": "ST_Overlaps", "s_equals": "ST_Equals"}

    def __init__(self, layer: Layer, table: sa.TableClause) -> None:
        self.layer = layer
        self.table = table

    def __call__(self, node: dict[str, Any]) -> ColumnElement[bool]:
        """The condition for a CQL2-JSON expression."""
        result = self.node(node)
        if isinstance(result, bool):
            return sa.true() if result else sa.false()
        return result

    def fail(self, message: str) -> InvalidInput:
        """An error naming the filter parameter."""
        return InvalidInput(f"filter: {message}", param="filter")

    def prop(self, node: Any) -> Any:
        """The column a ``{"property": …}`` node names (an unknown one is an error), else None."""
        if not (isinstance(node, dict) and "property" in node):
            return None
        name = node["property"]
        if name in (self.layer.geometry.column, "geometry"):
            return self.table.c[self.layer.geometry.column]
        if name not in self.layer.properties:
            raise self.fail(f"layer {self.layer.id!r} has no property {name!r} "
                            f"(it has: {', '.join(self.layer.properties)}, geometry)")
        return self.table.c[name]

    def value(self, node: Any) -> Any:
        """An operand: a column, a nested expression, or a bound literal (time, geometry, number…)."""
        column = self.prop(node)
        if column is not None:
            return column
        if isinstance(node, dict):
            if "op" in node:
                return self.node(node)
            if "timestamp" in node:
                return sa.literal(_instant(node["timestamp"], "filter"))
            if "date" in node:
                return sa.literal(date.fromisoformat(node["date"]))
            if "type" in node and "coordinates" in node or node.get("type") == "GeometryCollection":
                return _geometry_literal(node)
            if "bbox" in node:
                b = node["bbox"]
                corners = (b[0], b[1], b[3], b[4]) if len(b) == 6 else tuple(b)
                return sa.func.ST_MakeEnvelope(*corners, 4326)
            raise self.fail(f"unsupported value {json.dumps(node)[:80]}")
        if isinstance(node, list):
            return [self.value(v) for v in node]
        return sa.literal(node)

    def interval(self, node: Any) -> tuple[Any, Any]:
        """A temporal operand as (start, end): a property or instant is its own start and end."""
        if isinstance(node, dict) and "interval" in node:
            ends = [None if v == ".." else self.value(v if isinstance(v, dict) else {"timestamp": v})
                    for v in node["interval"]]
            return ends[0], ends[1]
        value = self.value(node)
        return value, value

    def node(self, node: Any) -> Any:
        """Translate one node."""
        if isinstance(node, bool):
            return node
        if not isinstance(node, dict) or "op" not in node:
            raise self.fail(f"expected a condition, got {json.dumps(node)[:80]}")
        op = str(node["op"]).lower()
        args = node.get("args", [])
        if op in ("and", "or"):
            parts = [self(a) for a in args]
            return sa.and_(*parts) if op == "and" else sa.or_(*parts)
        if op == "not":
            return sa.not_(self(args[0]))
        if op in self.COMPARE:
            left, right = self.value(args[0]), self.value(args[1])
            return getattr(left, self.COMPARE[op])(right)
        if op == "like":
            return self.value(args[0]).like(self.value(args[1]))
        if op == "in":
            return self.value(args[0]).in_([self.value(v) for v in args[1]])
        if op == "between":
            return self.value(args[0]).between(self.value(args[1]), self.value(args[2]))
        if op == "isnull":
            return self.value(args[0]).is_(None)
        if op in self.SPATIAL:
            return getattr(sa.func, self.SPATIAL[op])(self.value(args[0]), self.value(args[1]))
        if op == "s_dwithin":
            return self.dwithin(args)
        if op in ("t_before", "t_after", "t_intersects", "t_during", "t_equals"):
            (a0, a1), (b0, b1) = self.interval(args[0]), self.interval(args[1])
            if op == "t_before":
                return a1 < b0
            if op == "t_after":
                return a0 > b1
            if op == "t_equals":
                return sa.and_(a0 == b0, a1 == b1)
            if op == "t_during":
                return sa.and_(a0 >= b0 if b0 is not None else sa.true(), a1 <= b1 if b1 is not None else sa.true())
            return sa.and_(a0 <= b1 if b1 is not None else sa.true(), a1 >= b0 if b0 is not None else sa.true())
        raise self.fail(f"unsupported operator {node['op']!r}")

    def dwithin(self, args: list[Any]) -> Any:
        """Within a distance in metres: a box test on the index, then the exact geodesic test."""
        if len(args) != 3 or not isinstance(args[2], int | float) or args[2] < 0:
            raise self.fail("S_DWITHIN takes a geometry property, a geometry and a distance in metres >= 0")
        column, geometry, metres = self.value(args[0]), args[1], float(args[2])
        if not isinstance(geometry, dict):
            raise self.fail("S_DWITHIN needs a geometry as its second argument")
        literal = self.value(geometry)
        latitudes = [abs(c) for c in _coordinates(geometry)[1::2]] or [0.0]
        degrees = box_degrees(metres, max(latitudes))
        return sa.and_(
            column.op("&&")(sa.func.ST_Expand(literal, degrees)),
            sa.func.ST_DWithin(sa.func.geography(column), sa.func.geography(literal), metres),
        )


def box_degrees(metres: float, max_abs_lat: float) -> float:
    """Degrees that surely span ``metres`` around a geometry reaching latitude ``max_abs_lat``.

    The box test on the GiST index that comes before an exact geodesic test.
    """
    reach = min(89.0, max_abs_lat + metres / 110_000)
    return metres / (111_000 * math.cos(math.radians(reach)))


_NAMED = postgresql_psycopg2.dialect(paramstyle="named")


def compile_where(condition: ColumnElement[Any]) -> tuple[str, dict[str, Any]]:
    """A condition as SQL text with ``:named`` parameters (for statements assembled around it)."""
    compiled = condition.compile(dialect=_NAMED, compile_kwargs={"render_postcompile": True})
    return str(compiled), dict(compiled.params)


def _coordinates(geometry: dict[str, Any]) -> list[float]:
    flat: list[float] = []

    def walk(value: Any) -> None:
        if isinstance(value, int | float):
            flat.append(float(value))
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)

    walk(geometry.get("coordinates", []))
    if "bbox" in geometry:
        walk(geometry["bbox"])
    return flat


def conditions(layer: Layer, req: ItemsRequest, table: sa.TableClause) -> list[ColumnElement[bool]]:
    """The WHERE conditions of an items request."""
    where: list[ColumnElement[bool]] = []
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


def output_geometry(layer: Layer, table: sa.TableClause, crs: Crs) -> ColumnElement[Any]:
    """The geometry in the requested CRS and axis order."""
    geom: ColumnElement[Any] = table.c[layer.geometry.column]
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


def order_by(layer: Layer, table: sa.TableClause, req: ItemsRequest) -> list[Any]:
    """Sort keys, always ending with the id so that paging is stable."""
    keys: list[Any] = [table.c[n].desc() if desc else table.c[n].asc() for n, desc in req.sortby]
    if layer.id_column not in [n for n, _ in req.sortby]:
        keys.append(table.c[layer.id_column].asc())
    return keys


def decimals_for(crs: Crs) -> int:
    """Coordinate precision: about 1 cm in degrees or metres."""
    return 7 if crs.srid == 4326 else 2


def items_statement(layer: Layer, req: ItemsRequest) -> sa.Select[str, int]:
    """One statement returning the page's features as a JSON array (text), built in the database."""
    table = table_of(layer)
    page = (
        sa.select(feature_json(layer, table, req, decimals_for(req.crs)).label("feature"))
        .where(*conditions(layer, req, table))
        .order_by(*order_by(layer, table, req))
        .limit(req.limit)
        .offset(req.offset)
        .subquery("page")
    )
    return sa.select(
        sa.func.coalesce(sa.cast(sa.func.json_agg(page.c.feature), sa.Text), sa.literal("[]")),
        sa.func.count(),
    )


def count_statement(layer: Layer, req: ItemsRequest, bound: int = COUNT_BOUND) -> sa.Select[Any]:
    """Count the matches, stopping at ``bound`` + 1 (a larger count is then estimated)."""
    table = table_of(layer)
    inner = sa.select(sa.literal(1)).select_from(table).where(*conditions(layer, req, table)).limit(bound + 1)
    return sa.select(sa.func.count()).select_from(inner.subquery("matches"))


def match_statement(layer: Layer, req: ItemsRequest) -> sa.Select[Any]:
    """All matching rows (for the planner's row estimate)."""
    table = table_of(layer)
    return sa.select(sa.literal(1)).select_from(table).where(*conditions(layer, req, table))


def item_statement(layer: Layer, feature_id: Any, crs: Crs) -> sa.Select[Any]:
    """One feature by id, as GeoJSON text."""
    table = table_of(layer)
    req = ItemsRequest(crs=crs)
    return sa.select(sa.cast(feature_json(layer, table, req, decimals_for(crs)), sa.Text)).where(
        table.c[layer.id_column] == feature_id
    )
