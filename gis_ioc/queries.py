"""SQL for feature queries: bbox, datetime, property filters, CQL2, sorting, paging, CRS.

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
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
import pyproj
import shapely
import shapely.geometry
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.dialects.postgresql import psycopg2 as postgresql_psycopg2
from sqlalchemy.sql.elements import ColumnElement

from gis_ioc import limits
from gis_ioc.catalog import Layer, PropertyType
from gis_ioc.errors import InvalidInput

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 100
COUNT_BOUND = 10_000  # numberMatched: counted exactly up to here (cheap); above it only for a whole layer
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
            return _instant(value, param)
    except (ValueError, KeyError):
        raise InvalidInput(f"{param}: {value!r} is not a {prop.type.value}", param=param) from None
    if enum and prop.enum is not None and value not in prop.enum:
        raise InvalidInput(f"{param}: {value!r} is not one of {', '.join(prop.enum)}", param=param)
    return value


def parse_filter(value: str, lang: str | None) -> dict[str, Any]:
    """CQL2 text or JSON (parsed by the ``cql2`` library) as canonical CQL2-JSON.

    Size and nesting are bounded before the parser sees the text (``limits``), and the parsed tree
    is measured again: anything too deep is a 400, never a crash.
    """
    import cql2

    lang = check_filter_lang(lang)
    limits.check_text(value, "filter", limits.MAX_FILTER_CHARS)
    try:
        if lang == "cql2-json" or (not lang and value.lstrip().startswith("{")):
            expr = cql2.Expr(limits.loads(value, "filter"))
        else:
            limits.check_cql2_text(value, "filter")
            expr = cql2.Expr(value)
        tree = expr.to_json()
    except InvalidInput:
        raise
    except Exception as err:  # cql2 raises its own ParseError and ValueError types
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:4] if line.strip())
        raise InvalidInput(f"filter: not valid CQL2: {detail}", param="filter") from None
    if limits.depth(tree) > limits.MAX_JSON_DEPTH:
        raise InvalidInput(f"filter: nested deeper than the limit of {limits.MAX_JSON_DEPTH} levels", param="filter")
    if isinstance(tree, bool):
        return {"op": "and", "args": [tree, tree]}
    if not isinstance(tree, dict):
        raise InvalidInput("filter: not a CQL2 condition", param="filter")
    return tree


def check_filter_lang(lang: str | None) -> str:
    """``filter-lang``: empty, ``cql2-text`` or ``cql2-json`` (checked whether or not a filter is given)."""
    lang = (lang or "").strip()
    if lang not in ("", "cql2-text", "cql2-json"):
        raise InvalidInput(f"filter-lang: {lang!r} is not cql2-text or cql2-json", param="filter-lang")
    return lang


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


def _geometry_literal(geojson: dict[str, Any], srid: int = 4326) -> ColumnElement[Any]:
    return sa.func.ST_SetSRID(sa.func.ST_GeomFromGeoJSON(sa.literal(json.dumps(geojson))), srid)


def bbox_envelope(bbox: tuple[float, float, float, float], crs: Crs, param: str = "bbox") -> ColumnElement[Any]:
    """The bbox as a 4326 geometry; the literal is transformed, never the column (the index stays usable).

    A projected box is densified and transformed here (PROJ through pyproj), so a box outside the
    CRS's domain is a 400 naming ``param`` rather than an error inside PostGIS.
    """
    xmin, ymin, xmax, ymax = bbox
    if crs.lat_lon:
        xmin, ymin, xmax, ymax = ymin, xmin, ymax, xmax
    if crs.srid == 4326:
        return sa.func.ST_MakeEnvelope(xmin, ymin, xmax, ymax, 4326)
    steps = np.linspace(0.0, 1.0, 17)
    xs = np.concatenate([xmin + (xmax - xmin) * steps, np.full(17, xmax), xmax - (xmax - xmin) * steps,
                         np.full(17, xmin)])
    ys = np.concatenate([np.full(17, ymin), ymin + (ymax - ymin) * steps, np.full(17, ymax),
                         ymax - (ymax - ymin) * steps])
    try:
        lons, lats = _to_lonlat(crs.srid).transform(xs, ys, errcheck=True)
    except pyproj.exceptions.ProjError:
        lons = lats = np.array([np.inf])
    if not (np.all(np.isfinite(lons)) and np.all(np.isfinite(lats))):
        raise InvalidInput(f"{param}: {xmin:g},{ymin:g},{xmax:g},{ymax:g} lies outside the area where EPSG:{crs.srid} "
                           "is defined", param=param)
    ring = shapely.Polygon(np.column_stack([np.clip(lons, -180, 180), np.clip(lats, -90, 90)]))
    return _geometry_literal(shapely.geometry.mapping(shapely.make_valid(ring)))


@functools.cache
def _to_lonlat(srid: int) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(srid, 4326, always_xy=True)


Operand = tuple[Any, str]  # a SQL expression and its kind: number, string, boolean, datetime, geometry


class Cql2ToSql:
    """Canonical CQL2-JSON (from the ``cql2`` parser) to a SQLAlchemy condition on one layer.

    Every operand has a kind (number, string, boolean, datetime, geometry) taken from the catalog
    for properties and from the literal otherwise; operands of different kinds, malformed dates,
    geometries and boxes are a 400 naming ``filter`` before any SQL runs.
    """

    COMPARE = {"=": "__eq__", "<>": "__ne__", "<": "__lt__", "<=": "__le__", ">": "__gt__", ">=": "__ge__"}
    SPATIAL = {"s_intersects": "ST_Intersects", "s_within": "ST_Within", "s_contains": "ST_Contains",
               "s_disjoint": "ST_Disjoint", "s_touches": "ST_Touches", "s_crosses": "ST_Crosses",
               "s_overlaps": "ST_Overlaps", "s_equals": "ST_Equals"}
    TEMPORAL = ("t_before", "t_after", "t_intersects", "t_during", "t_equals")
    KINDS = {PropertyType.integer: "number", PropertyType.number: "number", PropertyType.string: "string",
             PropertyType.boolean: "boolean", PropertyType.date: "datetime", PropertyType.datetime: "datetime"}

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

    @staticmethod
    def show(node: Any) -> str:
        """A short text of an operand for messages."""
        if isinstance(node, dict) and "property" in node:
            return str(node["property"])
        return json.dumps(node, default=str)[:60]

    def operand(self, node: Any) -> Operand:
        """An operand as a SQL expression with its kind; lists and intervals are not operands here."""
        if isinstance(node, bool):
            return sa.literal(node), "boolean"
        if isinstance(node, int | float):
            if not math.isfinite(node):
                raise self.fail(f"{node} is not a finite number")
            return sa.literal(node), "number"
        if isinstance(node, str):
            return sa.literal(node), "string"
        if isinstance(node, dict):
            if "property" in node:
                name = node["property"]
                if name in (self.layer.geometry.column, "geometry"):
                    return self.table.c[self.layer.geometry.column], "geometry"
                if name not in self.layer.properties:
                    raise self.fail(f"layer {self.layer.id!r} has no property {name!r} "
                                    f"(it has: {', '.join(self.layer.properties)}, geometry)")
                return self.table.c[name], self.KINDS[self.layer.properties[name].type]
            if "op" in node:
                return self.node(node), "boolean"
            if "timestamp" in node or "date" in node:
                return sa.literal(self.instant(node)), "datetime"
            if "bbox" in node:
                return sa.func.ST_MakeEnvelope(*self.bbox(node["bbox"]), 4326), "geometry"
            if "type" in node:
                return self.geometry(node), "geometry"
        if isinstance(node, list):
            raise self.fail(f"a list {self.show(node)} is only allowed after IN")
        raise self.fail(f"unsupported value {self.show(node)}")

    def instant(self, node: dict[str, Any]) -> date | datetime:
        """A TIMESTAMP or DATE literal, checked."""
        if "timestamp" in node:
            return _instant(str(node["timestamp"]), "filter")
        try:
            return date.fromisoformat(str(node["date"]))
        except ValueError:
            raise self.fail(f"DATE({node['date']!r}) is not a calendar date (YYYY-MM-DD)") from None

    def bbox(self, values: Any) -> tuple[float, float, float, float]:
        """A BBOX literal (4 or 6 numbers, CRS84)."""
        if not (isinstance(values, list) and len(values) in (4, 6)
                and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values)):
            raise self.fail(f"BBOX{self.show(values)} is not 4 or 6 numbers")
        xmin, ymin, xmax, ymax = (values[0], values[1], values[3], values[4]) if len(values) == 6 else values
        if not (-180 <= xmin <= xmax <= 180 and -90 <= ymin <= ymax <= 90):
            raise self.fail(f"BBOX{self.show(values)} is not minlon,minlat,maxlon,maxlat in degrees")
        return float(xmin), float(ymin), float(xmax), float(ymax)

    def geometry(self, node: dict[str, Any]) -> ColumnElement[Any]:
        """A geometry literal (GeoJSON, CRS84), checked with shapely so PostGIS only sees valid input."""
        try:
            shape = shapely.geometry.shape(node)
        except Exception as err:  # shapely raises several types for malformed GeoJSON
            raise self.fail(f"not a valid {node.get('type')} geometry ({str(err).splitlines()[0][:80]})") from None
        if shape.is_empty:
            raise self.fail(f"the {shape.geom_type} is empty")
        xmin, ymin, xmax, ymax = shape.bounds
        if not (-180 <= xmin <= xmax <= 180 and -90 <= ymin <= ymax <= 90):
            raise self.fail(f"the {shape.geom_type} is not in longitude, latitude degrees (CRS84)")
        if not shape.is_valid:
            raise self.fail(f"the {shape.geom_type} is invalid ({shapely.is_valid_reason(shape)})")
        return _geometry_literal(shapely.geometry.mapping(shape))

    def same_kind(self, op: str, nodes: list[Any], kinds: tuple[str, ...] | None = None) -> list[Any]:
        """The operands of ``op``, all of one kind (and one of ``kinds`` when given)."""
        operands = [self.operand(n) for n in nodes]
        first = operands[0][1]
        for node, (_, kind) in zip(nodes, operands, strict=True):
            if kind != first:
                raise self.fail(f"{op.upper()} compares {self.show(nodes[0])} ({first}) with {self.show(node)} "
                                f"({kind})")
        if kinds is not None and first not in kinds:
            raise self.fail(f"{op.upper()} takes {' or '.join(kinds)} operands, not {self.show(nodes[0])} ({first})")
        return [expr for expr, _ in operands]

    def interval(self, node: Any) -> tuple[Any, Any]:
        """A temporal operand as (start, end): a property or instant is its own start and end."""
        if isinstance(node, dict) and "interval" in node:
            ends = node["interval"]
            if not isinstance(ends, list) or len(ends) != 2:
                raise self.fail(f"INTERVAL{self.show(ends)} needs a start and an end")
            out: list[Any] = []
            for end in ends:
                if end == "..":
                    out.append(None)
                    continue
                expr, kind = self.operand(end if isinstance(end, dict) else {"timestamp": end})
                if kind != "datetime":
                    raise self.fail(f"INTERVAL bound {self.show(end)} is not a time")
                out.append(expr)
            return out[0], out[1]
        expr, kind = self.operand(node)
        if kind != "datetime":
            raise self.fail(f"{self.show(node)} is not a time ({kind})")
        return expr, expr

    def node(self, node: Any) -> Any:
        """Translate one condition."""
        if isinstance(node, bool):
            return node
        if not isinstance(node, dict) or "op" not in node:
            raise self.fail(f"expected a condition, got {self.show(node)}")
        op = str(node["op"]).lower()
        args = node.get("args", [])
        if not isinstance(args, list):
            raise self.fail(f"{op.upper()} needs a list of arguments")
        arity = {"not": 1, "isnull": 1, "like": 2, "in": 2, "between": 3, "s_dwithin": 3,
                 **dict.fromkeys(self.COMPARE, 2), **dict.fromkeys(self.SPATIAL, 2), **dict.fromkeys(self.TEMPORAL, 2)}
        if op in arity and len(args) != arity[op]:
            raise self.fail(f"{op.upper()} takes {arity[op]} arguments, not {len(args)}")
        if op in ("and", "or"):
            if not args:
                raise self.fail(f"{op.upper()} needs conditions")
            parts = [self(a) for a in args]
            return sa.and_(*parts) if op == "and" else sa.or_(*parts)
        if op == "not":
            return sa.not_(self(args[0]))
        if op in self.COMPARE:
            left, right = self.same_kind(op, args, ("number", "string", "boolean", "datetime"))
            return getattr(left, self.COMPARE[op])(right)
        if op == "like":
            left, right = self.same_kind(op, args, ("string",))
            return left.like(right)
        if op == "in":
            if not isinstance(args[1], list) or not args[1]:
                raise self.fail("IN needs a non-empty list, e.g. status IN ('new','verified')")
            left, *values = self.same_kind(op, [args[0], *args[1]], ("number", "string", "boolean", "datetime"))
            return left.in_(values)
        if op == "between":
            value, low, high = self.same_kind(op, args, ("number", "string", "datetime"))
            return value.between(low, high)
        if op == "isnull":
            expr, _ = self.operand(args[0])
            return expr.is_(None)
        if op in self.SPATIAL:
            left, right = self.same_kind(op, args, ("geometry",))
            return getattr(sa.func, self.SPATIAL[op])(left, right)
        if op == "s_dwithin":
            return self.dwithin(args)
        if op in self.TEMPORAL:
            (a0, a1), (b0, b1) = self.interval(args[0]), self.interval(args[1])
            if op == "t_before":
                return a1 < b0 if b0 is not None else sa.false()
            if op == "t_after":
                return a0 > b1 if b1 is not None else sa.false()
            if op == "t_equals":
                return sa.and_(a0 == b0, a1 == b1) if b0 is not None and b1 is not None else sa.false()
            if op == "t_during":
                return sa.and_(a0 >= b0 if b0 is not None else sa.true(), a1 <= b1 if b1 is not None else sa.true())
            return sa.and_(a0 <= b1 if b1 is not None else sa.true(), a1 >= b0 if b0 is not None else sa.true())
        raise self.fail(f"unsupported operator {node['op']!r}")

    def dwithin(self, args: list[Any]) -> Any:
        """Within a distance in metres: a box test on the index, then the exact geodesic test."""
        metres = args[2]
        if not isinstance(metres, int | float) or isinstance(metres, bool):
            raise self.fail("S_DWITHIN takes a geometry property, a geometry and a distance in metres")
        metres = limits.number(metres, "filter", 0, limits.MAX_RADIUS_M)
        column, literal = self.same_kind("s_dwithin", args[:2], ("geometry",))
        degrees = box_degrees(metres, max_abs_latitude(args[1]))
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


def max_abs_latitude(geometry: dict[str, Any]) -> float:
    """The largest absolute latitude a GeoJSON geometry reaches (90 when it has no coordinates)."""
    return max([abs(c) for c in _coordinates(geometry)[1::2]] or [90.0])


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
    table = table_of(layer)
    keys = sort_keys(layer, req)
    ordering = order_by(layer, table, req)
    where = conditions(layer, req, table)
    if req.after is not None:
        where.append(after_cursor(table, keys, req.after))
    page = (
        sa.select(feature_json(layer, table, req, decimals_for(req.crs)).label("feature"),
                  sa.func.json_build_array(*[table.c[n] for n, _ in keys]).label("sort_values"),
                  sa.func.row_number().over(order_by=ordering).label("rn"))
        .where(*where)
        .order_by(*ordering)
        .limit(req.limit + 1)
        .offset(req.offset)
        .subquery("page")
    )
    last = req.offset + req.limit  # row_number counts the rows OFFSET skips too
    on_page = page.c.rn <= last
    return sa.select(
        sa.func.coalesce(sa.cast(sa.func.json_agg(aggregate_order_by(page.c.feature, page.c.rn))
                                 .filter(on_page), sa.Text), sa.literal("[]")),
        sa.func.count().filter(on_page),
        sa.func.coalesce(sa.func.bool_or(page.c.rn > last), sa.false()),
        sa.cast(sa.func.array_agg(aggregate_order_by(page.c.sort_values, page.c.rn.desc()), type_=ARRAY(sa.JSON))
                .filter(on_page)[1], sa.Text),
    )


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
