"""Map views for the wall and the operators: ``/views/wall``, ``/views/incidents/{id}``, ``/views/choropleth``."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as FastPath
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from gis_ioc import maps
from gis_ioc.errors import NotFound
from gis_ioc.web.deps import CatalogDep, EngineDep, Heavy, SettingsDep

router = APIRouter(prefix="/views", tags=["Map views"])


@router.get("/wall", summary="The wall map", operation_id="viewWall", response_class=HTMLResponse)
def wall(engine: EngineDep, catalog: CatalogDep, settings: SettingsDep) -> HTMLResponse:
    """Full-screen dark map: boundaries, infrastructure, cameras with fields of view, incidents, KPIs, live."""
    with engine.connect() as conn:
        return HTMLResponse(maps.page(maps.wall(conn, catalog, settings)))


@router.get("/wall/kpi.json", summary="The wall's KPIs", operation_id="viewWallKpi")
def wall_kpi(request: Request, engine: EngineDep, catalog: CatalogDep, settings: SettingsDep) -> JSONResponse:
    """Active incidents by severity, cameras online, incidents in the last 24 h per district.

    Every wall asks after every change: the figures are made once per change of incidents or cameras
    (layer versions, heard by NOTIFY) and at most 30 s old, as the 24 h window slides.
    """
    versions = request.app.state.listener.versions()
    key = None
    if versions is not None:
        key = (versions.get("public.incidents"), versions.get("public.cameras"), int(time.time() // 30))
        cached = getattr(request.app.state, "kpi_cache", None)
        if cached is not None and cached[0] == key:
            return JSONResponse(cached[1], headers={"Cache-Control": "no-store"})
    with engine.connect() as conn:
        figures = maps.kpis(conn, catalog, settings)
    if key is not None:
        request.app.state.kpi_cache = (key, figures)
    return JSONResponse(figures, headers={"Cache-Control": "no-store"})


@router.get("/incidents/{incident_id}", summary="One incident on a map", operation_id="viewIncident",
            response_class=HTMLResponse, responses={404: {"description": "No such incident (an HTML page)"}},
            dependencies=[Heavy])
def incident(engine: EngineDep, catalog: CatalogDep, settings: SettingsDep,
             incident_id: Annotated[int, FastPath(ge=1, le=2**63 - 1, description="Incident id")]) -> HTMLResponse:
    """The incident, its unit, its nearest online cameras and what they see, infrastructure within 2 km."""
    with engine.connect() as conn:
        try:
            m = maps.incident(conn, catalog, settings, int(incident_id))
        except NotFound:
            return HTMLResponse(maps.not_found_page(f"There is no incident {incident_id}."), status_code=404)
        return HTMLResponse(maps.page(m))


@router.get("/choropleth", summary="Counts per administrative unit", operation_id="viewChoropleth",
            response_class=HTMLResponse, dependencies=[Heavy])
def choropleth(engine: EngineDep, catalog: CatalogDep, settings: SettingsDep,
               layer: Annotated[str, Query(max_length=63, description="Layer id")] = "incidents",
               level: Annotated[str, Query(max_length=20, description="district or commune")] = "district",
               window: Annotated[str, Query(max_length=12, pattern=r"^[0-9]+[mhdw]$",
                                            description="How far back: 24h, 7d, 30d, 2w… (at most ten years)")]
               = "30d",
               measure: Annotated[str, Query(max_length=20, description="count or per_km2")] = "count"
               ) -> HTMLResponse:
    """A choropleth of feature counts (or counts per km²) per unit, in quantile classes with a legend."""
    with engine.connect() as conn:
        return HTMLResponse(maps.page(maps.choropleth(conn, catalog, settings, layer=layer, level=level,
                                                      window=window, measure=measure)))


@router.get("", include_in_schema=False)
def index() -> RedirectResponse:
    """``/views`` opens the wall."""
    return RedirectResponse("/views/wall")


@router.get("/{name:path}", include_in_schema=False, response_class=HTMLResponse)
def unknown(name: str) -> HTMLResponse:
    """Any other view is a 404 page."""
    return HTMLResponse(maps.not_found_page(f"There is no view {name!r}."), status_code=404)
