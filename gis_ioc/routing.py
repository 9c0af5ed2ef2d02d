"""Response by road: routes, the nearest facilities by travel time, travel matrices (service areas: ``service_areas``).

On the network ``gis_ioc.road_network`` makes from the road layers (its ``build``, ``ensure``, ``check``,
``sources`` are offered here too). Points join the network where it is nearest to them (a point on an edge:
pgRouting's ``withPoints`` functions; on a vertex, the vertex), the leg to it at the source's off-road speed, said
in every answer. Times are in seconds, distances in metres.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from gis_ioc import analysis, analysis_common, db
from gis_ioc.catalog import Catalog, Layer, Network, quote_ident, quote_table
from gis_ioc.errors import InvalidInput
from gis_ioc.road_network import EDGES_SQL, _literal, build, check, ensure, ensure_beside, settings_of, sources, stale

__all__ = ["build", "check", "ensure", "ensure_beside", "join", "nearest_by_time", "route", "settings_of", "sources",
           "stale", "travel_matrix"]

MAX_VIA = 8
MAX_K = 10
MAX_CANDIDATES = 2000  # facilities compared by travel time in one call
MAX_MATRIX = 2500  # origins × destinations


# -- points on the network -------------------------------------------------------------------------


@dataclass(frozen=True)
class OnRoad:
    """A point joined to the network: the edge nearest it, where along it, and the leg from the point to it."""

    lon: float
    lat: float
    edge: int
    fraction: float
    off_m: float
    road: str | None
    vertex: int | None = None  # the point falls on a vertex of the network (an end of its edge)

    def vid(self, pid: int) -> int:
        """Its id for pgRouting: the vertex it falls on, else its point (``-pid``)."""
        return self.vertex if self.vertex is not None else -pid

    def leg_s(self, net: Network) -> float:
        """Seconds from the point to the road, at the off-road speed."""
        return self.off_m / (net.off_road_kmh / 3.6)


_ON_ROAD = (  # each point of q (i, p) with its nearest edge, where along it, how far off it (NULLs: no edges)
    "SELECT q.*, ST_X(q.p) AS lon, ST_Y(q.p) AS lat, e.id AS edge_id, e.source, e.target, "
    "ST_LineLocatePoint(e.geom, q.p) AS fraction, ST_Distance(q.p::geography, e.geom::geography) AS off_m, "
    "coalesce(e.name, e.road_class) AS road, ST_X(ST_ClosestPoint(e.geom, q.p)) AS mx, "
    "ST_Y(ST_ClosestPoint(e.geom, q.p)) AS my FROM q LEFT JOIN LATERAL (SELECT c.* FROM (SELECT * FROM "
    "network_edges ORDER BY geom <-> q.p LIMIT 8) c ORDER BY ST_Distance(q.p::geography, c.geom::geography) "
    "LIMIT 1) e ON true ORDER BY q.i")


def _on_roads(conn: Connection, points_sql: str, params: dict[str, Any] | None = None) -> list[Any]:
    """The rows of ``points_sql`` (columns ``i``, ``p`` and any others), each with its nearest edge: one statement."""
    sql = f"WITH q AS ({points_sql}) {_ON_ROAD}"
    rows = db.rows(conn, sql, params or None)
    if rows and rows[0].edge_id is None:
        raise _network_empty()
    return list(rows)


def _nearest_roads(conn: Connection, points: list[tuple[float, float]]) -> list[Any]:
    """For each point, in one statement: its nearest edge, where along it, how far off it."""
    values = ", ".join(f"({i}, {float(lon)!r}, {float(lat)!r})" for i, (lon, lat) in enumerate(points))
    return _on_roads(conn, f"SELECT i, ST_SetSRID(ST_MakePoint(x, y), 4326) AS p FROM (VALUES {values}) v(i, x, y)")


def _on_road(row: Any, net: Network, lon: float | None = None, lat: float | None = None) -> OnRoad | None:
    """A row of ``_on_roads`` as a point joined to the network; None when farther than ``max_off_road_m``."""
    if row.off_m > net.max_off_road_m:
        return None
    vertex = int(row.source) if row.fraction <= 1e-9 else int(row.target) if row.fraction >= 1 - 1e-9 else None
    return OnRoad(float(row.lon if lon is None else lon), float(row.lat if lat is None else lat), int(row.edge_id),
                  float(row.fraction), float(row.off_m), row.road, vertex)


def join_some(conn: Connection, points: list[tuple[float, float]], net: Network) -> list[OnRoad | None]:
    """Each point joined to the network where it is nearest; None for one farther than ``max_off_road_m``."""
    if not points:
        return []
    return [_on_road(row, net, lon, lat) for (lon, lat), row in zip(points, _nearest_roads(conn, points), strict=True)]


def join(conn: Connection, points: list[tuple[float, float]], net: Network, param: str | list[str] = "from",
         ) -> list[OnRoad]:
    """Each point joined to the network; one farther than ``max_off_road_m`` is a 400 naming it.

    ``param``: the parameter's name, or one name per point.
    """
    joined = []
    for i, (point, row) in enumerate(zip(points, _nearest_roads(conn, points) if points else [], strict=True)):
        found = _on_road(row, net, *point)
        if found is None:
            raise _too_far(point, row.off_m, net, param[i] if isinstance(param, list) else param)
        joined.append(found)
    return joined


def _fraction(p: OnRoad) -> float:
    # pgr_withPoints finds no path from a point at fraction 0 or 1 (on a vertex): a hair inside the edge
    return min(max(p.fraction, 1e-6), 1 - 1e-6)


def _points_sql(points: list[OnRoad]) -> str:
    """The points as pgRouting takes them: pid 1, 2… in the order given."""
    values = ", ".join(f"({i + 1}, {p.edge}, {_fraction(p)!r}::float, 'b'::char)" for i, p in enumerate(points))
    return f"SELECT * FROM (VALUES {values}) AS t(pid, edge_id, fraction, side)"


# -- routes written by the database ------------------------------------------------------------------
#
# A route, and each of the nearest facilities' routes, is one statement: the points are joined to the network,
# pgRouting finds the ways (its points and pairs made in SQL from the join), PostGIS cuts the pieces driven,
# and the answer's JSON is written there; only the text passes through Python (building the answer from the
# pieces' rows in Python took 0.8 ms of a 6 ms route, and a statement more). The common table expressions:
#
# - ``v``: the points (``i``, ``p``, ``lon``, ``lat``, the nearest edge…) with their pgRouting id ``vid`` (the
#   vertex a point falls on, else ``-(i + 1)``), fraction ``fr``, leg off the road ``leg_s`` and ``near``;
# - ``r``: pgr_withPoints' rows with ``next_node``; ``pc`` (``_cut_sql``): its pieces;
# - ``w``: the pieces of each answer ``g`` in the order driven (``o``, then ``path_seq``); ``ends``: each
#   answer's legs off the road (``g``, ``o``, ``p``, ``mx``, ``my``, ``off_m``);
# - ``_DRAWN`` adds ``steps``, ``drawn`` and ``driven`` for each ``g``.


def _joined_sql(points: str) -> str:
    """The CTEs ``q`` (``points``: ``i`` from 0, ``p`` and any others), ``j`` (``_ON_ROAD``) and ``v``."""
    return (
        f"q AS ({points}), j AS ({_ON_ROAD}), "
        "v AS (SELECT j.*, CASE WHEN j.fraction <= 1e-9 THEN j.source WHEN j.fraction >= 1 - 1e-9 THEN j.target "
        "ELSE -(j.i + 1) END AS vid, least(greatest(j.fraction, 1e-6), 1 - 1e-6) AS fr, j.off_m / :speed AS leg_s, "
        "coalesce(j.off_m <= :max_off, false) AS near FROM j), "
        "pts AS (SELECT i + 1 AS pid, fr AS fraction FROM v WHERE near)")


# pgRouting's points from ``v`` (those near a road): the text of a query, as pgr_withPoints takes them
_POINTS_TEXT = ("'SELECT * FROM (VALUES ' || string_agg(format('(%s, %s, %s::float8, ''b''::char)', i + 1, edge_id, "
                "fr), ', ' ORDER BY i) FILTER (WHERE near) || ') AS t(pid, edge_id, fraction, side)'")


def _cut_sql(only: str = "") -> str:
    """The common table expressions ``d`` and ``pc``: the ways of ``r`` cut into the pieces driven, by PostGIS.

    ``r``: pgr_withPoints' rows (start_pid, path_seq, node, edge, cost) with ``next_node``; ``pts``: the points
    (pid, fraction); ``only``: a join that keeps some of the ways. A piece of ``pc``: its cost, ``road``,
    ``metres`` and the part of the edge ``driven`` (in the direction driven).
    """
    return (
        "d AS (SELECT r.*, e.length_m, coalesce(e.name, e.road_class) AS road, e.geom, "
        "CASE WHEN r.node < 0 THEN p0.fraction WHEN r.node = e.source THEN 0.0 ELSE 1.0 END AS f0, "
        "CASE WHEN r.next_node < 0 THEN p1.fraction WHEN r.next_node = e.source THEN 0.0 ELSE 1.0 END AS f1 "
        f"FROM r {only} JOIN network_edges e ON e.id = r.edge LEFT JOIN pts p0 ON p0.pid = -r.node "
        "LEFT JOIN pts p1 ON p1.pid = -r.next_node WHERE r.edge > 0), "
        "pc AS (SELECT d.*, CASE WHEN whole THEN length_m ELSE ST_Length(part::geography) END AS metres, "
        "CASE WHEN f0 > f1 THEN ST_Reverse(part) ELSE part END AS driven FROM (SELECT d.*, CASE WHEN whole THEN "
        "geom ELSE ST_LineSubstring(geom, least(f0, f1), greatest(f0, f1)) END AS part FROM (SELECT d.*, "
        "least(f0, f1) <= 1e-6 AND greatest(f0, f1) >= 1 - 1e-6 AS whole FROM d) d) d)")


# each answer g: its steps (consecutive pieces of one road), its lines (the pieces as driven, then the legs off
# the road, as GeoJSON text: NULL for none) and the time and length on the road
_DRAWN = (
    "s AS (SELECT w.*, sum(w.brk) OVER (PARTITION BY w.g ORDER BY w.o, w.path_seq) AS step FROM (SELECT w.*, "
    "CASE WHEN w.road IS NOT DISTINCT FROM lag(w.road) OVER (PARTITION BY w.g ORDER BY w.o, w.path_seq) THEN 0 "
    "ELSE 1 END AS brk FROM w) w), "
    "steps AS (SELECT g, json_agg(json_build_object('road', road, 'length_m', round(m::numeric, 1), 'time_s', "
    "round(c::numeric, 1)) ORDER BY step) FILTER (WHERE m >= 0.5) AS steps FROM (SELECT g, step, min(road) AS "
    "road, sum(metres) AS m, sum(cost) AS c FROM s GROUP BY g, step) x GROUP BY g), "
    "drawn AS (SELECT g, ST_AsGeoJSON(ST_Collect(line ORDER BY o1, o2, o3), 7) AS geometry FROM ("
    "SELECT g, 0 AS o1, o AS o2, path_seq AS o3, driven AS line FROM w WHERE GeometryType(driven) = 'LINESTRING' "
    "UNION ALL SELECT g, 1, o, 0, ST_MakeLine(p, ST_SetSRID(ST_MakePoint(mx, my), 4326)) FROM ends "
    "WHERE off_m > 0.5) x GROUP BY g), "
    "driven AS (SELECT g, sum(cost) AS seconds, sum(metres) AS metres FROM w GROUP BY g)")
_NO_LINES = "'{\"type\":\"MultiLineString\",\"coordinates\":[]}'"


def _too_far(point: tuple[float, float], off_m: float, net: Network, name: str) -> InvalidInput:
    """The 400 for a point farther than ``max_off_road_m`` from every road."""
    return InvalidInput(f"{name}: the point {point[0]:.5f},{point[1]:.5f} is {off_m:,.0f} m from the nearest road "
                        f"(at most {net.max_off_road_m:,.0f} m)", param=name)


def _network_empty() -> InvalidInput:
    return InvalidInput("network: the road network is empty (no roads in its source layers)", param="network")


def _on_network(net: Network) -> dict[str, Any]:
    """The values every statement here takes: the off-road speed (m/s) and the farthest a point may be."""
    return {"speed": net.off_road_kmh / 3.6, "max_off": net.max_off_road_m}


# -- route -------------------------------------------------------------------------------------------

_ROUTE = (  # route_json's statement: the points (:xs, :ys) joined, each leg (k: from point k to k + 1) routed
    "WITH " + _joined_sql("SELECT u.i - 1 AS i, ST_SetSRID(ST_MakePoint(u.x, u.y), 4326) AS p FROM unnest("
                          "CAST(:xs AS float8[]), CAST(:ys AS float8[])) WITH ORDINALITY AS u(x, y, i)") + ", "
    "legs AS (SELECT a.i AS k, a.vid AS s, b.vid AS t, a.vid = b.vid OR (a.edge_id = b.edge_id "
    "AND a.fraction = b.fraction) AS same FROM v a JOIN v b ON b.i = a.i + 1), "
    # pgRouting's arguments, when every point is near a road and some leg has to be driven
    f"args AS (SELECT * FROM (SELECT {_POINTS_TEXT} AS points, "
    "(SELECT 'SELECT * FROM (VALUES ' || string_agg(DISTINCT format('(%s::bigint, %s::bigint)', s, t), ', ') "
    "|| ') AS c(source, target)' FROM legs WHERE s <> t) AS combinations, bool_and(near) AS near FROM v) a "
    "WHERE near AND combinations IS NOT NULL), "
    "r AS (SELECT x.start_pid, x.end_pid, x.path_seq, x.node, x.edge, x.cost, lead(x.node) OVER (PARTITION BY "
    "x.start_pid, x.end_pid ORDER BY x.path_seq) AS next_node FROM args, "
    f"LATERAL pgr_withPoints({_literal(EDGES_SQL)}, args.points, args.combinations, true, 'b', false) x), "
    f"{_cut_sql()}, "
    "w AS (SELECT 1 AS g, legs.k AS o, pc.path_seq, pc.cost, pc.metres, pc.road, pc.driven FROM legs JOIN pc "
    "ON pc.start_pid = legs.s AND pc.end_pid = legs.t), "
    "ends AS (SELECT 1 AS g, i AS o, p, mx, my, off_m FROM v), "
    f"{_DRAWN}, "
    # a via point's leg off the road is walked to it and back
    "total AS (SELECT coalesce((SELECT seconds FROM driven), 0) + (SELECT sum(CASE WHEN i IN (0, :last) THEN 1 "
    "ELSE 2 END * leg_s) FROM v) AS seconds, coalesce((SELECT metres FROM driven), 0) + (SELECT sum(CASE WHEN "
    "i IN (0, :last) THEN 1 ELSE 2 END * off_m) FROM v) AS metres) "
    "SELECT (SELECT bool_and(edge_id IS NULL) FROM v) AS empty, "
    "(SELECT i FROM v WHERE NOT near ORDER BY i LIMIT 1) AS far, "
    "(SELECT off_m FROM v WHERE NOT near ORDER BY i LIMIT 1) AS far_m, "
    "(SELECT min(k) FROM legs WHERE NOT same AND NOT EXISTS (SELECT 1 FROM r WHERE r.start_pid = legs.s "
    "AND r.end_pid = legs.t)) AS unreached, total.seconds, "
    f"'{{\"type\": \"Feature\", \"geometry\": ' || coalesce((SELECT geometry FROM drawn), {_NO_LINES}) || "
    "', \"properties\": ' || json_build_object('reachable', true, 'length_m', round(total.metres::numeric, 1), "
    "'time_s', round(total.seconds::numeric, 1), 'minutes', round((total.seconds / 60)::numeric, 1), "
    "'steps', coalesce((SELECT steps FROM steps), '[]'), 'off_road', (SELECT json_agg(json_build_object("
    "'point', (CAST(:names AS text[]))[i + 1], 'road', road, 'length_m', round(off_m::numeric, 1), "
    "'time_s', round(leg_s::numeric, 1)) ORDER BY i) FROM v), 'off_road_kmh', CAST(:kmh AS float8))::text || '}' "
    "AS body FROM total")


def route(conn: Connection, catalog: Catalog, start: tuple[float, float], end: tuple[float, float],
          via: list[tuple[float, float]] | None = None, depart_at: datetime | None = None) -> dict[str, Any]:
    """The fastest way by road from ``start`` to ``end`` (through ``via`` in order): a GeoJSON Feature.

    Its properties: ``reachable``, ``length_m`` and ``time_s`` (on the road and off it), ``eta`` when
    ``depart_at`` is given, ``steps`` by road, and the legs ``off_road`` (from each point to the road, at the
    off-road speed). When no road leads there, ``reachable`` is false and ``reason`` says why.
    """
    return dict(json.loads(route_json(conn, catalog, start, end, via, depart_at)))


@dataclass(frozen=True)
class OneRow:
    """A prepared statement whose first row makes the answer (``finish``: its JSON text, or an error raised).

    ``run`` runs it on a connection (``db.rows``); the web layer may run it on the event loop instead
    (``db_loop.LoopLane``), with the same statement and the same ``finish``.
    """

    sql: str
    params: dict[str, Any]
    finish: Callable[[Any], str]

    def run(self, conn: Connection) -> str:
        """The answer, from the statement run on ``conn``."""
        return self.finish(db.rows(conn, self.sql, self.params, first=True, prepare=True)[0])


def route_statement(catalog: Catalog, start: tuple[float, float], end: tuple[float, float],
                    via: list[tuple[float, float]] | None = None, depart_at: datetime | None = None) -> OneRow:
    """``route``'s Feature as one statement (``_ROUTE``) that writes its JSON text, and what checks its row."""
    via = via or []
    if len(via) > MAX_VIA:
        raise InvalidInput(f"via: at most {MAX_VIA} points ({len(via)} given)", param="via")
    places = [analysis.check_point(*start), *(analysis.check_point(*v) for v in via), analysis.check_point(*end)]
    net = settings_of(sources(catalog))
    names = ["from", *(["via"] * len(via)), "to"]

    def finish(found: Any) -> str:
        if found.empty:
            raise _network_empty()
        if found.far is not None:
            raise _too_far(places[found.far], found.far_m, net, names[found.far])
        if found.unreached is not None:
            i = found.unreached
            return json.dumps({"type": "Feature", "geometry": None, "properties": {
                "reachable": False, "reason": f"no road leads from {names[i]} {places[i][0]:.5f},"
                f"{places[i][1]:.5f} to {names[i + 1]} {places[i + 1][0]:.5f},{places[i + 1][1]:.5f} (they lie "
                "on parts of the network that do not meet, or one-way roads lead only the other way; gis-ioc "
                "network check lists the parts)"}})
        body: str = found.body
        if depart_at is not None:  # the feature's JSON ends with its properties' "}" and its own
            eta = depart_at + timedelta(seconds=found.seconds)
            times = f'"depart_at": {json.dumps(depart_at.isoformat())}, "eta": {json.dumps(eta.isoformat())}'
            body = f"{body[:-2]}, {times}}}}}"
        return body

    return OneRow(_ROUTE, {"xs": [p[0] for p in places], "ys": [p[1] for p in places], "names": names,
                           "last": len(places) - 1, "kmh": net.off_road_kmh, **_on_network(net)}, finish)


def route_json(conn: Connection, catalog: Catalog, start: tuple[float, float], end: tuple[float, float],
               via: list[tuple[float, float]] | None = None, depart_at: datetime | None = None) -> str:
    """``route``'s Feature as JSON text, written by the database in one statement (``_ROUTE``)."""
    return route_statement(catalog, start, end, via, depart_at).run(conn)


# -- the nearest facilities by travel time -----------------------------------------------------------


def _candidates_sql(conn: Connection | None, catalog: Catalog, layer_id: str, filter_text: str | None,
                    ) -> tuple[Layer, str, dict[str, Any]]:
    """The facilities to compare as SQL: ``i`` (from 1), ``id``, ``name`` and ``p``, a point on the feature."""
    layer = analysis_common.layer_named(catalog, conn, layer_id)
    where, params = analysis_common.filter_sql(layer, filter_text)
    geom, key = quote_ident(layer.geometry.column), quote_ident(layer.id_column)
    name = "t.name::text" if "name" in layer.properties else "NULL::text"
    return layer, (
        f"SELECT row_number() OVER () AS i, t.{key} AS id, {name} AS name, ST_PointOnSurface(t.{geom}) AS p "
        f"FROM {quote_table(layer.table)} t WHERE {where} AND {layer.events_only()} LIMIT {MAX_CANDIDATES + 1}"), params


def _at_most(layer: Layer, found: int) -> None:
    if found > MAX_CANDIDATES:
        raise InvalidInput(f"filter: more than {MAX_CANDIDATES} features of {layer.id} to compare by travel time: "
                           "narrow the filter (kind = 'fire_station')", param="filter")


def candidates_on_roads(conn: Connection, catalog: Catalog, layer_id: str, filter_text: str | None,
                         net: Network) -> tuple[Layer, list[dict[str, Any]], list[OnRoad | None]]:
    """The facilities to compare, each joined to the network (None: too far from every road); one statement.

    The facilities: the layer's features (filtered), each at a point on its surface.
    """
    layer, sql, params = _candidates_sql(conn, catalog, layer_id, filter_text)
    rows = _on_roads(conn, f"SELECT i, id, name, p FROM ({sql}) c", params)
    _at_most(layer, len(rows))
    return layer, [{"id": r.id, "name": r.name, "lon": float(r.lon), "lat": float(r.lat)} for r in rows], [
        _on_road(r, net) for r in rows]


@functools.lru_cache(maxsize=64)  # one text per filter: the same object each call (hashed once, prepared once)
def _nearest_sql(origin: str, candidates: str) -> str:
    """nearest_json's statement: the place (``origin``: one point ``p``, or none) is ``i`` 0, the candidates 1….

    From each candidate near a road, pgRouting's ways to the place (one-way roads count); the ``:k`` soonest,
    their legs off the road counted (ties: the first found), each answered as a Feature with its route.
    """
    return (
        "WITH " + _joined_sql(f"SELECT 0::bigint AS i, NULL AS id, NULL::text AS name, p FROM ({origin}) o "
                              f"UNION ALL SELECT i, id, name, p FROM ({candidates}) c") + ", "
        "place AS (SELECT * FROM v WHERE i = 0), f AS (SELECT * FROM v WHERE i > 0), "
        f"args AS (SELECT * FROM (SELECT {_POINTS_TEXT} AS points, array_agg(DISTINCT vid) FILTER (WHERE i > 0 "
        "AND near AND vid <> (SELECT vid FROM place)) AS starts, (SELECT vid FROM place) AS goal, "
        f"count(*) FILTER (WHERE i > 0) <= {MAX_CANDIDATES} AS few FROM v) a "
        "WHERE few AND cardinality(starts) > 0 AND (SELECT near FROM place)), "
        "r AS (SELECT x.start_pid, x.path_seq, x.node, x.edge, x.cost, x.agg_cost, lead(x.node) OVER (PARTITION BY "
        "x.start_pid ORDER BY x.path_seq) AS next_node FROM args, "
        f"LATERAL pgr_withPoints({_literal(EDGES_SQL)}, args.points, args.starts, args.goal, true, 'b', false) x), "
        # the time from each candidate near a road (NULL: no road leads there), its legs off the road counted
        "t AS (SELECT start_pid AS vid, max(agg_cost) AS cost FROM r GROUP BY start_pid UNION ALL "
        "SELECT vid, 0 FROM place WHERE near), "
        "ft AS (SELECT f.*, t.cost + f.leg_s + (SELECT leg_s FROM place) AS total, ST_Distance(f.p::geography, "
        "(SELECT p FROM place)::geography) AS crow FROM f LEFT JOIN t ON t.vid = f.vid), "
        "top AS (SELECT ft.* FROM ft WHERE near AND total IS NOT NULL ORDER BY total, i LIMIT :k), "
        f"{_cut_sql('JOIN (SELECT DISTINCT vid FROM top) b ON b.vid = r.start_pid')}, "
        "w AS (SELECT top.i AS g, 0 AS o, pc.path_seq, pc.cost, pc.metres, pc.road, pc.driven FROM top "
        "JOIN pc ON pc.start_pid = top.vid), "
        "ends AS (SELECT top.i AS g, 0 AS o, top.p, top.mx, top.my, top.off_m FROM top UNION ALL "
        "SELECT top.i, 1, place.p, place.mx, place.my, place.off_m FROM top, place), "
        f"{_DRAWN}, "
        "feature AS (SELECT top.i, top.total, top.id, json_build_object('type', 'Feature', 'id', top.id, "
        f"'geometry', coalesce(drawn.geometry, {_NO_LINES})::json, 'properties', json_build_object('id', top.id, "
        "'name', top.name, 'time_s', round(sec::numeric, 1), 'minutes', round((sec / 60)::numeric, 1), "
        "'road_m', round(m::numeric, 1), 'straight_m', round(top.crow::numeric, 1), "
        "'steps', coalesce(steps.steps, '[]'), 'off_road', json_build_array("
        "json_build_object('point', 'from', 'road', top.road, 'length_m', round(top.off_m::numeric, 1), "
        "'time_s', round(top.leg_s::numeric, 1)), json_build_object('point', 'to', 'road', place.road, "
        "'length_m', round(place.off_m::numeric, 1), 'time_s', round(place.leg_s::numeric, 1))))) AS feature "
        "FROM top CROSS JOIN place LEFT JOIN driven ON driven.g = top.i LEFT JOIN steps ON steps.g = top.i "
        "LEFT JOIN drawn ON drawn.g = top.i, LATERAL (SELECT coalesce(driven.seconds, 0) + top.leg_s + place.leg_s "
        "AS sec, coalesce(driven.metres, 0) + top.off_m + place.off_m AS m) x), "
        "nearest AS (SELECT id, name, crow FROM ft ORDER BY crow, i LIMIT 1) "
        "SELECT (SELECT bool_and(edge_id IS NULL) FROM v) AS empty, (SELECT count(*) FROM place) AS origin, "
        "(SELECT count(*) FROM f) AS found, place.lon, place.lat, place.near, place.off_m, "
        "json_build_object('type', 'FeatureCollection', 'layer', CAST(:layer AS text), 'from', "
        "json_build_array(place.lon, place.lat), 'incident', CAST(:incident AS bigint), 'features', "
        "coalesce((SELECT json_agg(feature ORDER BY total, i) FROM feature), '[]'), 'nearest_by_distance', "
        "(SELECT json_build_object('id', id, 'name', name, 'straight_m', round(crow::numeric, 1), 'also_soonest', "
        "id IS NOT DISTINCT FROM (SELECT id FROM feature ORDER BY total, i LIMIT 1)) FROM nearest), "
        "'unreachable', coalesce((SELECT json_agg(id ORDER BY i) FROM (SELECT id, i FROM ft WHERE near AND total IS "
        "NULL ORDER BY i LIMIT 50) u), '[]'), 'far_from_roads', coalesce((SELECT json_object_agg(id, "
        "CAST(:far_words AS text) ORDER BY i) FROM f WHERE NOT near), '{}'))::text AS body "
        "FROM (SELECT 1) one LEFT JOIN place ON true")


def nearest_by_time(conn: Connection, catalog: Catalog, layer_id: str, *, filter_text: str | None = None,
                    lon: float | None = None, lat: float | None = None, incident: int | None = None,
                    k: int = 3) -> dict[str, Any]:
    """The ``k`` features of a layer (``filter``: fire stations…) that reach a point or an incident soonest by road.

    Each with its travel time, its distance by road and as the crow flies, and its route (to the place: one-way
    roads count). ``nearest_by_distance`` names the feature nearest in a straight line, and says whether it is
    also the soonest there; ``unreachable``: those no road leads from; ``far_from_roads``: those too far from
    every road.
    """
    return dict(json.loads(nearest_json(conn, catalog, layer_id, filter_text=filter_text, lon=lon, lat=lat,
                                        incident=incident, k=k)))


def nearest_statement(conn: Connection | None, catalog: Catalog, layer_id: str, *, filter_text: str | None = None,
                      lon: float | None = None, lat: float | None = None, incident: int | None = None,
                      k: int = 3) -> OneRow:
    """``nearest_by_time``'s FeatureCollection as one statement that writes its JSON text, and what checks its row.

    ``conn`` looks up an imported layer (None: built-in layers only).
    """
    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"k: {k} is not between 1 and {MAX_K}", param="k")
    net = settings_of(sources(catalog))
    if incident is not None:
        origin = "SELECT ST_PointOnSurface(geom) AS p FROM incidents WHERE id = :origin_id"
        bind: dict[str, Any] = {"origin_id": incident}
    else:
        if lon is None or lat is None:
            raise InvalidInput("lon, lat: give a point (lon and lat) or an incident id", param="lon")
        lon, lat = analysis.check_point(lon, lat)
        origin = "SELECT ST_SetSRID(ST_MakePoint(:origin_x, :origin_y), 4326) AS p"
        bind = {"origin_x": lon, "origin_y": lat}
    layer, candidates, params = _candidates_sql(conn, catalog, layer_id, filter_text)

    def finish(found: Any) -> str:
        if found.empty:
            raise _network_empty()
        _at_most(layer, found.found)
        if not found.origin:
            raise InvalidInput(f"incident: no incident {incident}", param="incident")
        if not found.found:
            return json.dumps({"type": "FeatureCollection", "layer": layer.id, "from": [found.lon, found.lat],
                               "incident": incident, "features": [], "nearest_by_distance": None})
        if not found.near:
            raise _too_far((found.lon, found.lat), found.off_m, net, "incident" if incident is not None else "lon")
        return str(found.body)

    return OneRow(_nearest_sql(origin, candidates), {
        **params, **bind, **_on_network(net), "k": k, "layer": layer.id, "incident": incident,
        "far_words": f"more than {net.max_off_road_m:,.0f} m from every road"}, finish)


def nearest_json(conn: Connection, catalog: Catalog, layer_id: str, *, filter_text: str | None = None,
                 lon: float | None = None, lat: float | None = None, incident: int | None = None,
                 k: int = 3) -> str:
    """``nearest_by_time``'s FeatureCollection as JSON text, written by the database in one statement."""
    return nearest_statement(conn, catalog, layer_id, filter_text=filter_text, lon=lon, lat=lat, incident=incident,
                             k=k).run(conn)


# -- travel matrix -----------------------------------------------------------------------------------


def travel_matrix(conn: Connection, catalog: Catalog, origins: list[tuple[float, float]],
                  destinations: list[tuple[float, float]]) -> dict[str, Any]:
    """Seconds by road from each origin to each destination (None: no road leads there), legs off the road in."""
    if not origins or not destinations:
        raise InvalidInput("origins, destinations: give at least one of each", param="origins")
    if len(origins) * len(destinations) > MAX_MATRIX:
        raise InvalidInput(f"origins × destinations: {len(origins)} × {len(destinations)} is more than "
                           f"{MAX_MATRIX} pairs", param="destinations")
    net = settings_of(sources(catalog, conn))
    a = join(conn, [analysis.check_point(*p) for p in origins], net, param="origins")
    b = join(conn, [analysis.check_point(*p) for p in destinations], net, param="destinations")
    return {"origins": [[p.lon, p.lat] for p in a], "destinations": [[q.lon, q.lat] for q in b],
            "seconds": matrix_joined(conn, a, b, net), "off_road_kmh": net.off_road_kmh}


def matrix_joined(conn: Connection, a: list[OnRoad], b: list[OnRoad], net: Network) -> list[list[float | None]]:
    """``travel_matrix``'s seconds between points already joined to the network (no bound on their number)."""
    points = [*a, *b]
    starts = ", ".join(str(p.vid(i + 1)) for i, p in enumerate(a))
    ends = ", ".join(str(q.vid(len(a) + j + 1)) for j, q in enumerate(b))
    costs = {(int(r.start_pid), int(r.end_pid)): float(r.agg_cost) for r in db.rows(conn,
        f"SELECT start_pid, end_pid, agg_cost FROM pgr_withPointsCost({_literal(EDGES_SQL)}, "
        f"{_literal(_points_sql(points))}, ARRAY[{starts}]::bigint[], ARRAY[{ends}]::bigint[], true, 'b')")}
    seconds = []
    for i, p in enumerate(a):
        row = []
        for j, q in enumerate(b):
            start, end = p.vid(i + 1), q.vid(len(a) + j + 1)
            on_road = 0.0 if start == end else costs.get((start, end))
            row.append(None if on_road is None else round(on_road + p.leg_s(net) + q.leg_s(net), 1))
        seconds.append(row)
    return seconds


def parse_points(text: str, param: str, at_most: int) -> list[tuple[float, float]]:
    """``lon,lat`` pairs separated by ``;`` (CRS84), or a 400 naming the parameter."""
    pairs = [p for p in text.split(";") if p.strip()]
    if not pairs:
        raise InvalidInput(f"{param}: give lon,lat (pairs separated by ;)", param=param)
    if len(pairs) > at_most:
        raise InvalidInput(f"{param}: at most {at_most} points ({len(pairs)} given)", param=param)
    points = []
    for pair in pairs:
        try:
            lon, lat = (float(v) for v in pair.split(","))
        except ValueError:
            raise InvalidInput(f"{param}: {pair.strip()[:40]!r} is not lon,lat", param=param) from None
        try:
            points.append(analysis.check_point(lon, lat))
        except InvalidInput as err:
            raise InvalidInput(f"{param}: {err.message}", param=param) from None
    return points
