"""Service areas: what facilities reach by road within given times, and each commune's share reached.

On the network ``gis_ioc.road_network`` makes, with the facilities joined to it as ``gis_ioc.routing`` joins
points (``candidates_on_roads``); pgRouting's ``drivingDistance`` from all of them at once.
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gis_ioc.catalog import Catalog, Network
from gis_ioc.errors import InvalidInput
from gis_ioc.road_network import EDGES_SQL, _literal, settings_of, sources
from gis_ioc.routing import OnRoad, candidates_on_roads

MAX_MINUTES = 180
MAX_THRESHOLDS = 5
REACH_WALK_S = 180  # the area reached: within a 3-minute walk (at the off-road speed) of a road reached in time


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
    layer, found, on_roads = candidates_on_roads(conn, catalog, layer_id, filter_text, net)
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
                                   "geometry": orjson.loads(area["geojson"]),  # 180 kB: 5 ms by json
                                   "properties": {"minutes": area["minutes"], "area_km2": round(area["km2"], 2),
                                                  "road_km": round(area["road_km"], 1)}})
    if by_commune and result["features"]:
        result["communes"] = _commune_shares(conn, result["features"], window_days)
    return result


def _commune_shares(conn: Connection, areas: list[dict[str, Any]], window_days: int) -> list[dict[str, Any]]:
    """Today's communes: the share of their area and of their incidents within each service area."""
    values = ", ".join(f"({a['properties']['minutes']!r}::float8, ST_SetSRID(ST_GeomFromGeoJSON("
                       f"{_literal(orjson.dumps(a['geometry']).decode())}), 4326))" for a in areas)
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
