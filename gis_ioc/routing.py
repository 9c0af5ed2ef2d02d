"""Response by road: routes, the nearest facilities by travel time, reach (service areas), travel matrices.

On the network ``gis_ioc.road_network`` makes from the road layers (its ``build``, ``ensure``, ``check``,
``sources`` are offered here too). Points join the network where it is nearest to them (a point on an edge:
pgRouting's ``withPoints`` functions; on a vertex, the vertex), the leg to it at the source's off-road speed, said
in every answer. Times are in seconds, distances in metres.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gis_ioc import analysis, analysis_common, db
from gis_ioc.catalog import Catalog, Layer, Network, quote_ident, quote_table
from gis_ioc.errors import InvalidInput
from gis_ioc.road_network import EDGES_SQL, _literal, build, check, ensure, settings_of, sources, stale

__all__ = ["build", "check", "ensure", "join", "nearest_by_time", "reach", "route", "settings_of", "sources", "stale",
           "travel_matrix"]

MAX_VIA = 8
MAX_K = 10
MAX_CANDIDATES = 2000  # facilities compared by travel time in one call
MAX_MINUTES = 180
MAX_THRESHOLDS = 5
MAX_MATRIX = 2500  # origins × destinations
REACH_WALK_S = 180  # the area reached: within a 3-minute walk (at the off-road speed) of a road reached in time


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
    meets: tuple[float, float] | None = None  # where the leg off the road meets it

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
        raise InvalidInput("network: the road network is empty (no roads in its source layers)", param="network")
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
                  float(row.fraction), float(row.off_m), row.road, vertex, (float(row.mx), float(row.my)))


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
    joined = join_some(conn, points, net)
    for i, (found, point) in enumerate(zip(joined, points, strict=True)):
        if found is None:
            _too_far(conn, point, net, param[i] if isinstance(param, list) else param)
    return [p for p in joined if p is not None]


def _too_far(conn: Connection, point: tuple[float, float], net: Network, name: str) -> NoReturn:
    """The 400 for a point farther than ``max_off_road_m`` from every road."""
    off = _nearest_roads(conn, [point])[0].off_m
    raise InvalidInput(f"{name}: the point {point[0]:.5f},{point[1]:.5f} is {off:,.0f} m from the nearest road "
                       f"(at most {net.max_off_road_m:,.0f} m)", param=name)


def _fraction(p: OnRoad) -> float:
    # pgr_withPoints finds no path from a point at fraction 0 or 1 (on a vertex): a hair inside the edge
    return min(max(p.fraction, 1e-6), 1 - 1e-6)


def _points_sql(points: list[OnRoad]) -> str:
    """The points as pgRouting takes them: pid 1, 2… in the order given."""
    values = ", ".join(f"({i + 1}, {p.edge}, {_fraction(p)!r}::float, 'b'::char)" for i, p in enumerate(points))
    return f"SELECT * FROM (VALUES {values}) AS t(pid, edge_id, fraction, side)"


# -- route -----------------------------------------------------------------------------------------

Pieces = list[dict[str, Any]]


def _cut_sql(pts: str, only: str = "") -> str:
    """The common table expressions ``d`` and ``pc``: the ways of ``r`` cut into the pieces driven, by PostGIS.

    ``r``: pgr_withPoints' rows (start_pid, end_pid, path_seq, node, edge, cost) with ``next_node``; ``pts``:
    the points (pid, fraction); ``only``: a join that keeps some of the ways. A piece of ``pc``: its edge, cost,
    ``road``, ``metres`` and the part of the edge ``driven`` (in the direction driven).
    """
    return (
        "d AS (SELECT r.*, e.length_m, coalesce(e.name, e.road_class) AS road, e.geom, "
        "CASE WHEN r.node < 0 THEN p0.fraction WHEN r.node = e.source THEN 0.0 ELSE 1.0 END AS f0, "
        "CASE WHEN r.next_node < 0 THEN p1.fraction WHEN r.next_node = e.source THEN 0.0 ELSE 1.0 END AS f1 "
        f"FROM r {only} JOIN network_edges e ON e.id = r.edge LEFT JOIN {pts} p0 ON p0.pid = -r.node "
        f"LEFT JOIN {pts} p1 ON p1.pid = -r.next_node WHERE r.edge > 0), "
        "pc AS (SELECT d.*, CASE WHEN whole THEN length_m ELSE ST_Length(part::geography) END AS metres, "
        "CASE WHEN f0 > f1 THEN ST_Reverse(part) ELSE part END AS driven FROM (SELECT d.*, CASE WHEN whole THEN "
        "geom ELSE ST_LineSubstring(geom, least(f0, f1), greatest(f0, f1)) END AS part FROM (SELECT d.*, "
        "least(f0, f1) <= 1e-6 AND greatest(f0, f1) >= 1 - 1e-6 AS whole FROM d) d) d)")


def _pieces_sql(points: list[OnRoad], ways: str, also: str = "", only: str = "", columns: str = "") -> str:
    """The pieces of ``ways`` as ``_piece`` reads them (``_cut_sql``).

    ``ways``: a query on pgr_withPoints (start_pid, end_pid, path_seq, node, edge, cost, next_node); ``also``:
    more common table expressions; ``only``: a join that keeps some of the ways; ``columns``: more columns.
    """
    return (f"WITH pts AS ({_points_sql(points)}), r AS ({ways}){also}, {_cut_sql('pts', only)} "
            f"SELECT start_pid, end_pid, path_seq, edge, cost, metres, road, ST_AsBinary(driven) AS wkb{columns} "
            "FROM pc")


def _ways_sql(points: list[OnRoad], target: str, end: str = "r.end_pid") -> str:
    """pgr_withPoints to ``target`` (its arguments after the points: combinations or start and end vertices)."""
    return (f"SELECT r.start_pid, {end} AS end_pid, r.path_seq, r.node, r.edge, r.cost, r.agg_cost, "
            "lead(r.node) OVER (PARTITION BY r.start_pid, " + end + " ORDER BY r.path_seq) AS next_node "
            f"FROM pgr_withPoints({_literal(EDGES_SQL)}, {_literal(_points_sql(points))}, {target}, true, 'b', "
            "false) r")


def _piece(row: Any) -> dict[str, Any]:
    return {"edge": int(row.edge), "seconds": float(row.cost), "metres": float(row.metres), "road": row.road,
            "wkb": bytes(row.wkb)}


def _legs(conn: Connection, points: list[OnRoad], pairs: list[tuple[int, int]]) -> dict[tuple[int, int], Pieces | None]:
    """The fastest way on the network for each pair of ``points`` (indexes), all in one statement.

    Each way is its pieces in the order driven: edge, seconds, metres, road and the part of the edge driven
    (WKB); None: no way.
    """
    vids = [p.vid(i + 1) for i, p in enumerate(points)]
    asked = {(vids[a], vids[b]) for a, b in pairs if vids[a] != vids[b]}
    found: dict[tuple[int, int], Pieces] = {}
    if asked:
        combinations = "SELECT * FROM (VALUES " + ", ".join(f"({a}::bigint, {b}::bigint)" for a, b in sorted(
            asked)) + ") AS c(source, target)"
        sql = _pieces_sql(points, _ways_sql(points, _literal(combinations))) + " ORDER BY start_pid, end_pid, path_seq"
        for row in db.rows(conn, sql):
            found.setdefault((int(row.start_pid), int(row.end_pid)), []).append(_piece(row))
    ways: dict[tuple[int, int], Pieces | None] = {}
    for a, b in pairs:
        same = vids[a] == vids[b] or (points[a].edge == points[b].edge and points[a].fraction == points[b].fraction)
        ways[(a, b)] = found.get((vids[a], vids[b]), []) if same else found.get((vids[a], vids[b]))
    return ways


def _geometry(pieces: Pieces, points: list[OnRoad]) -> dict[str, Any]:
    """The route as a MultiLineString: each piece of road in the direction driven, and the legs off the road."""
    import shapely

    lines: list[Any] = []
    if pieces:
        xy, index = shapely.get_coordinates(shapely.from_wkb([p["wkb"] for p in pieces]), return_index=True)
        coords = xy.round(7).tolist()  # one list, cut where a piece ends (np.split made an array a piece)
        cuts = [0, *(np.flatnonzero(np.diff(index)) + 1).tolist(), len(coords)]
        lines += [coords[a:b] for a, b in itertools.pairwise(cuts) if b - a >= 2]
    for p in points:  # the legs off the road, straight: one for each point (a via point's once, not per leg)
        if p.off_m > 0.5 and p.meets is not None:
            lines.append([[round(p.lon, 7), round(p.lat, 7)], [round(p.meets[0], 7), round(p.meets[1], 7)]])
    return {"type": "MultiLineString", "coordinates": lines}


def _steps(pieces: Pieces) -> list[dict[str, Any]]:
    """Consecutive pieces of one road as one step."""
    steps: list[dict[str, Any]] = []
    for piece in pieces:
        if steps and steps[-1]["road"] == piece["road"]:
            steps[-1]["length_m"] += piece["metres"]
            steps[-1]["time_s"] += piece["seconds"]
        else:
            steps.append({"road": piece["road"], "length_m": piece["metres"], "time_s": piece["seconds"]})
    return [{**s, "length_m": round(s["length_m"], 1), "time_s": round(s["time_s"], 1)} for s in steps
            if s["length_m"] >= 0.5]


def route(conn: Connection, catalog: Catalog, start: tuple[float, float], end: tuple[float, float],
          via: list[tuple[float, float]] | None = None, depart_at: datetime | None = None) -> dict[str, Any]:
    """The fastest way by road from ``start`` to ``end`` (through ``via`` in order): a GeoJSON Feature.

    Its properties: ``reachable``, ``length_m`` and ``time_s`` (on the road and off it), ``eta`` when
    ``depart_at`` is given, ``steps`` by road, and the legs ``off_road`` (from each point to the road, at the
    off-road speed). When no road leads there, ``reachable`` is false and ``reason`` says why.
    """
    return dict(json.loads(route_json(conn, catalog, start, end, via, depart_at)))


def route_json(conn: Connection, catalog: Catalog, start: tuple[float, float], end: tuple[float, float],
               via: list[tuple[float, float]] | None = None, depart_at: datetime | None = None) -> str:
    """``route``'s Feature as JSON text, written by the database.

    One statement (``_ROUTE``) joins the points to the network, routes each leg and writes the answer: only the
    text passes through Python (building it from the pieces' rows here took 0.8 ms of a 6 ms route).
    """
    via = via or []
    if len(via) > MAX_VIA:
        raise InvalidInput(f"via: at most {MAX_VIA} points ({len(via)} given)", param="via")
    places = [analysis.check_point(*start), *(analysis.check_point(*v) for v in via), analysis.check_point(*end)]
    net = settings_of(sources(catalog, conn))
    names = ["from", *(["via"] * len(via)), "to"]
    found = db.rows(conn, _ROUTE, {"xs": [p[0] for p in places], "ys": [p[1] for p in places], "names": names,
                                   "n": len(places), "max_off": net.max_off_road_m,
                                   "speed": net.off_road_kmh / 3.6, "kmh": net.off_road_kmh}, first=True)[0]
    if found.empty:
        raise InvalidInput("network: the road network is empty (no roads in its source layers)", param="network")
    if found.far is not None:
        point = places[found.far - 1]
        name = names[found.far - 1]
        raise InvalidInput(f"{name}: the point {point[0]:.5f},{point[1]:.5f} is {found.far_m:,.0f} m from the "
                           f"nearest road (at most {net.max_off_road_m:,.0f} m)", param=name)
    if found.unreached is not None:
        i = found.unreached - 1
        return json.dumps(_unreachable(names[i], places[i], names[i + 1], places[i + 1]))
    body: str = found.body
    if depart_at is not None:  # the feature's JSON ends with its properties' "}" and its own
        eta = depart_at + timedelta(seconds=found.seconds)
        times = f'"depart_at": {json.dumps(depart_at.isoformat())}, "eta": {json.dumps(eta.isoformat())}'
        body = f"{body[:-2]}, {times}}}}}"
    return body


def _unreachable(name_a: str, a: tuple[float, float], name_b: str, b: tuple[float, float]) -> dict[str, Any]:
    return {"type": "Feature", "geometry": None, "properties": {
        "reachable": False, "reason": f"no road leads from {name_a} {a[0]:.5f},{a[1]:.5f} to "
        f"{name_b} {b[0]:.5f},{b[1]:.5f} (they lie on parts of the network that do not meet, or "
        "one-way roads lead only the other way; gis-ioc network check lists the parts)"}}


_ROUTE = (  # route_json's one statement: points (:xs, :ys) joined, each leg routed, the Feature drawn
    "WITH q AS (SELECT u.i, ST_SetSRID(ST_MakePoint(u.x, u.y), 4326) AS p FROM unnest(CAST(:xs AS float8[]), "
    "CAST(:ys AS float8[])) WITH ORDINALITY AS u(x, y, i)), "
    f"j AS ({_ON_ROAD}), "
    # each point: its pgRouting id (the vertex it falls on, else -i), its leg off the road and how often it is
    # walked (a via point: to it and back)
    "v AS (SELECT j.*, CASE WHEN j.fraction <= 1e-9 THEN j.source WHEN j.fraction >= 1 - 1e-9 THEN j.target "
    "ELSE -j.i END AS vid, least(greatest(j.fraction, 1e-6), 1 - 1e-6) AS fr, j.off_m / :speed AS leg_s, "
    "CASE WHEN j.i IN (1, :n) THEN 1 ELSE 2 END AS times FROM j), "
    "pts AS (SELECT i AS pid, fr AS fraction FROM v), "
    "legs AS (SELECT a.i AS k, a.vid AS s, b.vid AS t, a.vid = b.vid OR (a.edge_id = b.edge_id "
    "AND a.fraction = b.fraction) AS same FROM v a JOIN v b ON b.i = a.i + 1), "
    # pgRouting's arguments, when every point is near a road and some leg has to be driven
    "args AS (SELECT * FROM (SELECT 'SELECT * FROM (VALUES ' || string_agg(format('(%s, %s, %s::float8, ''b''::char)', "
    "i, edge_id, fr), ', ' ORDER BY i) || ') AS t(pid, edge_id, fraction, side)' AS points, "
    "(SELECT 'SELECT * FROM (VALUES ' || string_agg(DISTINCT format('(%s::bigint, %s::bigint)', s, t), ', ') "
    "|| ') AS c(source, target)' FROM legs WHERE s <> t) AS combinations, "
    "bool_and(edge_id IS NOT NULL AND off_m <= :max_off) AS near FROM v) a WHERE near AND combinations IS NOT NULL), "
    "r AS (SELECT w.start_pid, w.end_pid, w.path_seq, w.node, w.edge, w.cost, lead(w.node) OVER (PARTITION BY "
    "w.start_pid, w.end_pid ORDER BY w.path_seq) AS next_node FROM args, "
    f"LATERAL pgr_withPoints({_literal(EDGES_SQL)}, args.points, args.combinations, true, 'b', false) w), "
    f"{_cut_sql('pts')}, "
    "w AS (SELECT legs.k, pc.path_seq, pc.cost, pc.metres, pc.road, pc.driven FROM legs JOIN pc "
    "ON pc.start_pid = legs.s AND pc.end_pid = legs.t), "
    # the steps: consecutive pieces of one road
    "s AS (SELECT w.*, sum(w.brk) OVER (ORDER BY w.k, w.path_seq) AS step FROM (SELECT w.*, CASE WHEN w.road IS NOT "
    "DISTINCT FROM lag(w.road) OVER (ORDER BY w.k, w.path_seq) THEN 0 ELSE 1 END AS brk FROM w) w), "
    "steps AS (SELECT coalesce(json_agg(json_build_object('road', road, 'length_m', round(m::numeric, 1), 'time_s', "
    "round(c::numeric, 1)) ORDER BY step) FILTER (WHERE m >= 0.5), '[]') AS steps FROM (SELECT step, min(road) AS "
    "road, sum(metres) AS m, sum(cost) AS c FROM s GROUP BY step) g), "
    # the lines: the pieces of road as driven, then each point's leg off the road
    "drawn AS (SELECT coalesce(ST_AsGeoJSON(ST_Collect(g ORDER BY o1, o2, o3), 7), "
    "'{\"type\":\"MultiLineString\",\"coordinates\":[]}') AS geometry FROM ("
    "SELECT 0 AS o1, k AS o2, path_seq AS o3, driven AS g FROM w WHERE GeometryType(driven) = 'LINESTRING' UNION ALL "
    "SELECT 1, i, 0, ST_MakeLine(p, ST_SetSRID(ST_MakePoint(mx, my), 4326)) FROM v WHERE off_m > 0.5) x), "
    "total AS (SELECT (SELECT coalesce(sum(cost), 0) FROM w) + (SELECT sum(times * leg_s) FROM v) AS seconds, "
    "(SELECT coalesce(sum(metres), 0) FROM w) + (SELECT sum(times * off_m) FROM v) AS metres) "
    "SELECT (SELECT bool_and(edge_id IS NULL) FROM v) AS empty, (SELECT min(i) FROM v WHERE off_m > :max_off) AS far, "
    "(SELECT off_m FROM v WHERE off_m > :max_off ORDER BY i LIMIT 1) AS far_m, "
    "(SELECT min(k) FROM legs WHERE NOT same AND NOT EXISTS (SELECT 1 FROM r WHERE r.start_pid = legs.s "
    "AND r.end_pid = legs.t)) AS unreached, total.seconds, "
    "'{\"type\": \"Feature\", \"geometry\": ' || drawn.geometry || ', \"properties\": ' || json_build_object("
    "'reachable', true, 'length_m', round(total.metres::numeric, 1), 'time_s', round(total.seconds::numeric, 1), "
    "'minutes', round((total.seconds / 60)::numeric, 1), 'steps', steps.steps, 'off_road', (SELECT json_agg("
    "json_build_object('point', (CAST(:names AS text[]))[i], 'road', road, 'length_m', round(off_m::numeric, 1), "
    "'time_s', round(leg_s::numeric, 1)) ORDER BY i) FROM v), 'off_road_kmh', CAST(:kmh AS float8))::text || '}' "
    "AS body FROM total, steps, drawn")


def _way(legs: dict[tuple[int, int], Pieces | None], joined: list[OnRoad], names: list[str], net: Network,
         depart_at: datetime | None = None) -> dict[str, Any]:
    """The route through ``joined`` in order from its legs (``_legs`` of each point to the next)."""
    pieces: Pieces = []
    for i, (a, b) in enumerate(zip(joined, joined[1:], strict=False)):
        found = legs[(i, i + 1)]
        if found is None:
            return _unreachable(names[i], (a.lon, a.lat), names[i + 1], (b.lon, b.lat))
        pieces += found
    off = [{"point": n, "road": p.road, "length_m": round(p.off_m, 1), "time_s": round(p.leg_s(net), 1)}
           for n, p in zip(names, joined, strict=True)]
    seconds = sum(p["seconds"] for p in pieces) + sum(p.leg_s(net) for p in (joined[0], joined[-1])) + \
        sum(2 * p.leg_s(net) for p in joined[1:-1])  # a via point: to it and back to the road
    metres = sum(p["metres"] for p in pieces) + joined[0].off_m + joined[-1].off_m + \
        sum(2 * p.off_m for p in joined[1:-1])
    props: dict[str, Any] = {"reachable": True, "length_m": round(metres, 1), "time_s": round(seconds, 1),
                             "minutes": round(seconds / 60, 1), "steps": _steps(pieces), "off_road": off,
                             "off_road_kmh": net.off_road_kmh}
    if depart_at is not None:
        props["depart_at"] = depart_at.isoformat()
        props["eta"] = (depart_at + timedelta(seconds=seconds)).isoformat()
    return {"type": "Feature", "geometry": _geometry(pieces, joined),
            "properties": props}


# -- the nearest facilities by travel time -----------------------------------------------------------


def _candidates_sql(conn: Connection, catalog: Catalog, layer_id: str, filter_text: str | None,
                    ) -> tuple[Layer, str, dict[str, Any]]:
    """The facilities to compare as SQL: ``i`` (from 1), ``id``, ``name`` and ``p``, a point on the feature."""
    layer = analysis_common.layer_named(catalog, conn, layer_id)
    where, params = analysis_common.filter_sql(layer, filter_text)
    geom, key = quote_ident(layer.geometry.column), quote_ident(layer.id_column)
    name = "t.name::text" if "name" in layer.properties else "NULL::text"
    return layer, (
        f"SELECT row_number() OVER () AS i, t.{key} AS id, {name} AS name, ST_PointOnSurface(t.{geom}) AS p "
        f"FROM {quote_table(layer.table)} t WHERE {where} AND {layer.events_only()} LIMIT {MAX_CANDIDATES + 1}"), params


def _at_most(layer: Layer, found: Sequence[Any]) -> None:
    if len(found) > MAX_CANDIDATES:
        raise InvalidInput(f"filter: more than {MAX_CANDIDATES} features of {layer.id} to compare by travel time: "
                           "narrow the filter (kind = 'fire_station')", param="filter")


def _candidates_on_roads(conn: Connection, catalog: Catalog, layer_id: str, filter_text: str | None,
                         net: Network, origin: str = "", origin_params: dict[str, Any] | None = None,
                         ) -> tuple[Layer, Any, list[dict[str, Any]], list[OnRoad | None]]:
    """The facilities to compare, each joined to the network, and ``origin`` (SQL of one point ``p``) too.

    The facilities: the layer's features (filtered), each at a point on its surface; all in one statement.

    Returns the layer, the origin's row (None: no origin asked, or the origin's query found nothing), the
    candidates and where each joins the network (None: too far from every road).
    """
    layer, sql, params = _candidates_sql(conn, catalog, layer_id, filter_text)
    points = f"SELECT i, id, name, p FROM ({sql}) c"
    if origin:
        points = f"SELECT 0::bigint AS i, NULL AS id, NULL::text AS name, p FROM ({origin}) o UNION ALL {points}"
    rows = _on_roads(conn, points, {**params, **(origin_params or {})})
    start = rows[0] if origin and rows and rows[0].i == 0 else None
    found = rows[1:] if start is not None else rows
    _at_most(layer, found)
    return layer, start, [{"id": r.id, "name": r.name, "lon": float(r.lon), "lat": float(r.lat)} for r in found], [
        _on_road(r, net) for r in found]


def _soonest(conn: Connection, points: list[OnRoad], net: Network, k: int,
             ) -> tuple[dict[int, float], dict[int, Pieces]]:
    """From each of ``points[1:]`` to ``points[0]`` by road: the seconds, and the ways of the ``k`` soonest.

    Both by pgRouting id, in one statement (one graph for both); the soonest count their legs off the road.
    """
    place = points[0]
    costs: dict[int, float] = {place.vid(1): 0.0}  # a facility on the very vertex of the place
    ways: dict[int, Pieces] = {place.vid(1): []}
    starts = sorted({p.vid(i + 1) for i, p in enumerate(points) if i > 0} - {place.vid(1)})
    if not starts:
        return costs, ways
    legs = ", ".join(f"({i}, {p.vid(i + 1)}::bigint, {p.leg_s(net)!r}::float)" for i, p in enumerate(points) if i)
    also = (", t AS (SELECT start_pid, max(agg_cost) AS total FROM r GROUP BY start_pid), "
            f"c(i, vid, leg) AS (VALUES {legs}), "
            f"b AS (SELECT DISTINCT vid FROM (SELECT c.vid FROM c JOIN t ON t.start_pid = c.vid "
            f"ORDER BY t.total + c.leg, c.i LIMIT {int(k)}) s)")
    ways_sql = _ways_sql(points, f"ARRAY[{', '.join(map(str, starts))}]::bigint[], {place.vid(1)}",
                         end=f"{place.vid(1)}::bigint")
    sql = (_pieces_sql(points, ways_sql, also, only="JOIN b ON b.vid = r.start_pid", columns=", NULL::float AS total")
           + " UNION ALL SELECT start_pid, NULL, NULL, NULL, NULL, NULL, NULL, NULL, total FROM t "
           "ORDER BY 1, 3")
    for row in db.rows(conn, sql):
        if row.total is not None:
            costs[int(row.start_pid)] = float(row.total)
        else:
            ways.setdefault(int(row.start_pid), []).append(_piece(row))
    return costs, ways


def nearest_by_time(conn: Connection, catalog: Catalog, layer_id: str, *, filter_text: str | None = None,
                    lon: float | None = None, lat: float | None = None, incident: int | None = None,
                    k: int = 3) -> dict[str, Any]:
    """The ``k`` features of a layer (``filter``: fire stations…) that reach a point or an incident soonest by road.

    Each with its travel time, its distance by road and as the crow flies, and its route (to the place: one-way
    roads count). ``nearest_by_distance`` names the feature nearest in a straight line, and says whether it is
    also the soonest there.
    """
    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"k: {k} is not between 1 and {MAX_K}", param="k")
    net = settings_of(sources(catalog, conn))
    if incident is not None:  # the place, the candidates and where each meets the road: one statement
        origin = "SELECT ST_PointOnSurface(geom) AS p FROM incidents WHERE id = :origin_id"
        bind: dict[str, Any] = {"origin_id": incident}
    else:
        if lon is None or lat is None:
            raise InvalidInput("lon, lat: give a point (lon and lat) or an incident id", param="lon")
        lon, lat = analysis.check_point(lon, lat)
        origin = "SELECT ST_SetSRID(ST_MakePoint(:origin_x, :origin_y), 4326) AS p"
        bind = {"origin_x": lon, "origin_y": lat}
    layer, start, found, around = _candidates_on_roads(conn, catalog, layer_id, filter_text, net, origin, bind)
    if start is None:
        raise InvalidInput(f"incident: no incident {incident}", param="incident")
    x, y, incident_id = float(start.lon), float(start.lat), incident
    result: dict[str, Any] = {"type": "FeatureCollection", "layer": layer.id, "from": [x, y],
                              "incident": incident_id, "features": []}
    if not found:
        result["nearest_by_distance"] = None
        return result
    place = _on_road(start, net)
    if place is None:
        _too_far(conn, (x, y), net, "incident" if incident_id is not None else "lon")
    candidates, joined = [], []
    far = {}  # a facility far from every road cannot be reached by road: said, not refused
    for row, on in zip(found, around, strict=True):
        if on is None:
            far[row["id"]] = f"more than {net.max_off_road_m:,.0f} m from every road"
        else:
            joined.append(on)
            candidates.append(row)
    points = [place, *joined]
    costs, ways = _soonest(conn, points, net, k)
    crow = {r["id"]: analysis.GEOD.inv(r["lon"], r["lat"], x, y)[2] for r in found}
    totals = {i: costs[p.vid(i + 2)] + p.leg_s(net) + place.leg_s(net)  # on the road, and the legs off it
              for i, p in enumerate(joined) if p.vid(i + 2) in costs}
    order = sorted(totals, key=lambda i: totals[i])[:k]
    missing = [i for i in order if joined[i].vid(i + 2) not in ways]  # a tie the database broke the other way
    legs = _legs(conn, points, [(i + 1, 0) for i in missing]) if missing else {}
    for i in order:
        row = candidates[i]
        pieces = ways.get(joined[i].vid(i + 2)) if i not in missing else legs[(i + 1, 0)]
        way = _way({(0, 1): pieces}, [joined[i], place], ["from", "to"], net)
        props = way["properties"]
        result["features"].append({
            "type": "Feature", "id": row["id"], "geometry": way["geometry"],
            "properties": {"id": row["id"], "name": row["name"], "time_s": props.get("time_s"),
                           "minutes": props.get("minutes"), "road_m": props.get("length_m"),
                           "straight_m": round(crow[row["id"]], 1), "steps": props.get("steps"),
                           "off_road": props.get("off_road")}})
    by_distance = min(found, key=lambda r: crow[r["id"]])
    soonest = result["features"][0]["id"] if result["features"] else None
    result["nearest_by_distance"] = {"id": by_distance["id"], "name": by_distance["name"],
                                     "straight_m": round(crow[by_distance["id"]], 1),
                                     "also_soonest": by_distance["id"] == soonest}
    result["unreachable"] = [row["id"] for i, row in enumerate(candidates) if i not in totals][:50]
    result["far_from_roads"] = far
    return result


# -- reach: service areas ----------------------------------------------------------------------------


def _from_facilities_sql(joined: list[OnRoad], net: Network) -> str:
    """The network with one more vertex (0) that leaves to every facility's road in the facility's own time."""
    facilities = ", ".join(f"({p.edge}, {p.fraction!r}::float8, {p.leg_s(net)!r}::float8, "
                           f"{p.vertex if p.vertex is not None else 'NULL'}::bigint)" for p in joined)
    rows = f"(VALUES {facilities}) f(edge, fr, leg, vertex)"
    return (f"{EDGES_SQL} UNION ALL SELECT -(row_number() OVER ())::bigint, 0::bigint, v.node, v.c, -1::float8 FROM ("
            f"SELECT e.source AS node, f.leg + f.fr * e.reverse_cost AS c FROM {rows} "
            "JOIN network_edges e ON e.id = f.edge WHERE e.reverse_cost >= 0 AND f.vertex IS NULL UNION ALL "
            f"SELECT e.target, f.leg + (1 - f.fr) * e.cost FROM {rows} "
            "JOIN network_edges e ON e.id = f.edge WHERE e.cost >= 0 AND f.vertex IS NULL UNION ALL "
            f"SELECT f.vertex, f.leg FROM {rows} WHERE f.vertex IS NOT NULL) v")


def _utm(lon: float, lat: float) -> int:
    """The EPSG code of the UTM zone of a place (WGS 84): metres for widening roads into areas."""
    return (32600 if lat >= 0 else 32700) + min(60, int((lon + 180) // 6) + 1)


def reach(conn: Connection, catalog: Catalog, layer_id: str, *, filter_text: str | None = None,
          minutes: list[float] | None = None, by_commune: bool = True, window_days: int = 365) -> dict[str, Any]:
    """The areas reached by road from the facilities (``filter``) within each of ``minutes``.

    An area is every road reached in time and a 3-minute walk around it (``REACH_WALK_S`` at the off-road
    speed: the boundary smoothing). ``sources``: the facilities, each at its point, and whether it is on the
    network (one farther than ``max_off_road_m`` from every road reaches nothing by road).
    With ``by_commune``, today's communes with the share of their area and of their incidents (the last
    ``window_days``) reached within each time, and those not reached at all.
    """
    given = list(minutes or [10, 20, 30])
    minutes = sorted(set(given))
    if not 1 <= len(given) <= MAX_THRESHOLDS or any(not 0 < m <= MAX_MINUTES for m in minutes):
        raise InvalidInput(f"minutes: 1 to {MAX_THRESHOLDS} times, each above 0 and at most {MAX_MINUTES}",
                           param="minutes")
    net = settings_of(sources(catalog, conn))
    layer, _, found, on_roads = _candidates_on_roads(conn, catalog, layer_id, filter_text, net)
    joined = [p for p in on_roads if p is not None]  # a facility far from every road reaches nothing by road
    result: dict[str, Any] = {"type": "FeatureCollection", "layer": layer.id, "facilities": len(found),
                              "walk_m": round(REACH_WALK_S * net.off_road_kmh / 3.6), "features": [],
                              "sources": [{**f, "on_network": p is not None} for f, p in zip(found, on_roads,
                                                                                            strict=True)]}
    if not joined:
        return result
    walk = REACH_WALK_S * net.off_road_kmh / 3.6
    limit = max(minutes) * 60
    thresholds = ", ".join(f"({m!r}::float8)" for m in minutes)
    rows = conn.execute(sa.text(
        "WITH dd AS (SELECT node, agg_cost FROM pgr_drivingDistance("
        f"{_literal(_from_facilities_sql(joined, net))}, 0, {limit!r}, true)), "
        "t AS (SELECT e.geom, e.cost, e.reverse_cost, du.agg_cost AS tu, dv.agg_cost AS tv FROM network_edges e "
        "LEFT JOIN dd du ON du.node = e.source LEFT JOIN dd dv ON dv.node = e.target "
        "WHERE du.node IS NOT NULL OR dv.node IS NOT NULL), "
        f"m AS (SELECT minutes, minutes * 60 AS s FROM (VALUES {thresholds}) v(minutes)), "
        "parts AS (SELECT m.minutes, ST_LineSubstring(t.geom, 0, least(1, (m.s - t.tu) / t.cost)) AS g "
        "FROM t, m WHERE t.tu <= m.s AND t.cost > 0 UNION ALL "
        "SELECT m.minutes, ST_LineSubstring(t.geom, greatest(0, 1 - (m.s - t.tv) / t.reverse_cost), 1) "
        "FROM t, m WHERE t.tv <= m.s AND t.reverse_cost > 0) "
        "SELECT minutes, ST_AsGeoJSON(a, 6) AS geojson, ST_Area(a::geography) / 1e6 AS km2, "
        "ST_Length(roads::geography) / 1000 AS road_km FROM ("
        # each piece widened by the walk in metres (UTM), then their union: 8× faster than widening the collection
        "SELECT minutes, ST_Collect(g) AS roads, ST_Transform(ST_Union(ST_Buffer(ST_Simplify(ST_Transform(g, :utm), "
        "5), :walk, 'quad_segs=4')), 4326) AS a FROM parts GROUP BY minutes) s ORDER BY minutes"),
        {"walk": walk, "utm": _utm(joined[0].lon, joined[0].lat)}).mappings().all()
    for area in rows:
        result["features"].append({"type": "Feature", "id": f"{area['minutes']:g}",
                                   "geometry": json.loads(area["geojson"]),
                                   "properties": {"minutes": area["minutes"], "area_km2": round(area["km2"], 2),
                                                  "road_km": round(area["road_km"], 1)}})
    if by_commune and result["features"]:
        result["communes"] = _commune_shares(conn, result["features"], window_days)
    return result


def _commune_shares(conn: Connection, areas: list[dict[str, Any]], window_days: int) -> list[dict[str, Any]]:
    """Today's communes: the share of their area and of their incidents within each service area."""
    values = ", ".join(f"({a['properties']['minutes']!r}::float8, ST_SetSRID(ST_GeomFromGeoJSON("
                       f"{_literal(json.dumps(a['geometry']))}), 4326))" for a in areas)
    rows = conn.execute(sa.text(
        f"WITH a AS (SELECT * FROM (VALUES {values}) v(minutes, g)), "
        "c AS (SELECT code, name, geom FROM admin_units WHERE level = 'commune' AND valid_to IS NULL), "
        "i AS (SELECT geom FROM incidents WHERE reported_at >= now() - make_interval(days => :days) "
        "AND merged_into IS NULL) "
        "SELECT c.code, c.name, a.minutes, "
        "ST_Area(ST_Intersection(c.geom, a.g)::geography) / nullif(ST_Area(c.geom::geography), 0) AS area_share, "
        "(SELECT count(*) FROM i WHERE ST_Intersects(i.geom, c.geom)) AS incidents, "
        "(SELECT count(*) FROM i WHERE ST_Intersects(i.geom, c.geom) AND ST_Intersects(i.geom, a.g)) AS reached "
        "FROM c CROSS JOIN a ORDER BY c.code, a.minutes"), {"days": window_days}).mappings().all()
    communes: dict[str, dict[str, Any]] = {}
    for r in rows:
        item = communes.setdefault(r["code"], {"code": r["code"], "name": r["name"], "incidents": r["incidents"],
                                               "within": {}})
        item["within"][f"{r['minutes']:g}"] = {
            "area_share": round(float(r["area_share"] or 0), 3),
            "incident_share": round(r["reached"] / r["incidents"], 3) if r["incidents"] else None}
    for item in communes.values():
        item["reached"] = any(w["area_share"] > 0 for w in item["within"].values())
    return list(communes.values())


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
