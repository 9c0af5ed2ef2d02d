"""Map views for the wall and the operators: ``/views/wall``, ``/views/incidents/{id}``, ``/views/choropleth``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi import Path as FastPath
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from gis_ioc import desk, incident_view, maps, planning
from gis_ioc.errors import InvalidInput, NotFound, from_database
from gis_ioc.web.deps import KEY_COOKIE, CatalogDep, EngineDep, Heavy, ReadEngineDep, SettingsDep, principal_of

router = APIRouter(prefix="/views", tags=["Map views"])
session_router = APIRouter(prefix="/views", tags=["Map views"])  # reachable without a key: it takes one
SESSION_DAYS = 30


class Memo:
    """A value made once per key (a layer version, a time bucket) and shared by every request.

    One making at a time: requests that want a newer value wait for the making under way, then make the
    next one if it is still not theirs; many walls asking after a change cost one making. A wall would
    rather show figures a moment old than wait or fail: a request that has waited ``WAIT_S`` for someone
    else's making, or whose own making fails because the database is away, gets the last value, marked as
    not fresh. ``get`` returns (value, fresh).
    """

    WAIT_S = 1.0

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._making = False
        self._key: Any = None
        self._value: Any = None

    def get(self, key: Any, make: Callable[[], Any]) -> tuple[Any, bool]:
        """The value for ``key`` (None: not to be kept), made by ``make`` when needed."""
        if key is None:
            return make(), True
        deadline = time.monotonic() + self.WAIT_S
        with self._changed:
            while self._key != key:
                if not self._making:
                    self._making = True
                    break
                left = deadline - time.monotonic()
                if (left <= 0 or not self._changed.wait(left)) and self._value is not None:
                    return self._value, False
            else:
                return self._value, True
        try:
            value = make()
        except Exception as err:
            if self._value is None or from_database(err) is None:
                raise
            return self._value, False  # the database is away: the last figures rather than an error
        else:
            with self._changed:
                self._key, self._value = key, value
            return value, True
        finally:
            with self._changed:
                self._making = False
                self._changed.notify_all()


def _page_per_boundaries(request: Request, memo: Memo, engine: Any, build: Callable[[Any], Any]) -> HTMLResponse:
    """A view's page (``build`` makes its map), made once per version of the boundaries for every request.

    The rest of what it shows comes as tiles, events and API calls; its event stream starts from the last change
    heard before it is served (``maps.with_since``), so none falls between its reads and its stream.
    """
    since = request.app.state.listener.here()  # both before the page is served
    versions = request.app.state.listener.versions()
    key = ("boundaries", versions.get("public.admin_units")) if versions is not None else None

    def make() -> str:
        with engine.connect() as conn:
            return maps.page(build(conn))

    page, _ = memo.get(key, make)
    return HTMLResponse(maps.with_since(page, since, versions))


@router.get("/wall", summary="The wall map", operation_id="viewWall", response_class=HTMLResponse)
def wall(request: Request, engine: ReadEngineDep, catalog: CatalogDep, settings: SettingsDep) -> HTMLResponse:
    """Full-screen dark map: boundaries, infrastructure, cameras with fields of view, incidents, KPIs, live.

    Made once per version of the boundaries (the rest comes as tiles and events), not per request.
    """
    return _page_per_boundaries(request, request.app.state.wall_page, engine,
                                lambda conn: maps.wall(conn, catalog, settings, since=maps.SINCE_MARK,
                                                          versions=maps.VERSIONS_MARK))


@router.get("/wall/kpi.json", summary="The wall's KPIs", operation_id="viewWallKpi")
def wall_kpi(request: Request, engine: ReadEngineDep, catalog: CatalogDep, settings: SettingsDep) -> JSONResponse:
    """Active incidents by severity, cameras online, incidents in the last 24 h per district.

    Every wall asks after every change: the figures are made once per change of incidents or cameras
    (layer versions, heard by NOTIFY) and at most 30 s old, as the 24 h window slides; one making at a
    time. While new figures take more than a second, or the database is away, the last ones come back
    with ``"stale": true`` (the wall asks again two seconds later).
    """
    versions = request.app.state.listener.versions()
    key = None
    if versions is not None:
        key = (versions.get("public.incidents"), versions.get("public.cameras"), int(time.time() // 30))

    def make() -> dict[str, Any]:
        with engine.connect() as conn:
            return maps.kpis(conn, catalog, settings)

    figures, fresh = request.app.state.kpi.get(key, make)
    return JSONResponse(figures if fresh else {**figures, "stale": True}, headers={"Cache-Control": "no-store"})


@router.get("/desk", summary="The operators' desk", operation_id="viewDesk", response_class=HTMLResponse)
def desk_view(request: Request, engine: ReadEngineDep, catalog: CatalogDep, settings: SettingsDep) -> HTMLResponse:
    """Find a place, log an incident, work the queue and merge duplicates (an operator key, kept in the tab).

    Made once per version of the boundaries, as the wall is; the rest comes from the API.
    """
    return _page_per_boundaries(request, request.app.state.desk_page, engine,
                                lambda conn: desk.page(conn, catalog, settings, since=maps.SINCE_MARK,
                                                          versions=maps.VERSIONS_MARK))


@router.get("/incidents/{incident_id}", summary="One incident on a map", operation_id="viewIncident",
            response_class=HTMLResponse, responses={404: {"description": "No such incident (an HTML page)"}},
            dependencies=[Heavy])
def incident(request: Request, engine: EngineDep, catalog: CatalogDep, settings: SettingsDep,
             incident_id: Annotated[int, FastPath(ge=1, le=2**63 - 1, description="Incident id")]) -> HTMLResponse:
    """The incident, its unit, its nearest cameras and what they see, facilities near it and soonest by road."""
    from gis_ioc import routing

    since = request.app.state.listener.here()  # before the page is read: no change can fall between the two
    versions = request.app.state.listener.versions()
    routing.ensure_beside(engine, catalog, versions)  # the routes by road (the last network while one is made)
    with engine.connect() as conn:
        try:
            m = incident_view.incident(conn, catalog, settings, int(incident_id), since=since, versions=versions)
        except NotFound:
            return HTMLResponse(maps.not_found_page(f"There is no incident {incident_id}."), status_code=404)
        return HTMLResponse(maps.page(m))


@router.get("/choropleth", summary="Counts per administrative unit", operation_id="viewChoropleth",
            response_class=HTMLResponse, dependencies=[Heavy])
def choropleth(engine: ReadEngineDep, catalog: CatalogDep, settings: SettingsDep,
               layer: Annotated[str, Query(max_length=63, description="Layer id")] = "incidents",
               level: Annotated[Literal["district", "commune"], Query(
                   description="Today's communes, or the districts as they were before the 2025 reform")] = "commune",
               window: Annotated[str, Query(max_length=12, pattern=r"^[0-9]+[mhdw]$",
                                            description="How far back: 24h, 7d, 30d, 2w… (at most ten years)")]
               = "30d",
               measure: Annotated[Literal["count", "per_km2"], Query()] = "count"
               ) -> HTMLResponse:
    """A choropleth of feature counts (or counts per km²) per unit, in quantile classes with a legend."""
    with engine.connect() as conn:
        return HTMLResponse(maps.page(planning.choropleth(conn, catalog, settings, layer=layer, level=level,
                                                      window=window, measure=measure)))


@router.get("/reach", summary="Service areas: what facilities reach by road in time", operation_id="viewReach",
            response_class=HTMLResponse, dependencies=[Heavy])
def reach(request: Request, engine: EngineDep, catalog: CatalogDep, settings: SettingsDep,
          layer: Annotated[str, Query(max_length=63, description="Layer of the facilities")] = "infrastructure",
          kind: Annotated[str, Query(max_length=40, description="Their kind (fire_station, hospital, police…)")]
          = "fire_station",
          minutes: Annotated[str, Query(max_length=60, description="Minutes, comma-separated")] = "15,30",
          ) -> HTMLResponse:
    """The areas the facilities reach by road within each time, and the communes they do not reach."""
    from gis_ioc import routing

    try:
        times = [float(m) for m in minutes.split(",") if m.strip()]
    except ValueError:
        raise InvalidInput(f"minutes: {minutes[:40]!r} is not minutes separated by commas", param="minutes") from None
    routing.ensure_beside(engine, catalog, request.app.state.listener.versions())
    with engine.connect() as conn:
        return HTMLResponse(maps.page(planning.reach_view(conn, catalog, settings, layer=layer, kind=kind,
                                                          minutes=times)))


@router.get("", include_in_schema=False)
def index() -> RedirectResponse:
    """``/views`` opens the wall."""
    return RedirectResponse("/views/wall")


@router.get("/{name:path}", include_in_schema=False, response_class=HTMLResponse)
def unknown(name: str) -> HTMLResponse:
    """Any other view is a 404 page."""
    return HTMLResponse(maps.not_found_page(f"There is no view {name!r}."), status_code=404)


def _next_page(value: Any) -> str:
    """Where to go after signing in: a path on this server only (never another site)."""
    text = value if isinstance(value, str) else ""
    if not text.startswith("/") or text.startswith("//") or "\\" in text or len(text) > 2000:
        return "/views/wall"
    return text


@session_router.post("/session", summary="Open the views with an API key", operation_id="openViewSession",
                     status_code=303, response_class=RedirectResponse,
                     openapi_extra={"requestBody": {"required": True, "content": {
                         "application/x-www-form-urlencoded": {"schema": {
                             "type": "object", "required": ["key"],
                             "properties": {"key": {"type": "string", "maxLength": 256},
                                            "next": {"type": "string", "maxLength": 2000}}}}}}})
async def open_session(request: Request, engine: EngineDep) -> Response:
    """For deployments without public reads (``GIS_IOC_PUBLIC_READ=false``): a viewer key given once.

    The key goes into an HttpOnly, SameSite=Strict cookie that the wall's own tile, KPI and event
    requests carry; no script and no other site can read it. 303 to the page asked for.
    """
    form = await request.form(max_files=0, max_fields=4, max_part_size=4096)
    key = form.get("key")
    principal = await run_in_threadpool(principal_of, engine, key) if isinstance(key, str) and key else None
    following = _next_page(form.get("next"))
    if principal is None or not principal.can("viewer"):
        return HTMLResponse(maps.sign_in_page(following, "That key is unknown or revoked."), status_code=401)
    response = RedirectResponse(following, status_code=303)
    response.set_cookie(KEY_COOKIE, str(key), max_age=SESSION_DAYS * 86400, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    return response


@session_router.post("/session/end", summary="Forget the views' key", operation_id="endViewSession",
                     status_code=303, response_class=RedirectResponse)
def end_session() -> Response:
    """Drop the cookie set by ``/views/session``."""
    response = RedirectResponse("/views/wall", status_code=303)
    response.delete_cookie(KEY_COOKIE, path="/", httponly=True, samesite="strict")
    return response
