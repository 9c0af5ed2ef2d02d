"""The IOC spatial operations: locate, nearest, within, camera field of view, statistics per unit.

Each operation exists once, here, and is called by the HTTP API, the CLI and notebooks. Distances
are geodesic (PostGIS geography, WGS 84), in metres; areas in square kilometres.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import shapely
import shapely.geometry
import sqlalchemy as sa
from pyproj import Geod
from shapely.geometry import Polygon
from sqlalchemy.dialects.postgresql import psycopg2 as postgresql_psycopg2
from sqlalchemy.engine import Connection

from gis_ioc import queries
from gis_ioc.catalog import Catalog, Layer, PropertyType, quote_table
from gis_ioc.errors import InvalidInput, LayerNotFound

GEOD = Geod(ellps="WGS84")
MAX_K = 1000
LEVELS = ("province", "district", "commune")
ON_BOUNDARY_DEG = 1e-9


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def check_point(lon: float, lat: float) -> None:
    """Longitude and latitude in range, or a 400 naming the parameter."""
    if not (math.isfinite(lon) and -180 <= lon <= 180):
        raise InvalidInput(f"lon: {lon} is not a longitude between -180 and 180", param="lon")
    if not (math.isfinite(lat) and -90 <= lat <= 90):
        raise InvalidInput(f"lat: {lat} is not a latitude between -90 and 90", param="lat")


def _point_sql(lon: float, lat: float) -> str:
    return f"ST_SetSRID(ST_MakePoint({float(lon)!r}, {float(lat)!r}), 4326)"


# -- locate ---------------------------------------------------------------------------------------


def locate(conn: Connection, lon: float, lat: float, at: date | None = None) -> dict[str, Any]:
    """The commune, district and province containing a point, as in force on ``at`` (default today).

    A point on a shared boundary (within ``ON_BOUNDARY_DEG``, about 0.1 mm, so that floating-point
    rounding does not pick a side) belongs to every unit it touches; the one with the smallest code is
    returned first (``units`` lists them all). A point outside every unit says so.
    """
    check_point(lon, lat)
    on = at or date.today()
    rows = conn.execute(
        sa.text(
            "SELECT code, level, unit_type, name, parent_code, valid_from, valid_to FROM admin_units "
            "WHERE ST_DWithin(geom, ST_SetSRID(ST_MakePoint(:x, :y), 4326), :tolerance) "
            "AND valid_from <= :on AND (valid_to IS NULL OR valid_to > :on) ORDER BY level, code"
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


def _condition(layer: Layer, filter_text: str | None) -> tuple[str, dict[str, Any]]:
    """A CQL2 filter as SQL on the table alias ``t``, with its bound values (compiled by SQLAlchemy)."""
    if not filter_text:
        return "TRUE", {}
    table = queries.table_of(layer).alias("t")
    expression = queries.Cql2ToSql(layer, table)(queries.parse_filter(filter_text, None))  # type: ignore[arg-type]
    compiled = expression.compile(dialect=_NAMED, compile_kwargs={"render_postcompile": True})
    return str(compiled), dict(compiled.params)


_NAMED = postgresql_psycopg2.dialect(paramstyle="named")


def _layer(catalog: Catalog, conn: Connection, layer_id: str) -> Layer:
    """A layer by id; an unknown one is a 400 naming the parameter."""
    try:
        return catalog.get(layer_id, conn)
    except LayerNotFound as err:
        raise InvalidInput(f"layer: {err.message}", param="layer") from None


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
    check_point(lon, lat)
    return lon, lat, None


def _feature_rows(conn: Connection, layer: Layer, where: str, params: dict[str, Any], order: str, limit: int,
                  distance_sql: str) -> list[dict[str, Any]]:
    props = ", ".join(f"'{name}', t.{_ident(name)}" for name in layer.properties if name != layer.id_column)
    sql = (f"SELECT t.{_ident(layer.id_column)} AS id, json_build_object({props}) AS properties, "
           f"ST_AsGeoJSON(t.{_ident(layer.geometry.column)}, 7)::json AS geometry, {distance_sql} AS distance_m "
           f"FROM {quote_table(layer.table)} t WHERE {where} ORDER BY {order} LIMIT {int(limit)}")
    return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]


def nearest(conn: Connection, catalog: Catalog, layer_id: str, *, lon: float | None = None,
            lat: float | None = None, incident: int | None = None, k: int = 5,
            max_distance_m: float | None = None, filter_text: str | None = None) -> dict[str, Any]:
    """The k nearest features with their geodesic distance in metres.

    Index-assisted and exact: the KNN operator (``<->``) on the GiST index proposes candidates; the
    k-th candidate's exact distance bounds the answer, and a second pass takes every feature within
    that geodesic distance (a box test on the index, then geography), so no closer feature is missed.
    """
    layer = _layer(catalog, conn, layer_id)
    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"k: {k} is not between 1 and {MAX_K}", param="k")
    if max_distance_m is not None and not (math.isfinite(max_distance_m) and max_distance_m >= 0):
        raise InvalidInput(f"max_distance_m: {max_distance_m} is not a distance in metres >= 0", param="max_distance_m")
    x, y, skip = _origin(conn, catalog, lon, lat, incident)
    where, params = _condition(layer, filter_text)
    if skip is not None and layer.id == "incidents":
        where += " AND t.id <> :skip"
        params["skip"] = skip
    geom = f"t.{_ident(layer.geometry.column)}"
    point = _point_sql(x, y)
    exact = f"ST_Distance({geom}::geography, {point}::geography)"
    if max_distance_m is not None:
        where += f" AND {_within_sql(geom, x, y, max_distance_m)}"
    candidates = conn.execute(sa.text(
        f"SELECT {exact} FROM {quote_table(layer.table)} t WHERE {where} ORDER BY {geom} <-> {point} "
        f"LIMIT {max(4 * k, k + 16)}"), params).scalars().all()
    if not candidates:
        rows: list[dict[str, Any]] = []
    else:
        bound = sorted(candidates)[min(k, len(candidates)) - 1] if len(candidates) >= k else None
        final_where = where if bound is None else f"{where} AND {_within_sql(geom, x, y, bound + 0.001)}"
        rows = _feature_rows(conn, layer, final_where, params, f"{exact}, t.{_ident(layer.id_column)}", k, exact)
    return {"layer": layer.id, "origin": {"lon": x, "lat": y, "incident": incident}, "k": k,
            "features": [_feature(r) for r in rows]}


def _within_sql(geom: str, lon: float, lat: float, metres: float) -> str:
    """Within a geodesic distance: a lon/lat box on the index first, then the exact test."""
    reach = min(89.0, abs(lat) + metres / 110_000)
    degrees = metres / (111_000 * math.cos(math.radians(reach)))
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
            "SELECT ST_AsGeoJSON(geom) FROM admin_units WHERE code = :c AND valid_from <= :on "
            "AND (valid_to IS NULL OR valid_to > :on) ORDER BY level LIMIT 1"), {"c": admin_code, "on": on}).scalar()
        if found is None:
            raise InvalidInput(f"admin_code: no unit {admin_code!r} in force on {on.isoformat()}", param="admin_code")
        return str(found)
    if polygon is not None:
        try:
            shape = (shapely.geometry.shape(json.loads(polygon)) if polygon.lstrip().startswith("{")
                     else shapely.from_wkt(polygon))
        except Exception as err:
            raise InvalidInput(f"polygon: not GeoJSON or WKT ({str(err).splitlines()[0]})", param="polygon") from None
        if shape.geom_type not in ("Polygon", "MultiPolygon"):
            raise InvalidInput(f"polygon: a {shape.geom_type} is not an area", param="polygon")
        if not shape.is_valid:
            raise InvalidInput(f"polygon: invalid ({shapely.is_valid_reason(shape)})", param="polygon")
        return json.dumps(shapely.geometry.mapping(shape))
    assert radius_m is not None
    if not (math.isfinite(radius_m) and radius_m > 0):
        raise InvalidInput(f"radius_m: {radius_m} is not a positive distance in metres", param="radius_m")
    if lon is None or lat is None:
        raise InvalidInput("lon, lat: a circle needs its centre", param="lon")
    check_point(lon, lat)
    return json.dumps(shapely.geometry.mapping(geodesic_circle(lon, lat, radius_m)))


def within(conn: Connection, catalog: Catalog, layer_id: str, area_geojson: str,
           filter_text: str | None = None, limit: int = 10_000) -> dict[str, Any]:
    """The features of a layer inside an area (touching its inside or its boundary)."""
    layer = _layer(catalog, conn, layer_id)
    where, params = _condition(layer, filter_text)
    params["area"] = area_geojson
    geom = f"t.{_ident(layer.geometry.column)}"
    where += f" AND ST_Intersects({geom}, ST_SetSRID(ST_GeomFromGeoJSON(:area), 4326))"
    rows = _feature_rows(conn, layer, where, params, f"t.{_ident(layer.id_column)}", limit, "NULL")
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
    check_point(lon, lat)
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


@dataclass(frozen=True)
class Window:
    """A time window on a layer's datetime column (either end may be open)."""

    start: Any = None
    end: Any = None


def stats(conn: Connection, catalog: Catalog, layer_id: str, by: str = "district", *,
          filter_text: str | None = None, window: Window | None = None, at: date | None = None,
          breakdown: str | None = None) -> dict[str, Any]:
    """Count, count per km² and a breakdown by one property, per administrative unit.

    Units are those of level ``by`` in force on ``at``; every unit is listed, those with nothing too.
    """
    layer = _layer(catalog, conn, layer_id)
    if by not in LEVELS:
        raise InvalidInput(f"by: {by!r} is not one of {', '.join(LEVELS)}", param="by")
    if breakdown is not None:
        prop = layer.property(breakdown, "breakdown")
        if prop.type not in (PropertyType.string, PropertyType.integer, PropertyType.boolean):
            raise InvalidInput(f"breakdown: {breakdown!r} is a {prop.type.value}; choose a category", param="breakdown")
    on = at or date.today()
    where, params = _condition(layer, filter_text)
    geom = f"t.{_ident(layer.geometry.column)}"
    if window is not None and (window.start is not None or window.end is not None):
        if not layer.datetime_column:
            raise InvalidInput(f"window: layer {layer.id!r} has no time column", param="window")
        column = f"t.{_ident(layer.datetime_column)}"
        if window.start is not None:
            where += f" AND {column} >= :w_start"
            params["w_start"] = window.start
        if window.end is not None:
            where += f" AND {column} < :w_end"
            params["w_end"] = window.end
    params.update({"level": by, "on": on})
    only_points = [t.value for t in layer.geometry.types] == ["Point"]
    point = geom if only_points else f"ST_PointOnSurface({geom})"  # a feature counts in one unit
    group = f", t.{_ident(breakdown)}::text" if breakdown else ", NULL::text"
    sql = (
        "WITH units AS (SELECT code, name, geom, ST_Area(geom::geography) / 1e6 AS km2 FROM admin_units "
        "WHERE level = :level AND valid_from <= :on AND (valid_to IS NULL OR valid_to > :on)), "
        f"hits AS (SELECT u.code, {group.lstrip(', ')} AS category, count(*) AS n FROM units u "
        f"JOIN {quote_table(layer.table)} t ON ST_Intersects(u.geom, {point}) WHERE {where} "
        "GROUP BY u.code, category) "
        "SELECT u.code, u.name, u.km2, h.category, coalesce(h.n, 0) AS n FROM units u "
        "LEFT JOIN hits h ON h.code = u.code ORDER BY u.code, h.category"
    )
    per_unit: dict[str, dict[str, Any]] = {}
    for r in conn.execute(sa.text(sql), params).mappings():
        entry = per_unit.setdefault(r["code"], {"code": r["code"], "name": r["name"], "area_km2": round(r["km2"], 3),
                                                "count": 0, "breakdown": {}})
        entry["count"] += int(r["n"])
        if breakdown and r["category"] is not None:
            entry["breakdown"][r["category"]] = int(r["n"])
    units = list(per_unit.values())
    if not units:
        hint = ""
        if by == "district":
            hint = " (districts were abolished on 2025-07-01: give an earlier at= or by=commune)"
        raise InvalidInput(f"by: no {by} units in force on {on.isoformat()}{hint}", param="by")
    for u in units:
        u["per_km2"] = round(u["count"] / u["area_km2"], 4) if u["area_km2"] else None
        if not breakdown:
            del u["breakdown"]
    return {"layer": layer.id, "by": by, "at": on.isoformat(), "units": units,
            "total": sum(u["count"] for u in units)}
