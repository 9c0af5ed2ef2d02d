"""Response by road over HTTP (``/analysis/route``, ``nearest-by-time``, ``reach``, ``travel-matrix``, ``network``).

The same functions as the CLI and notebooks (``gis_ioc.routing``); the network is made again first when a road
layer has changed since it was made. Every route runs under the heavy-work limit. Each route's parameters are
one query model and its work one answer function, which ``DIRECT`` also offers to the direct path
(``gis_ioc.web.direct``): a request without a key and with a valid query is answered there, without the router.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from gis_ioc import db, limits, road_network, routing, service_areas
from gis_ioc.errors import InvalidInput
from gis_ioc.web.analysis import BIGINT, GEOJSON, Filter, Lat, LayerId, Lon, Moment, _moment
from gis_ioc.web.deps import Heavy
from gis_ioc.web.direct import Direct
from gis_ioc.web.formats import json_response

router = APIRouter(prefix="/analysis", tags=["Routing"], dependencies=[Heavy])
Point = Annotated[str, Query(max_length=60, description="lon,lat (CRS84)", examples=["108.003,14.35"])]
Points = Annotated[str, Query(max_length=4000, description="lon,lat pairs separated by ;")]


def _ready(request: Request) -> road_network.Answering:
    """The network to answer with: as the roads are now, or the last one made while a new one is being made.

    The listener's versions spare a query when nothing changed.
    """
    state = request.app.state
    return routing.ensure_beside(state.engine, state.catalog, state.listener.versions())


def _answered(response: Response, network: road_network.Answering) -> Response:
    """The response, saying which network answered it (``X-Network``)."""
    response.headers["X-Network"] = network.header()
    return response


class RouteQuery(BaseModel):
    """The parameters of ``/analysis/route``."""

    from_: Annotated[str, Query(alias="from", max_length=60, description="lon,lat (CRS84)")]
    to: Point
    via: Annotated[str | None, Query(max_length=600, description="lon,lat pairs separated by ;")] = None
    depart_at: Moment = None


def _route_statement(request: Request, q: RouteQuery) -> routing.OneRow:
    start = routing.parse_points(q.from_, "from", 1)[0]
    end = routing.parse_points(q.to, "to", 1)[0]
    stops = routing.parse_points(q.via, "via", routing.MAX_VIA) if q.via else []
    return routing.route_statement(request.app.state.catalog, start, end, stops, _moment(q.depart_at, "depart_at"))


def route_answer(request: Request, q: RouteQuery) -> Response:
    """The answer of ``/analysis/route``."""
    statement = _route_statement(request, q)
    network = _ready(request)
    with db.autocommit(request.app.state.engine) as conn:  # reads only: no BEGIN and ROLLBACK round trips
        found = statement.run(conn)
    return _answered(Response(found.encode(), media_type=GEOJSON), network)  # written by the database


async def _on_loop(request: Request, statement: Callable[[], routing.OneRow]) -> Response | None:
    """A statement's answer run on the loop lane; None when the lane is off or busy, or the network is stale."""
    state = request.app.state
    if state.loop_lane is None or not road_network.fresh(state.catalog, state.listener.versions()):
        return None  # making the network again is work for a worker thread (``_ready``)
    made = statement()
    found = await state.loop_lane.run(made.sql, made.params)
    if found is None:
        return None
    return _answered(Response(made.finish(found[0]).encode(), media_type=GEOJSON), road_network.answering_fresh())


async def route_on_loop(request: Request, q: RouteQuery) -> Response | None:
    """The answer of ``/analysis/route`` on the event loop; None: the worker thread answers."""
    return await _on_loop(request, lambda: _route_statement(request, q))


@router.get("/route", summary="The fastest way by road", operation_id="route", response_class=Response,
            responses={200: {"content": {GEOJSON: {}}, "description": "A Feature: the route, its time and steps"}})
def route(request: Request, q: Annotated[RouteQuery, Query()]) -> Response:
    """The fastest way by road from one point to another (through ``via``): geometry, length, time, steps.

    When no road leads there the answer says so (``reachable: false`` and why), with no geometry.
    """
    return route_answer(request, q)


class NearestQuery(BaseModel):
    """The parameters of ``/analysis/nearest-by-time``."""

    layer: LayerId
    filter: Filter = None
    lon: Lon = None
    lat: Lat = None
    incident: Annotated[int | None, Query(ge=1, le=BIGINT, description="To this incident")] = None
    k: Annotated[int, Query(ge=1, le=routing.MAX_K, description="How many")] = 3


def _nearest_statement(request: Request, q: NearestQuery, conn: sa.Connection | None) -> routing.OneRow:
    return routing.nearest_statement(conn, request.app.state.catalog, q.layer, filter_text=q.filter, lon=q.lon,
                                     lat=q.lat, incident=q.incident, k=q.k)


def nearest_answer(request: Request, q: NearestQuery) -> Response:
    """The answer of ``/analysis/nearest-by-time``."""
    network = _ready(request)
    with db.autocommit(request.app.state.engine) as conn:  # reads only: no BEGIN and ROLLBACK round trips
        found = _nearest_statement(request, q, conn).run(conn)
    return _answered(Response(found.encode(), media_type=GEOJSON), network)  # written by the database


async def nearest_on_loop(request: Request, q: NearestQuery) -> Response | None:
    """``/analysis/nearest-by-time`` on the event loop, for a built-in layer; None: as ``route_on_loop``."""
    if q.layer not in request.app.state.catalog.builtin:
        return None  # an imported layer is looked up in the database
    return await _on_loop(request, lambda: _nearest_statement(request, q, None))


@router.get("/nearest-by-time", summary="The facilities soonest there by road", operation_id="nearestByTime",
            response_class=Response,
            responses={200: {"content": {GEOJSON: {}}, "description": "A FeatureCollection of routes"}})
def nearest_by_time(request: Request, q: Annotated[NearestQuery, Query()]) -> Response:
    """The k features (``filter``: ``kind = 'fire_station'``) that reach a point or an incident soonest by road.

    Each with its time, road and straight-line distance, and route; ``nearest_by_distance`` says whether the
    nearest in a straight line is also the soonest there.
    """
    return nearest_answer(request, q)


class ReachQuery(BaseModel):
    """The parameters of ``/analysis/reach``."""

    layer: LayerId
    filter: Filter = None
    minutes: Annotated[str, Query(max_length=60, description=(
        f"Minutes, comma-separated (at most {service_areas.MAX_THRESHOLDS}, each at most "
        f"{service_areas.MAX_MINUTES})"))] = "10,20,30"
    by_commune: Annotated[bool, Query(description="Also each commune's share reached")] = True
    window_days: Annotated[int, Query(ge=1, le=limits.MAX_WINDOW_DAYS,
                                      description="Incidents of the last days (shares)")] = 365


def reach_answer(request: Request, q: ReachQuery) -> Response:
    """The answer of ``/analysis/reach``."""
    try:
        times = [float(m) for m in q.minutes.split(",") if m.strip()]
    except ValueError:
        raise InvalidInput(f"minutes: {q.minutes[:40]!r} is not minutes separated by commas",
                           param="minutes") from None
    network = _ready(request)
    with db.autocommit(request.app.state.engine) as conn:  # reads only: no BEGIN and ROLLBACK round trips
        found = service_areas.reach(conn, request.app.state.catalog, q.layer, filter_text=q.filter, minutes=times,
                              by_commune=q.by_commune, window_days=q.window_days)
    return _answered(json_response(found, GEOJSON), network)


@router.get("/reach", summary="Service areas: what the facilities reach by road in time", operation_id="reach",
            response_class=Response,
            responses={200: {"content": {GEOJSON: {}}, "description": "A FeatureCollection of areas"}})
def reach(request: Request, q: Annotated[ReachQuery, Query()]) -> Response:
    """Areas reached by road from the facilities within each time (and a 3-minute walk from the road)."""
    return reach_answer(request, q)


class MatrixQuery(BaseModel):
    """The parameters of ``/analysis/travel-matrix``."""

    origins: Points
    destinations: Points


def matrix_answer(request: Request, q: MatrixQuery) -> Response:
    """The answer of ``/analysis/travel-matrix``."""
    a = routing.parse_points(q.origins, "origins", routing.MAX_MATRIX)
    b = routing.parse_points(q.destinations, "destinations", routing.MAX_MATRIX)
    network = _ready(request)
    with db.autocommit(request.app.state.engine) as conn:  # reads only: no BEGIN and ROLLBACK round trips
        found = routing.travel_matrix(conn, request.app.state.catalog, a, b)
    return _answered(json_response(found), network)


@router.get("/travel-matrix", summary="Travel times between places", operation_id="travelMatrix")
def travel_matrix(request: Request, q: Annotated[MatrixQuery, Query()]) -> Response:
    """Seconds by road from each origin to each destination (null: no road leads there)."""
    return matrix_answer(request, q)


@router.get("/network", summary="The road network: parts, dangling ends, facilities it does not reach",
            operation_id="networkCheck")
def network(request: Request) -> Response:
    """What ``gis-ioc network check`` prints: how the network holds together."""
    network = _ready(request)
    with db.autocommit(request.app.state.engine) as conn:  # reads only: no BEGIN and ROLLBACK round trips
        found = routing.check(conn, request.app.state.catalog)
    return _answered(json_response(found), network)


# the routes the direct path answers (``gis_ioc.web.direct``), by their full path
DIRECT = {
    "/analysis/route": Direct(RouteQuery, route_answer, route_on_loop),
    "/analysis/nearest-by-time": Direct(NearestQuery, nearest_answer, nearest_on_loop),
    "/analysis/reach": Direct(ReachQuery, reach_answer),
    "/analysis/travel-matrix": Direct(MatrixQuery, matrix_answer),
}
