"""Response by road over HTTP (``/analysis/route``, ``nearest-by-time``, ``reach``, ``travel-matrix``, ``network``).

The same functions as the CLI and notebooks (``gis_ioc.routing``); the network is made again first when a road
layer has changed since it was made. Every route runs under the heavy-work limit.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy.engine import Engine

from gis_ioc import db, limits, routing
from gis_ioc.catalog import Catalog
from gis_ioc.errors import InvalidInput
from gis_ioc.web.analysis import BIGINT, GEOJSON, Filter, Lat, LayerId, Lon, Moment, _moment
from gis_ioc.web.deps import CatalogDep, EngineDep, Heavy
from gis_ioc.web.formats import json_response

router = APIRouter(prefix="/analysis", tags=["Routing"], dependencies=[Heavy])
Point = Annotated[str, Query(max_length=60, description="lon,lat (CRS84)", examples=["108.003,14.35"])]
Points = Annotated[str, Query(max_length=4000, description="lon,lat pairs separated by ;")]


def _ready(request: Request, engine: Engine, catalog: Catalog) -> None:
    """The network as the roads are now (the listener's versions spare a query when nothing changed)."""
    routing.ensure(engine, catalog, request.app.state.listener.versions())


@router.get("/route", summary="The fastest way by road", operation_id="route", response_class=Response,
            responses={200: {"content": {GEOJSON: {}}, "description": "A Feature: the route, its time and steps"}})
def route(request: Request, engine: EngineDep, catalog: CatalogDep, from_: Annotated[str, Query(
              alias="from", max_length=60, description="lon,lat (CRS84)")], to: Point,
          via: Annotated[str | None, Query(max_length=600, description="lon,lat pairs separated by ;")] = None,
          depart_at: Moment = None) -> Response:
    """The fastest way by road from one point to another (through ``via``): geometry, length, time, steps.

    When no road leads there the answer says so (``reachable: false`` and why), with no geometry.
    """
    start = routing.parse_points(from_, "from", 1)[0]
    end = routing.parse_points(to, "to", 1)[0]
    stops = routing.parse_points(via, "via", routing.MAX_VIA) if via else []
    _ready(request, engine, catalog)
    with db.autocommit(engine) as conn:  # reads only: no BEGIN and ROLLBACK round trips
        found = routing.route(conn, catalog, start, end, stops, _moment(depart_at, "depart_at"))
    return json_response(found, GEOJSON)


@router.get("/nearest-by-time", summary="The facilities soonest there by road", operation_id="nearestByTime",
            response_class=Response,
            responses={200: {"content": {GEOJSON: {}}, "description": "A FeatureCollection of routes"}})
def nearest_by_time(request: Request, engine: EngineDep, catalog: CatalogDep, layer: LayerId, filter: Filter = None,
                    lon: Lon = None, lat: Lat = None,
                    incident: Annotated[int | None, Query(ge=1, le=BIGINT, description="To this incident")] = None,
                    k: Annotated[int, Query(ge=1, le=routing.MAX_K, description="How many")] = 3) -> Response:
    """The k features (``filter``: ``kind = 'fire_station'``) that reach a point or an incident soonest by road.

    Each with its time, road and straight-line distance, and route; ``nearest_by_distance`` says whether the
    nearest in a straight line is also the soonest there.
    """
    _ready(request, engine, catalog)
    with db.autocommit(engine) as conn:  # reads only: no BEGIN and ROLLBACK round trips
        found = routing.nearest_by_time(conn, catalog, layer, filter_text=filter, lon=lon, lat=lat,
                                        incident=incident, k=k)
    return json_response(found, GEOJSON)


@router.get("/reach", summary="Service areas: what the facilities reach by road in time", operation_id="reach",
            response_class=Response,
            responses={200: {"content": {GEOJSON: {}}, "description": "A FeatureCollection of areas"}})
def reach(request: Request, engine: EngineDep, catalog: CatalogDep, layer: LayerId, filter: Filter = None,
          minutes: Annotated[str, Query(max_length=60, description="Minutes, comma-separated (at most "
                                        f"{routing.MAX_THRESHOLDS}, each at most {routing.MAX_MINUTES})")]
          = "10,20,30",
          by_commune: Annotated[bool, Query(description="Also each commune's share reached")] = True,
          window_days: Annotated[int, Query(ge=1, le=limits.MAX_WINDOW_DAYS,
                                            description="Incidents of the last days (shares)")] = 365,
          ) -> Response:
    """Areas reached by road from the facilities within each time (and a 3-minute walk from the road)."""
    try:
        times = [float(m) for m in minutes.split(",") if m.strip()]
    except ValueError:
        raise InvalidInput(f"minutes: {minutes[:40]!r} is not minutes separated by commas", param="minutes") from None
    _ready(request, engine, catalog)
    with db.autocommit(engine) as conn:  # reads only: no BEGIN and ROLLBACK round trips
        found = routing.reach(conn, catalog, layer, filter_text=filter, minutes=times, by_commune=by_commune,
                              window_days=window_days)
    return json_response(found, GEOJSON)


@router.get("/travel-matrix", summary="Travel times between places", operation_id="travelMatrix")
def travel_matrix(request: Request, engine: EngineDep, catalog: CatalogDep, origins: Points,
                  destinations: Points) -> Response:
    """Seconds by road from each origin to each destination (null: no road leads there)."""
    a = routing.parse_points(origins, "origins", routing.MAX_MATRIX)
    b = routing.parse_points(destinations, "destinations", routing.MAX_MATRIX)
    _ready(request, engine, catalog)
    with db.autocommit(engine) as conn:  # reads only: no BEGIN and ROLLBACK round trips
        found = routing.travel_matrix(conn, catalog, a, b)
    return json_response(found)


@router.get("/network", summary="The road network: parts, dangling ends, facilities it does not reach",
            operation_id="networkCheck")
def network(request: Request, engine: EngineDep, catalog: CatalogDep) -> Response:
    """What ``gis-ioc network check`` prints: how the network holds together."""
    _ready(request, engine, catalog)
    with db.autocommit(engine) as conn:  # reads only: no BEGIN and ROLLBACK round trips
        found = routing.check(conn, catalog)
    return json_response(found)
