"""The IOC spatial operations over HTTP (``/analysis/…``): the same functions as the CLI and notebooks.

Parameters are typed with their ranges (``limits``), so the OpenAPI document states them and a value
outside is a 400 naming the parameter. Every route runs under the heavy-work limit.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from gis_ioc import analysis, limits, queries
from gis_ioc.web.deps import CatalogDep, Heavy, ReadEngineDep

router = APIRouter(prefix="/analysis", tags=["Analysis"], dependencies=[Heavy])
GEOJSON = "application/geo+json"
BIGINT = 2**63 - 1
FEATURES: dict[int | str, dict[str, Any]] = {200: {"content": {GEOJSON: {}}, "description": "A FeatureCollection"}}


def _collection(result: dict[str, Any]) -> Response:
    body = {"type": "FeatureCollection", **{k: v for k, v in result.items() if k != "features"},
            "features": result["features"]}
    return Response(json.dumps(body, default=str), media_type=GEOJSON)


def _moment(value: str | None, param: str) -> datetime | None:
    if value is None:
        return None
    start, _ = queries.parse_datetime(value, param)
    return start


Lon = Annotated[float | None, Query(ge=-180, le=180, allow_inf_nan=False, description="Longitude (CRS84)")]
Lat = Annotated[float | None, Query(ge=-90, le=90, allow_inf_nan=False, description="Latitude (CRS84)")]
LayerId = Annotated[str, Query(max_length=63, description="Layer id, e.g. incidents")]
At = Annotated[date | None, Query(description="Date the administrative units are in force (default today)")]
Filter = Annotated[str | None, Query(max_length=limits.MAX_FILTER_CHARS, description="CQL2 text, e.g. "
                                                                                     "status = 'online'")]
Radius = Annotated[float | None, Query(gt=0, le=limits.MAX_RADIUS_M, allow_inf_nan=False,
                                       description="Radius of a circle around lon, lat, in metres")]
Polygon = Annotated[str | None, Query(max_length=limits.MAX_FILTER_CHARS,
                                      description="A polygon, GeoJSON or WKT (CRS84; EWKT with SRID=4326 too), at most "
                                                  f"{limits.MAX_AREA_SPAN_DEG:g}° across")]
AdminCode = Annotated[str | None, Query(max_length=20, description="An administrative unit's code")]
Moment = Annotated[str | None, Query(max_length=40, description="RFC 3339 date-time or date")]
IncidentId = Annotated[int | None, Query(ge=1, le=BIGINT, description="An incident id")]


@router.get("/locate", summary="Which commune, district and province", operation_id="locate")
def locate(engine: ReadEngineDep, lon: Annotated[float, Query(ge=-180, le=180, allow_inf_nan=False)],
           lat: Annotated[float, Query(ge=-90, le=90, allow_inf_nan=False)], at: At = None) -> JSONResponse:
    """The administrative units containing a point, as in force on a date (before or after the 2025 reform)."""
    with engine.connect() as conn:
        return JSONResponse(analysis.locate(conn, lon, lat, at))


@router.get("/nearest", summary="The k nearest features", operation_id="nearest",
            response_class=Response, responses=FEATURES)
def nearest(engine: ReadEngineDep, catalog: CatalogDep, layer: LayerId, lon: Lon = None, lat: Lat = None,
            incident: Annotated[int | None, Query(ge=1, le=BIGINT, description="From this incident instead of a "
                                                                              "point")] = None,
            k: Annotated[int, Query(ge=1, le=analysis.MAX_K, description="How many")] = 5,
            max_distance_m: Annotated[float | None, Query(ge=0, le=limits.MAX_RADIUS_M, allow_inf_nan=False,
                                                          description="Only this close, in metres")] = None,
            filter: Filter = None) -> Response:
    """Nearest features with their geodesic distance in metres (GeoJSON, nearest first)."""
    with engine.connect() as conn:
        result = analysis.nearest(conn, catalog, layer, lon=lon, lat=lat, incident=incident, k=k,
                                  max_distance_m=max_distance_m, filter_text=filter)
    return _collection(result)


@router.get("/within", summary="Features inside an area", operation_id="within",
            response_class=Response, responses=FEATURES)
def within(engine: ReadEngineDep, catalog: CatalogDep, layer: LayerId, admin_code: AdminCode = None,
           polygon: Polygon = None, lon: Lon = None, lat: Lat = None, radius_m: Radius = None, at: At = None,
           filter: Filter = None,
           limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT, description="At most this many")]
           = queries.MAX_LIMIT) -> Response:
    """Features inside an admin unit, a polygon or a circle."""
    with engine.connect() as conn:
        area = analysis.area_geometry(conn, admin_code=admin_code, polygon=polygon, lon=lon, lat=lat,
                                      radius_m=radius_m, at=at)
        result = analysis.within(conn, catalog, layer, area, filter, limit=limit)
    return _collection(result)


@router.get("/cameras/fov", summary="Camera fields of view as polygons", operation_id="cameraFov",
            response_class=Response, responses=FEATURES)
def camera_fov(engine: ReadEngineDep,
               bbox: Annotated[str | None, Query(max_length=200, description="minlon,minlat,maxlon,maxlat")] = None,
               status: Annotated[Literal["online", "offline", "maintenance"] | None, Query()] = None,
               limit: Annotated[int, Query(ge=1, le=50_000, description="At most this many cameras")] = 5000,
               ) -> Response:
    """The field-of-view sector of each camera (a layer the map can show)."""
    box = queries.parse_bbox(bbox) if bbox is not None else None
    with engine.connect() as conn:
        features = analysis.fov_layer(conn, bbox=box, status=status, limit=limit)
    return _collection({"features": features})


@router.get("/cameras/seeing", summary="Cameras that see a point", operation_id="camerasSeeing")
def cameras_seeing(engine: ReadEngineDep, lon: Annotated[float, Query(ge=-180, le=180, allow_inf_nan=False)],
                   lat: Annotated[float, Query(ge=-90, le=90, allow_inf_nan=False)],
                   online: Annotated[bool, Query(description="Online cameras only")] = False) -> JSONResponse:
    """The cameras whose field of view holds a point, nearest first."""
    with engine.connect() as conn:
        return JSONResponse({"lon": lon, "lat": lat, "cameras": analysis.cameras_seeing(conn, lon, lat, online)})


@router.get("/stats", summary="Counts per administrative unit", operation_id="stats")
def stats(engine: ReadEngineDep, catalog: CatalogDep, layer: LayerId,
          by: Annotated[Literal["province", "district", "commune"], Query()] = "district",
          start: Moment = None, end: Moment = None, at: At = None,
          breakdown: Annotated[str | None, Query(max_length=63, description="A property with a fixed set of "
                                                                            "values to break counts down by")] = None,
          filter: Filter = None,
          through_lineage: Annotated[bool, Query(description="Count incidents by their recorded commune, carried to "
                                                             "the units of `at` through the lineage table")] = False,
          archived: Annotated[bool, Query(description="Count the months archived out of the layer too "
                                                      "(gis-ioc db archive); read from their rows")] = False,
          ) -> Response:
    """Count, per km² and a breakdown by one property, for every unit of a level."""
    window = analysis.Window(_moment(start, "start"), _moment(end, "end"))
    with engine.connect() as conn:
        result = analysis.stats(conn, catalog, layer, by, filter_text=filter, window=window, at=at,
                                breakdown=breakdown, through_lineage=through_lineage, archived=archived)
    return Response(json.dumps(result), media_type="application/json")


@router.get("/cameras/coverage", summary="Camera coverage of an area", operation_id="cameraCoverage")
def camera_coverage(engine: ReadEngineDep, admin_code: AdminCode = None, polygon: Polygon = None, lon: Lon = None,
                    lat: Lat = None, radius_m: Radius = None, at: At = None,
                    by: Annotated[Literal["district", "commune"] | None, Query(description="Per unit too")] = None,
                    online: Annotated[bool, Query(description="Online cameras only")] = False) -> Response:
    """Covered share of an area (geodesic), the uncovered parts as polygons, and per unit."""
    with engine.connect() as conn:
        area = analysis.area_geometry(conn, admin_code=admin_code, polygon=polygon, lon=lon, lat=lat,
                                      radius_m=radius_m, at=at)
        result = analysis.coverage(conn, area, online_only=online, by=by, at=at)
    return Response(json.dumps(result), media_type="application/json")


@router.get("/impact", summary="What an incident reaches", operation_id="impact")
def impact(engine: ReadEngineDep, catalog: CatalogDep, incident: IncidentId = None, polygon: Polygon = None,
           radius_m: Annotated[float, Query(ge=0, le=limits.MAX_RADIUS_M, allow_inf_nan=False,
                                            description="Metres around it")] = 1000.0,
           layers: Annotated[str, Query(max_length=600, description="Layers to look in, comma-separated")]
           = "infrastructure") -> Response:
    """Features within a radius of an incident (with distances) and, for an area, the roads it cuts."""
    with engine.connect() as conn:
        result = analysis.impact(conn, catalog, incident=incident, polygon=polygon, radius_m=radius_m,
                                 layers=tuple(x.strip() for x in layers.split(",") if x.strip()))
    return Response(json.dumps(result, default=str), media_type="application/json")


@router.get("/hotspots", summary="Clusters of features, ranked", operation_id="hotspots")
def hotspots(engine: ReadEngineDep, catalog: CatalogDep, layer: LayerId = "incidents",
             method: Annotated[Literal["dbscan", "grid", "h3"], Query()] = "dbscan",
             eps_m: Annotated[float, Query(gt=0, le=limits.MAX_EPS_M, allow_inf_nan=False,
                                           description="DBSCAN neighbourhood, metres")] = 300.0,
             min_points: Annotated[int, Query(ge=1, le=limits.MAX_MIN_POINTS)] = 5,
             cell_m: Annotated[float, Query(ge=limits.MIN_CELL_M, le=limits.MAX_CELL_M, allow_inf_nan=False,
                                            description="Grid cell side, metres")] = 1000.0,
             h3_resolution: Annotated[int, Query(ge=0, le=limits.MAX_H3_RESOLUTION)] = 8,
             start: Moment = None, end: Moment = None, filter: Filter = None,
             limit: Annotated[int, Query(ge=1, le=1000, description="At most this many clusters")] = 50) -> Response:
    """Hotspots with count, centroid and hull, largest first.

    DBSCAN takes at most ``limits.MAX_DBSCAN_POINTS`` features (it cannot be interrupted), grid and H3
    ``limits.MAX_HOTSPOT_POINTS``: narrow the window or the filter beyond that.
    """
    with engine.connect() as conn:
        result = analysis.hotspots(
            conn, catalog, layer, method=method, eps_m=eps_m, min_points=min_points, cell_m=cell_m,
            h3_resolution=h3_resolution, window=analysis.Window(_moment(start, "start"), _moment(end, "end")),
            filter_text=filter, limit=limit)
    return Response(json.dumps(result), media_type="application/json")
