"""The IOC spatial operations over HTTP (``/analysis/…``): the same functions as the CLI and notebooks."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from gis_ioc import analysis, queries
from gis_ioc.errors import InvalidInput
from gis_ioc.web.deps import CatalogDep, EngineDep

router = APIRouter(prefix="/analysis", tags=["Analysis"])
GEOJSON = "application/geo+json"


def _date(value: str | None, param: str = "at") -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{param}: {value!r} is not a date (YYYY-MM-DD)", param=param) from None


def _number(value: str | None, param: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise InvalidInput(f"{param}: {value!r} is not a number", param=param) from None


def _int(value: str | None, param: str, default: int) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{param}: {value!r} is not a whole number", param=param) from None


def _collection(result: dict[str, Any]) -> Response:
    body = {"type": "FeatureCollection", **{k: v for k, v in result.items() if k != "features"},
            "features": result["features"]}
    return Response(json.dumps(body, default=str), media_type=GEOJSON)


Text = Annotated[str | None, Query()]


@router.get("/locate", summary="Which commune, district and province", operation_id="locate")
def locate(engine: EngineDep, lon: Text = None, lat: Text = None,
           at: Annotated[str | None, Query(description="Date (YYYY-MM-DD); default today")] = None) -> JSONResponse:
    """The administrative units containing a point, as in force on a date (before or after the 2025 reform)."""
    x, y = _number(lon, "lon"), _number(lat, "lat")
    if x is None or y is None:
        raise InvalidInput("lon, lat: both are needed", param="lon" if x is None else "lat")
    with engine.connect() as conn:
        return JSONResponse(analysis.locate(conn, x, y, _date(at)))


@router.get("/nearest", summary="The k nearest features", operation_id="nearest")
def nearest(engine: EngineDep, catalog: CatalogDep,
            layer: Annotated[str, Query(description="Layer id, e.g. cameras")],
            lon: Text = None, lat: Text = None,
            incident: Annotated[str | None, Query(description="From this incident instead of a point")] = None,
            k: Annotated[str | None, Query(description=f"1 to {analysis.MAX_K}, default 5")] = None,
            max_distance_m: Text = None,
            filter: Annotated[str | None, Query(description="CQL2 text, e.g. status = 'online'")] = None,
            ) -> Response:
    """Nearest features with their geodesic distance in metres (GeoJSON, nearest first)."""
    with engine.connect() as conn:
        result = analysis.nearest(
            conn, catalog, layer, lon=_number(lon, "lon"), lat=_number(lat, "lat"),
            incident=_int(incident, "incident", 0) if incident is not None else None, k=_int(k, "k", 5),
            max_distance_m=_number(max_distance_m, "max_distance_m"), filter_text=filter)
    return _collection(result)


@router.get("/within", summary="Features inside an area", operation_id="within")
def within(engine: EngineDep, catalog: CatalogDep,
           layer: Annotated[str, Query(description="Layer id")],
           admin_code: Annotated[str | None, Query(description="An administrative unit's code")] = None,
           polygon: Annotated[str | None, Query(description="A polygon, GeoJSON or WKT (CRS84)")] = None,
           lon: Text = None, lat: Text = None, radius_m: Text = None,
           at: Annotated[str | None, Query(description="Date the admin unit is in force")] = None,
           filter: Annotated[str | None, Query(description="CQL2 text")] = None) -> Response:
    """Features inside an admin unit, a polygon or a circle."""
    with engine.connect() as conn:
        area = analysis.area_geometry(conn, admin_code=admin_code, polygon=polygon, lon=_number(lon, "lon"),
                                      lat=_number(lat, "lat"), radius_m=_number(radius_m, "radius_m"), at=_date(at))
        result = analysis.within(conn, catalog, layer, area, filter)
    return _collection(result)


@router.get("/cameras/fov", summary="Camera fields of view as polygons", operation_id="cameraFov")
def camera_fov(engine: EngineDep,
               bbox: Annotated[str | None, Query(description="minlon,minlat,maxlon,maxlat")] = None,
               status: Annotated[str | None, Query(description="online, offline or maintenance")] = None,
               limit: Annotated[str | None, Query(description="At most this many cameras (default 5000)")] = None,
               ) -> Response:
    """The field-of-view sector of each camera (a layer the map can show)."""
    count = _int(limit, "limit", 5000)
    box = queries.parse_bbox(bbox) if bbox is not None else None
    with engine.connect() as conn:
        features = analysis.fov_layer(conn, bbox=box, status=status, limit=count)
    return _collection({"features": features})


@router.get("/cameras/seeing", summary="Cameras that see a point", operation_id="camerasSeeing")
def cameras_seeing(engine: EngineDep, lon: Text = None, lat: Text = None,
                   online: Annotated[bool, Query(description="Online cameras only")] = False) -> JSONResponse:
    """The cameras whose field of view holds a point, nearest first."""
    x, y = _number(lon, "lon"), _number(lat, "lat")
    if x is None or y is None:
        raise InvalidInput("lon, lat: both are needed", param="lon" if x is None else "lat")
    with engine.connect() as conn:
        return JSONResponse({"lon": x, "lat": y, "cameras": analysis.cameras_seeing(conn, x, y, online)})


@router.get("/stats", summary="Counts per administrative unit", operation_id="stats")
def stats(engine: EngineDep, catalog: CatalogDep,
          layer: Annotated[str, Query(description="Layer id, e.g. incidents")],
          by: Annotated[str, Query(description="province, district or commune")] = "district",
          start: Annotated[str | None, Query(description="Window start (RFC 3339)")] = None,
          end: Annotated[str | None, Query(description="Window end (RFC 3339)")] = None,
          at: Annotated[str | None, Query(description="Date of the boundaries (default today)")] = None,
          breakdown: Annotated[str | None, Query(description="A property to break counts down by")] = None,
          filter: Annotated[str | None, Query(description="CQL2 text")] = None,
          through_lineage: Annotated[bool, Query(description="Count incidents by their recorded commune, carried to "
                                                             "the units of `at` through the lineage table")] = False,
          ) -> Response:
    """Count, per km² and a breakdown by one property, for every unit of a level."""
    window = analysis.Window(_moment(start, "start"), _moment(end, "end"))
    with engine.connect() as conn:
        result = analysis.stats(conn, catalog, layer, by, filter_text=filter, window=window, at=_date(at),
                                breakdown=breakdown, through_lineage=through_lineage)
    return Response(json.dumps(result), media_type="application/json")


@router.get("/cameras/coverage", summary="Camera coverage of an area", operation_id="cameraCoverage")
def camera_coverage(engine: EngineDep,
                    admin_code: Annotated[str | None, Query(description="An administrative unit's code")] = None,
                    polygon: Annotated[str | None, Query(description="A polygon, GeoJSON or WKT")] = None,
                    lon: Text = None, lat: Text = None, radius_m: Text = None,
                    at: Annotated[str | None, Query(description="Date of the boundaries")] = None,
                    by: Annotated[str | None, Query(description="district or commune: per unit too")] = None,
                    online: Annotated[bool, Query(description="Online cameras only")] = False) -> Response:
    """Covered share of an area (geodesic), the uncovered parts as polygons, and per unit."""
    with engine.connect() as conn:
        area = analysis.area_geometry(conn, admin_code=admin_code, polygon=polygon, lon=_number(lon, "lon"),
                                      lat=_number(lat, "lat"), radius_m=_number(radius_m, "radius_m"), at=_date(at))
        result = analysis.coverage(conn, area, online_only=online, by=by, at=_date(at))
    return Response(json.dumps(result), media_type="application/json")


@router.get("/impact", summary="What an incident reaches", operation_id="impact")
def impact(engine: EngineDep, catalog: CatalogDep,
           incident: Annotated[str | None, Query(description="An incident id")] = None,
           polygon: Annotated[str | None, Query(description="Or an area, GeoJSON or WKT")] = None,
           radius_m: Annotated[str | None, Query(description="Metres around it (default 1000)")] = None,
           layers: Annotated[str, Query(description="Layers to look in, comma-separated")] = "infrastructure",
           ) -> Response:
    """Features within a radius of an incident (with distances) and, for an area, the roads it cuts."""
    with engine.connect() as conn:
        result = analysis.impact(conn, catalog, incident=_int(incident, "incident", 0) if incident else None,
                                 polygon=polygon, radius_m=_number(radius_m, "radius_m") or 1000.0,
                                 layers=tuple(x.strip() for x in layers.split(",") if x.strip()))
    return Response(json.dumps(result, default=str), media_type="application/json")


@router.get("/hotspots", summary="Clusters of features, ranked", operation_id="hotspots")
def hotspots(engine: EngineDep, catalog: CatalogDep,
             layer: Annotated[str, Query(description="Layer id, e.g. incidents")] = "incidents",
             method: Annotated[str, Query(description="dbscan, grid or h3")] = "dbscan",
             eps_m: Text = None, min_points: Text = None, cell_m: Text = None, h3_resolution: Text = None,
             start: Annotated[str | None, Query(description="Window start (RFC 3339)")] = None,
             end: Annotated[str | None, Query(description="Window end (RFC 3339)")] = None,
             filter: Annotated[str | None, Query(description="CQL2 text")] = None,
             limit: Text = None) -> Response:
    """Hotspots with count, centroid and hull, largest first."""
    with engine.connect() as conn:
        result = analysis.hotspots(
            conn, catalog, layer, method=method, eps_m=_number(eps_m, "eps_m") or 300.0,
            min_points=_int(min_points, "min_points", 5), cell_m=_number(cell_m, "cell_m") or 1000.0,
            h3_resolution=_int(h3_resolution, "h3_resolution", 8),
            window=analysis.Window(_moment(start, "start"), _moment(end, "end")), filter_text=filter,
            limit=_int(limit, "limit", 50))
    return Response(json.dumps(result), media_type="application/json")


def _moment(value: str | None, param: str) -> datetime | None:
    if value is None:
        return None
    start, _ = queries.parse_datetime(value, param)
    return start
