"""The IOC spatial operations: locate, nearest, within, camera field of view, coverage, impact, hotspots.

Each operation exists once, here, and is called by the HTTP API, the CLI and notebooks (statistics per unit live
in ``unit_stats`` and are ``analysis.stats`` too; what both share is in ``analysis_common``). Distances are
geodesic (PostGIS geography, WGS 84), in metres; areas in square kilometres.
"""

from __future__ import annotations

import json
import math
import re
from datetime import date
from typing import Any

import numpy as np
import shapely
import shapely.geometry
import sqlalchemy as sa
from pyproj import Geod
from shapely.geometry import Polygon
from sqlalchemy.engine import Connection

from gis_ioc import cql2_sql, limits
from gis_ioc.analysis_common import IN_FORCE as IN_FORCE
from gis_ioc.analysis_common import LEVELS as LEVELS
from gis_ioc.analysis_common import Window as Window
from gis_ioc.analysis_common import filter_sql, layer_named, windowed
from gis_ioc.catalog import Catalog, Layer, quote_ident, quote_table
from gis_ioc.errors import InvalidInput
from gis_ioc.unit_stats import stats as stats

GEOD = Geod(ellps="WGS84")
MAX_K = 1000
ON_BOUNDARY_DEG = 1e-9


def check_point(lon: float, lat: float) -> tuple[float, float]:
    """Longitude and latitude as plain floats (numpy values welcome), in range, or a 400 naming them."""
    lon, lat = float(lon), float(lat)
    if not (math.isfinite(lon) and -180 <= lon <= 180):
        raise InvalidInput(f"lon: {lon} is not a longitude between -180 and 180", param="lon")
    if not (math.isfinite(lat) and -90 <= lat <= 90):
        raise InvalidInput(f"lat: {lat} is not a latitude between -90 and 90", param="lat")
    return lon, lat


def _point_sql(lon: float, lat: float) -> str:
    return f"ST_SetSRID(ST_MakePoint({float(lon)!r}, {float(lat)!r}), 4326)"


# -- locate ---------------------------------------------------------------------------------------


def locate(conn: Connection, lon: float, lat: float, at: date | None = None) -> dict[str, Any]:
    """The commune, district and province containing a point, as in force on ``at`` (default today).

    A point on a shared boundary (within ``ON_BOUNDARY_DEG``, about 0.1 mm, so that floating-point
    rounding does not pick a side) belongs to every unit it touches; the one with the smallest code is
    returned first (``units`` lists them all). A point outside every unit says so.
    """
    lon, lat = check_point(lon, lat)
    on = at or date.today()
    rows = conn.execute(
        sa.text(
            "SELECT code, level, unit_type, name, parent_code, valid_from, valid_to FROM admin_units "
            "WHERE ST_DWithin(geom, ST_SetSRID(ST_MakePoint(:x, :y), 4326), :tolerance) "
            f"AND {IN_FORCE} ORDER BY level, code"
        ),
        {"x": lon, "y": lat, "on": on, "tolerance": ON_BOUNDARY_DEG},
    ).mappings().all()
    units = [{**r, "valid_from": r["valid_from"].isoformat(),
              "valid_to": r["valid_to"].isoformat() if r["valid_to"] else None} for r in rows]
    found: dict[str, Any] = {"lon": lon, "lat": lat, "at": on.isoformat(), "inside": bool(units), "units": units}
    for level in LEVELS:
        found[level] = next((u for u in units if u["level"] == level), None)
    return found


# -- nearest and within ------------------------------------------------------------------------------


def _origin(conn: Connection, catalog: Catalog, lon: float | None, lat: float | None,
            incident: int | None) -> tuple[float, float, int | None]:
    if incident is not None:
        row = conn.execute(sa.text("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) AS p FROM incidents "
                                   "WHERE id = :i) s"), {"i": incident}).first()
        if row is None:
            raise InvalidInput(f"incident: no incident {incident}", param="incident")
        return float(row[0]), float(row[1]), incident
    if lon is None or lat is None:
        raise InvalidInput("lon, lat: give a point (lon and lat) or an incident id", param="lon")
    lon, lat = check_point(lon, lat)
    return lon, lat, None


def _feature_rows(conn: Connection, layer: Layer, where: str, params: dict[str, Any], order: str, limit: int,
                  distance_sql: str) -> list[dict[str, Any]]:
    props = ", ".join(f"'{name}', t.{quote_ident(name)}" for name in layer.properties if name != layer.id_column)
    sql = (f"SELECT t.{quote_ident(layer.id_column)} AS id, json_build_object({props}) AS properties, "
           f"ST_AsGeoJSON(t.{quote_ident(layer.geometry.column)}, 7)::json AS geometry, {distance_sql} AS distance_m "
           f"FROM {quote_table(layer.table)} t WHERE {where} ORDER BY {order} LIMIT {int(limit)}")
    return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]


def nearest(conn: Connection, catalog: Catalog, layer_id: str, *, lon: float | None = None,
            lat: float | None = None, incident: int | None = None, k: int = 5,
            max_distance_m: float | None = None, filter_text: str | None = None) -> dict[str, Any]:
    """The k nearest features with their geodesic distance in metres.

    Index-assisted and exact: the KNN operator (``<->``, distance in degrees) on the GiST index proposes
    candidates, and the k-th candidate's exact distance bounds the answer. Every feature that was not a
    candidate lies farther in degrees than the last one, so at least that far times the fewest metres a degree
    spans there: when that is beyond the bound, the answer is among the candidates. Else (rare: a point at the
    edge of the data, whose nearest are far and a crowd lies just beyond) a second pass takes every feature
    within that geodesic distance (a box test on the index, then geography), so no closer feature is missed.
    """
    layer = layer_named(catalog, conn, layer_id)
    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"k: {k} is not between 1 and {MAX_K}", param="k")
    if max_distance_m is not None:
        max_distance_m = limits.number(max_distance_m, "max_distance_m", 0, limits.MAX_RADIUS_M)
    x, y, skip = _origin(conn, catalog, lon, lat, incident)
    where, params = filter_sql(layer, filter_text)
    if skip is not None and layer.id == "incidents":
        where += " AND t.id <> :skip"
        params["skip"] = skip
    geom = f"t.{quote_ident(layer.geometry.column)}"
    point = _point_sql(x, y)
    exact = f"ST_Distance({geom}::geography, {point}::geography)"
    if max_distance_m is not None:
        where += f" AND {_within_sql(geom, x, y, max_distance_m)}"
    ident = f"t.{quote_ident(layer.id_column)}"
    rows: list[dict[str, Any]] = []
    for wanted in (max(8 * k, 64), max(16 * k, 1024)):  # more when the first ones all lie about as far
        candidates = conn.execute(sa.text(
            f"SELECT {exact} AS metres, {ident} AS id, {geom} <-> {point} AS degrees "
            f"FROM {quote_table(layer.table)} t WHERE {where} ORDER BY {geom} <-> {point} LIMIT {wanted}"),
            params).all()
        if not candidates:
            break
        ranked = sorted(candidates, key=lambda c: (c.metres, c.id))  # as the rows are sorted
        bound = ranked[k - 1].metres if len(ranked) >= k else None
        if len(candidates) < wanted or (bound is not None and _beyond(float(candidates[-1].degrees), y,
                                                                      bound + 0.001)):
            rows = _feature_rows(conn, layer, f"{where} AND {ident} = ANY(:nearest)",
                                 {**params, "nearest": [c.id for c in ranked[:k]]}, f"{exact}, {ident}", k,
                                 exact)  # the answer is among them
            break
    else:  # every feature within the k-th candidate's distance
        final_where = where if bound is None else f"{where} AND {_within_sql(geom, x, y, bound + 0.001)}"
        rows = _feature_rows(conn, layer, final_where, params, f"{exact}, {ident}", k, exact)
    return {"layer": layer.id, "origin": {"lon": x, "lat": y, "incident": incident}, "k": k,
            "features": [_feature(r) for r in rows]}


def _beyond(degrees: float, lat: float, metres: float) -> bool:
    """Whether whatever lies farther than ``degrees`` (lon/lat, planar) from a point lies farther than ``metres``.

    On WGS 84, for a point at ``lat`` up to 60° from the equator and ``metres`` up to 100 km. Within D degrees
    of the point a degree spans at least 110,574 m of latitude (at the equator) and 111,319 m times the cosine of
    the latitude farthest from the equator of longitude (0.1 % less, for a geodesic that bulges poleward); D
    times that grows with D up to 5°, so what lies farther than ``degrees`` (and within 5°) is at least
    ``degrees`` times it away; anything farther than 5° in degrees is more than 100 km away there.
    """
    if abs(lat) > 60 or metres > 100_000 or degrees >= 5:
        return False
    fewest = 0.999 * min(110_574.0, 111_319.49 * math.cos(math.radians(abs(lat) + degrees)))
    return degrees * fewest > metres


def _within_sql(geom: str, lon: float, lat: float, metres: float) -> str:
    """Within a geodesic distance: a lon/lat box on the index first, then the exact test."""
    degrees = cql2_sql.box_degrees(metres, abs(lat))
    point = _point_sql(lon, lat)
    return (f"{geom} && ST_Expand({point}, {degrees!r}) "
            f"AND ST_DWithin({geom}::geography, {point}::geography, {float(metres)!r})")


def _feature(row: dict[str, Any]) -> dict[str, Any]:
    out = {"type": "Feature", "id": row["id"], "geometry": row["geometry"], "properties": dict(row["properties"])}
    if row.get("distance_m") is not None:
        out["properties"]["distance_m"] = round(float(row["distance_m"]), 2)
    return out


def area_geometry(conn: Connection, *, admin_code: str | None = None, polygon: str | None = None,
                  lon: float | None = None, lat: float | None = None, radius_m: float | None = None,
                  at: date | None = None) -> str:
    """An area as GeoJSON text.

    One of: an admin unit (by code, in force on ``at``), a polygon (GeoJSON or WKT), or a circle (a
    point and a radius in metres).
    """
    given = [admin_code is not None, polygon is not None, radius_m is not None]
    if sum(given) != 1:
        raise InvalidInput("area: give one of admin_code, polygon, or lon+lat+radius_m", param="area")
    if admin_code is not None:
        on = at or date.today()
        found = conn.execute(sa.text(
            f"SELECT ST_AsGeoJSON(geom) FROM admin_units WHERE code = :c AND {IN_FORCE} ORDER BY level LIMIT 1"),
            {"c": admin_code, "on": on}).scalar()
        if found is None:
            raise InvalidInput(f"admin_code: no unit {admin_code!r} in force on {on.isoformat()}", param="admin_code")
        return str(found)
    if polygon is not None:
        return json.dumps(shapely.geometry.mapping(area_polygon(polygon)))
    assert radius_m is not None
    radius_m = limits.number(radius_m, "radius_m", 0, limits.MAX_RADIUS_M, low_open=True)
    if lon is None or lat is None:
        raise InvalidInput("lon, lat: a circle needs its centre", param="lon")
    lon, lat = check_point(lon, lat)
    return json.dumps(shapely.geometry.mapping(geodesic_circle(lon, lat, radius_m)))


WKT_TYPES = frozenset({"POINT", "LINESTRING", "LINEARRING", "POLYGON", "MULTIPOINT", "MULTILINESTRING",
                       "MULTIPOLYGON", "GEOMETRYCOLLECTION"})  # what GEOS reads; only (multi)polygons are areas
_WKT_TYPE = re.compile(r"\s*[A-Za-z]+")
_EWKT_SRID = re.compile(r"\s*SRID=(\d{1,9})\s*;", re.IGNORECASE)


def area_polygon(text: str, param: str = "polygon") -> shapely.Geometry:
    """A polygon given as GeoJSON or WKT (CRS84): valid, in degrees, at most ``limits.MAX_AREA_SPAN_DEG`` across."""
    limits.check_text(text, param, limits.MAX_FILTER_CHARS * 64)
    geojson = text.lstrip().startswith("{")
    srid = _EWKT_SRID.match(text)
    if srid:  # EWKT, as PostGIS writes it (ST_AsEWKT)
        if int(srid[1]) != 4326:
            raise InvalidInput(f"{param}: SRID={srid[1]}: give longitude, latitude (SRID=4326, CRS84)", param=param)
        text = text[srid.end():]
    if not geojson and (_WKT_TYPE.match(text) or [""])[0].strip().upper() not in WKT_TYPES:
        raise InvalidInput(f"{param}: not GeoJSON or WKT (it begins with {{ or a WKT type such as POLYGON, not "
                           f"{text.strip()[:24]!r})", param=param)
    try:
        shape = shapely.geometry.shape(limits.loads(text, param)) if geojson else shapely.from_wkt(text)
    except InvalidInput:
        raise
    except UnicodeDecodeError:  # GEOS cut its message (which quotes the input) in the middle of a character
        raise InvalidInput(f"{param}: not GeoJSON or WKT (the WKT could not be read)", param=param) from None
    except Exception as err:  # shapely raises several types for malformed input
        raise InvalidInput(f"{param}: not GeoJSON or WKT ({str(err).splitlines()[0][:120]})", param=param) from None
    if shape is None or shape.geom_type not in ("Polygon", "MultiPolygon"):
        raise InvalidInput(f"{param}: a {getattr(shape, 'geom_type', 'nothing')} is not an area", param=param)
    if shape.is_empty:
        raise InvalidInput(f"{param}: the polygon is empty", param=param)
    if shapely.get_num_coordinates(shape) > limits.MAX_AREA_VERTICES:
        raise InvalidInput(f"{param}: more than {limits.MAX_AREA_VERTICES:,} vertices", param=param)
    xmin, ymin, xmax, ymax = shape.bounds
    if not (math.isfinite(xmin + ymin + xmax + ymax) and -180 <= xmin and xmax <= 180 and -90 <= ymin
            and ymax <= 90):
        raise InvalidInput(f"{param}: coordinates are longitude, latitude in degrees (CRS84)", param=param)
    span = max(xmax - xmin, ymax - ymin)
    if span > limits.MAX_AREA_SPAN_DEG:
        raise InvalidInput(f"{param}: the area is {span:.1f}° across; at most {limits.MAX_AREA_SPAN_DEG:g}° "
                           "(a province is about 1.5°)", param=param)
    if not shape.is_valid:
        raise InvalidInput(f"{param}: invalid ({shapely.is_valid_reason(shape)})", param=param)
    return shape


def within(conn: Connection, catalog: Catalog, layer_id: str, area_geojson: str,
           filter_text: str | None = None, limit: int = 10_000) -> dict[str, Any]:
    """The features of a layer inside an area (touching its inside or its boundary)."""
    layer = layer_named(catalog, conn, layer_id)
    where, params = filter_sql(layer, filter_text)
    params["area"] = area_geojson
    geom = f"t.{quote_ident(layer.geometry.column)}"
    where += f" AND ST_Intersects({geom}, ST_SetSRID(ST_GeomFromGeoJSON(:area), 4326))"
    rows = _feature_rows(conn, layer, where, params, f"t.{quote_ident(layer.id_column)}", limit, "NULL")
    return {"layer": layer.id, "numberReturned": len(rows), "features": [_feature(r) for r in rows]}


# -- cameras ---------------------------------------------------------------------------------------


def geodesic_circle(lon: float, lat: float, radius_m: float, segments: int = 72) -> Polygon:
    """A circle of ``radius_m`` metres on the ellipsoid."""
    azimuths = np.linspace(0, 360, segments, endpoint=False)
    xs, ys, _ = GEOD.fwd(np.full(segments, lon), np.full(segments, lat), azimuths, np.full(segments, radius_m))
    return Polygon(zip(xs, ys, strict=True))


def fov_sector(lon: float, lat: float, heading_deg: float, fov_deg: float, range_m: float,
               step_deg: float = 5.0) -> Polygon:
    """A camera's field of view as a polygon on the ellipsoid.

    The sector from its position, ``fov`` wide around its heading (0 = north, clockwise), out to its
    range. A field of view of 360° is a circle; headings across north (350° ± 30°) wrap as they should.
    """
    if fov_deg >= 360:
        return geodesic_circle(lon, lat, range_m)
    start = heading_deg - fov_deg / 2
    count = max(2, int(math.ceil(fov_deg / step_deg)) + 1)
    azimuths = (start + np.linspace(0, fov_deg, count)) % 360
    xs, ys, _ = GEOD.fwd(np.full(count, lon), np.full(count, lat), azimuths, np.full(count, range_m))
    return Polygon([(lon, lat), *zip(xs, ys, strict=True), (lon, lat)])


def fov_layer(conn: Connection, *, bbox: tuple[float, float, float, float] | None = None,
              status: str | None = None, limit: int = 5000) -> list[dict[str, Any]]:
    """Every camera's field-of-view sector as a GeoJSON feature (the layer the wall map shows)."""
    where: list[str] = ["TRUE"]
    params: dict[str, Any] = {}
    if bbox is not None:
        where.append("geom && ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326)")
        params.update(dict(zip(("x0", "y0", "x1", "y1"), bbox, strict=True)))
    if status is not None:
        if status not in ("online", "offline", "maintenance"):
            raise InvalidInput(f"status: {status!r} is not online, offline or maintenance", param="status")
        where.append("status = :status")
        params["status"] = status
    if not 1 <= limit <= 50_000:
        raise InvalidInput(f"limit: {limit} is not between 1 and 50000", param="limit")
    rows = conn.execute(sa.text(
        "SELECT id, name, status, heading_deg, fov_deg, range_m, ST_X(geom) AS x, ST_Y(geom) AS y FROM cameras "
        f"WHERE {' AND '.join(where)} ORDER BY id LIMIT {int(limit)}"), params).mappings().all()
    return [
        {"type": "Feature", "id": r["id"],
         "geometry": shapely.geometry.mapping(fov_sector(r["x"], r["y"], r["heading_deg"] or 0, r["fov_deg"] or 360,
                                                         r["range_m"] or 50)),
         "properties": {"name": r["name"], "status": r["status"], "heading_deg": r["heading_deg"],
                        "fov_deg": r["fov_deg"], "range_m": r["range_m"]}}
        for r in rows
    ]


def sees(cam_lon: float, cam_lat: float, heading_deg: float, fov_deg: float, range_m: float,
         lon: float, lat: float) -> tuple[bool, float]:
    """Whether a camera sees a point, and the geodesic distance to it."""
    azimuth, _, distance = GEOD.inv(cam_lon, cam_lat, lon, lat)
    if distance > range_m:
        return False, distance
    if fov_deg >= 360 or distance == 0:
        return True, distance
    off = (azimuth - heading_deg + 180) % 360 - 180
    return abs(off) <= fov_deg / 2 + 1e-9, distance


def cameras_seeing(conn: Connection, lon: float, lat: float, online_only: bool = False) -> list[dict[str, Any]]:
    """The cameras whose field of view holds a point, nearest first."""
    lon, lat = check_point(lon, lat)
    longest = conn.execute(sa.text("SELECT coalesce(max(range_m), 0) FROM cameras")).scalar() or 0
    if not longest:
        return []
    status = " AND status = 'online'" if online_only else ""
    rows = conn.execute(sa.text(
        f"SELECT id, name, status, heading_deg, fov_deg, range_m, ST_X(geom) AS x, ST_Y(geom) AS y FROM cameras t "
        f"WHERE {_within_sql('t.geom', lon, lat, float(longest))}{status} "
        "AND ST_DWithin(t.geom::geography, ST_SetSRID(ST_MakePoint(:x, :y), 4326)::geography, t.range_m)"),
        {"x": lon, "y": lat}).mappings().all()
    out = []
    for r in rows:
        visible, distance = sees(r["x"], r["y"], r["heading_deg"] or 0, r["fov_deg"] or 360, r["range_m"], lon, lat)
        if visible:
            out.append({"id": r["id"], "name": r["name"], "status": r["status"], "distance_m": round(distance, 2)})
    return sorted(out, key=lambda c: c["distance_m"])


# -- statistics ------------------------------------------------------------------------------------


# The commune a feature was recorded in (t.commune_code, in force on its report date), carried to the
# commune in force on :on through admin_lineage; a split old commune goes to the new unit holding it.
# -- camera coverage ----------------------------------------------------------------------------------


def geodesic_km2(geom: shapely.Geometry) -> float:
    """Area on the ellipsoid, in km²."""
    if geom.is_empty:
        return 0.0
    area, _ = GEOD.geometry_area_perimeter(geom)
    return abs(area) / 1e6


def _sectors(conn: Connection, area: shapely.Geometry, online_only: bool) -> list[dict[str, Any]]:
    """The cameras whose field of view may reach into an area, with their sectors."""
    longest = conn.execute(sa.text("SELECT coalesce(max(range_m), 0) FROM cameras")).scalar() or 0
    degrees = cql2_sql.box_degrees(float(longest), max(abs(area.bounds[1]), abs(area.bounds[3])))
    status = " AND status = 'online'" if online_only else ""
    rows = conn.execute(sa.text(
        "SELECT id, heading_deg, fov_deg, range_m, ST_X(geom) AS x, ST_Y(geom) AS y FROM cameras "
        "WHERE geom && ST_Expand(ST_SetSRID(ST_GeomFromGeoJSON(:area), 4326), :deg)"
        f" AND ST_DWithin(geom::geography, ST_SetSRID(ST_GeomFromGeoJSON(:area), 4326)::geography, range_m){status}"),
        {"area": json.dumps(shapely.geometry.mapping(area)), "deg": degrees}).mappings().all()
    return [{"id": r["id"], "sector": fov_sector(r["x"], r["y"], r["heading_deg"] or 0, r["fov_deg"] or 360,
                                                 r["range_m"] or 50)} for r in rows]


def coverage(conn: Connection, area_geojson: str, *, online_only: bool = False, by: str | None = None,
             at: date | None = None) -> dict[str, Any]:
    """How much of an area the cameras see: covered share, the uncovered parts, and per unit.

    Sectors are geodesic; areas are measured on the ellipsoid. ``by`` (commune or district) adds the
    covered share of each unit of that level in force on ``at`` that overlaps the area.
    """
    area = shapely.make_valid(shapely.geometry.shape(json.loads(area_geojson)))
    cameras = _sectors(conn, area, online_only)
    seen = shapely.union_all([c["sector"] for c in cameras]) if cameras else shapely.Polygon()
    covered = shapely.intersection(area, seen)
    uncovered = shapely.difference(area, seen)
    total = geodesic_km2(area)
    result: dict[str, Any] = {
        "area_km2": round(total, 4),
        "covered_km2": round(geodesic_km2(covered), 4),
        "covered_share": round(geodesic_km2(covered) / total, 6) if total else 0.0,
        "cameras": len(cameras),
        "online_only": online_only,
        "uncovered": shapely.geometry.mapping(uncovered) if not uncovered.is_empty else None,
    }
    if by is not None:
        if by not in ("district", "commune"):
            raise InvalidInput(f"by: {by!r} is not district or commune", param="by")
        on = at or date.today()
        units = conn.execute(sa.text(
            f"SELECT code, name, ST_AsGeoJSON(geom) AS g FROM admin_units WHERE level = :level AND {IN_FORCE} "
            "AND ST_Intersects(geom, ST_SetSRID(ST_GeomFromGeoJSON(:a), 4326)) ORDER BY code"),
            {"level": by, "on": on, "a": area_geojson}).mappings().all()
        per_unit = []
        for u in units:
            part = shapely.intersection(shapely.geometry.shape(json.loads(u["g"])), area)
            size = geodesic_km2(part)
            if size < 1e-9:  # a neighbour that only touches the area's edge
                continue
            seen_part = geodesic_km2(shapely.intersection(part, seen))
            per_unit.append({"code": u["code"], "name": u["name"], "area_km2": round(size, 4),
                             "covered_km2": round(seen_part, 4),
                             "covered_share": round(seen_part / size, 6) if size else 0})
        result["units"] = per_unit
    return result


# -- incident impact ---------------------------------------------------------------------------------


def impact(conn: Connection, catalog: Catalog, *, incident: int | None = None, polygon: str | None = None,
           radius_m: float = 1000, layers: tuple[str, ...] = ("infrastructure",)) -> dict[str, Any]:
    """What an incident reaches, with geodesic distances.

    Features of ``layers`` within ``radius_m`` of it (0 m when they touch its area); for an area (a
    flood, a forest fire) also the length of each road it cuts.
    """
    radius_m = limits.number(radius_m, "radius_m", 0, limits.MAX_RADIUS_M)
    if not 1 <= len(layers) <= limits.MAX_IMPACT_LAYERS or len(set(layers)) != len(layers):
        raise InvalidInput(f"layers: name 1 to {limits.MAX_IMPACT_LAYERS} different layers", param="layers")
    if (incident is None) == (polygon is None):
        raise InvalidInput("incident, polygon: give one of them", param="incident")
    if incident is not None:
        source = conn.execute(sa.text("SELECT ST_AsGeoJSON(geom) FROM incidents WHERE id = :i"),
                              {"i": incident}).scalar()
        if source is None:
            raise InvalidInput(f"incident: no incident {incident}", param="incident")
    else:
        assert polygon is not None
        source = area_geometry(conn, polygon=polygon)
    shape_ = shapely.geometry.shape(json.loads(source))
    degrees = cql2_sql.box_degrees(radius_m, max(abs(shape_.bounds[1]), abs(shape_.bounds[3])))
    out: dict[str, Any] = {"incident": incident, "radius_m": radius_m, "geometry": json.loads(source), "layers": {}}
    for layer_id in layers:
        layer = layer_named(catalog, conn, layer_id)
        geom = f"t.{quote_ident(layer.geometry.column)}"
        area = "ST_SetSRID(ST_GeomFromGeoJSON(:src), 4326)"
        where = (f"{geom} && ST_Expand({area}, :deg) AND ST_DWithin({geom}::geography, {area}::geography, :r)"
                 + (" AND t.id <> :skip" if layer.id == "incidents" and incident is not None else ""))
        distance = f"ST_Distance({geom}::geography, {area}::geography)"
        rows = _feature_rows(conn, layer, where, {"src": source, "deg": degrees, "r": radius_m, "skip": incident},
                             f"{distance}, t.{quote_ident(layer.id_column)}", 10_000, distance)
        out["layers"][layer.id] = [_feature(r) for r in rows]
    if shape_.geom_type in ("Polygon", "MultiPolygon"):
        roads = conn.execute(sa.text(
            "SELECT id, name, road_class, ST_Length(ST_Intersection(geom, a)::geography) AS cut_m, "
            "ST_Length(geom::geography) AS length_m FROM infrastructure, "
            "(SELECT ST_SetSRID(ST_GeomFromGeoJSON(:src), 4326) AS a) s "
            "WHERE kind = 'road' AND geom && a AND ST_Intersects(geom, a) ORDER BY cut_m DESC"),
            {"src": source}).mappings().all()
        out["roads_cut"] = [{"id": r["id"], "name": r["name"], "road_class": r["road_class"],
                             "cut_m": round(r["cut_m"], 1), "length_m": round(r["length_m"], 1)} for r in roads]
    return out


# -- hotspots -----------------------------------------------------------------------------------------

HOTSPOT_METHODS = ("dbscan", "grid", "h3")


def hotspots(conn: Connection, catalog: Catalog, layer_id: str, *, method: str = "dbscan", eps_m: float = 300,
             min_points: int = 5, cell_m: float = 1000, h3_resolution: int = 8, window: Window | None = None,
             filter_text: str | None = None, metric_srid: int = 9216, limit: int = 50) -> dict[str, Any]:
    """Clusters of features, ranked by count, each with its centroid and hull.

    ``dbscan`` (PostGIS ST_ClusterDBSCAN, ``eps_m`` metres, ``min_points``) and ``grid`` (square
    cells of ``cell_m`` metres) work in a metric CRS (VN-2000 / TM-3 107-30 for Kon Tum); ``h3``
    groups by H3 cells of ``h3_resolution``.
    """
    layer = layer_named(catalog, conn, layer_id)
    if method not in HOTSPOT_METHODS:
        raise InvalidInput(f"method: {method!r} is not one of {', '.join(HOTSPOT_METHODS)}", param="method")
    eps_m = limits.number(eps_m, "eps_m", 0, limits.MAX_EPS_M, low_open=True)
    cell_m = limits.number(cell_m, "cell_m", limits.MIN_CELL_M, limits.MAX_CELL_M)
    min_points = limits.whole(min_points, "min_points", 1, limits.MAX_MIN_POINTS)
    limit = limits.whole(limit, "limit", 1, 1000)
    h3_resolution = limits.whole(h3_resolution, "h3_resolution", 0, limits.MAX_H3_RESOLUTION)
    where, params = filter_sql(layer, filter_text)
    where, params = windowed(layer, where, params, window)
    geom = f"t.{quote_ident(layer.geometry.column)}"
    point = f"ST_PointOnSurface({geom})"
    params.update({"srid": metric_srid, "eps": eps_m, "minpts": min_points, "cell": cell_m})
    source = f"SELECT {point} AS p FROM {quote_table(layer.table)} t WHERE {where}"
    # ST_ClusterDBSCAN cannot be interrupted and costs the square of the points in a dense place (20,000 points
    # within 300 m: 4.8 s here): the input is counted first and bounded.
    most = limits.MAX_DBSCAN_POINTS if method == "dbscan" else limits.MAX_HOTSPOT_POINTS
    matched = conn.execute(sa.text(f"SELECT count(*) FROM (SELECT 1 FROM {quote_table(layer.table)} t WHERE {where} "
                                   f"LIMIT {most + 1}) s"), params).scalar_one()
    if matched > most:
        other = f"; or use method=grid or h3 (up to {limits.MAX_HOTSPOT_POINTS:,})" if method == "dbscan" else ""
        raise InvalidInput(f"start: more than {most:,} features of {layer.id!r} match; {method} takes at most "
                           f"{most:,}: narrow the window (start, end) or the filter{other}", param="start")
    if method == "h3":
        import h3

        coords = conn.execute(sa.text(f"SELECT ST_Y(p), ST_X(p) FROM ({source}) s"), params).all()
        groups: dict[str, list[tuple[float, float]]] = {}
        for y, x in coords:
            groups.setdefault(h3.latlng_to_cell(y, x, h3_resolution), []).append((x, y))
        clusters = []
        for cell, pts in groups.items():
            if len(pts) >= min_points:
                ring = [(lng, lat) for lat, lng in h3.cell_to_boundary(cell)]
                xs, ys = zip(*pts, strict=True)
                clusters.append({"count": len(pts), "centroid": {"type": "Point", "coordinates": [
                    sum(xs) / len(xs), sum(ys) / len(ys)]}, "hull": shapely.geometry.mapping(Polygon(ring)),
                    "cell": cell})
        clusters.sort(key=lambda c: -c["count"])
    else:
        if method == "dbscan":
            grouped = (f"SELECT ST_ClusterDBSCAN(ST_Transform(p, :srid), eps => :eps, minpoints => :minpts) "
                       f"OVER () AS cid, p FROM ({source}) s")
        else:
            grouped = (f"SELECT floor(ST_X(ST_Transform(p, :srid)) / :cell)::bigint || ':' || "
                       f"floor(ST_Y(ST_Transform(p, :srid)) / :cell)::bigint AS cid, p FROM ({source}) s")
        rows = conn.execute(sa.text(
            f"SELECT cid::text AS cid, count(*) AS n, ST_AsGeoJSON(ST_Centroid(ST_Collect(p)), 7) AS centroid, "
            f"ST_AsGeoJSON(ST_ConvexHull(ST_Collect(p)), 7) AS hull FROM ({grouped}) g WHERE cid IS NOT NULL "
            f"GROUP BY cid HAVING count(*) >= :minpts ORDER BY n DESC LIMIT {int(limit)}"), params).mappings().all()
        clusters = [{"count": int(r["n"]), "centroid": json.loads(r["centroid"]), "hull": json.loads(r["hull"]),
                     "cell": r["cid"] if method == "grid" else None} for r in rows]
    ranked = [{"rank": i + 1, **c} for i, c in enumerate(clusters[:limit])]
    return {"layer": layer.id, "method": method, "clusters": ranked}
