"""CQL2 filters as SQL conditions, and the literal helpers the other statements share with them.

``parse_filter`` reads CQL2 text or JSON (bounded in size and depth before the parser sees it);
``Cql2ToSql`` turns the canonical CQL2-JSON into a SQLAlchemy condition on one layer, every value a
bound parameter and every mismatch a 400 naming ``filter``.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import shapely
import shapely.geometry
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import psycopg2 as postgresql_psycopg2
from sqlalchemy.sql.elements import ColumnElement

from gis_ioc import limits
from gis_ioc.catalog import Layer, PropertyType
from gis_ioc.errors import InvalidInput


def parse_instant(text: str, param: str, end: bool = False) -> datetime:
    """An RFC 3339 date-time (UTC when no offset is given) or a date (its start, or the next day's with ``end``)."""
    text = text.strip()
    year = re.match(r"\d{4}", text)
    if year is not None and not limits.MIN_YEAR <= int(year.group()) <= limits.MAX_YEAR:
        raise InvalidInput(f"{param}: {text[:40]!r} is outside the years {limits.MIN_YEAR}–{limits.MAX_YEAR}",
                           param=param)
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = date.fromisoformat(text)
            moment = datetime.combine(day + timedelta(days=1) if end else day, time(), tzinfo=UTC)
            return moment
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise InvalidInput(f"{param}: {text[:40]!r} is not an RFC 3339 date-time", param=param) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_WANTS_VALUE = {"GEOMETRY", "Identifier", "DECIMAL", "SingleQuotedString", "Double", "True", "False", "Null"}
_WANTS_OPERATOR = {"And", "Or", "Eq", "Gt", "Lt", "NotEq", "Add", "IsNullPostfix"}


def plain_parse_error(message: str, text: str) -> str:
    """The CQL2 parser's report (a pest dump of several lines) said in one: where, and what was expected."""
    at = re.search(r"-->\s*(\d+):(\d+)", message)
    expected = set(re.findall(r"\w+", message.split("= expected", 1)[1])) if "= expected" in message else set()
    if at is None:
        lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
        return (lines[0] if lines else "the text cannot be read")[:200]
    line, column = int(at[1]), int(at[2])
    offset = sum(len(row) + 1 for row in text.split("\n")[:line - 1]) + column - 1
    if expected & _WANTS_VALUE:
        wanted = "a value (a property, a number, 'text', TRUE, FALSE, NULL or a geometry)"
    elif expected & _WANTS_OPERATOR:
        wanted = "an operator (=, <, >, <>, LIKE, IN, BETWEEN, IS NULL, AND, OR…)"
        if "EOI" in expected:
            wanted += " or the end"
    else:
        wanted = "something else"
    found = text[offset:offset + 20].strip()
    if not found and text.count("(") > text.count(")"):
        wanted += " or ')'"
    return f"at character {offset + 1} ({'the end' if not found else f'before {found!r}'}): expected {wanted}"


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
            parsed = limits.loads(value, "filter")
            if limits.nul_path(parsed) is not None:
                raise InvalidInput("filter: contains a NUL character", param="filter")
            expr = cql2.Expr(parsed)
        else:
            limits.check_cql2_text(value, "filter")
            expr = cql2.Expr(value)
        tree = expr.to_json()
    except InvalidInput:
        raise
    except Exception as err:  # cql2 raises its own ParseError and ValueError types
        raise InvalidInput(f"filter: not valid CQL2: {plain_parse_error(str(err), value)}", param="filter") from None
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


def geometry_literal(geojson: dict[str, Any], srid: int = 4326) -> ColumnElement[Any]:
    """A GeoJSON geometry as a bound SQL value."""
    return sa.func.ST_SetSRID(sa.func.ST_GeomFromGeoJSON(sa.literal(json.dumps(geojson))), srid)


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
            return parse_instant(str(node["timestamp"]), "filter")
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
        return geometry_literal(shapely.geometry.mapping(shape))

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
