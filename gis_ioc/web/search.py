"""GET /search: one ranked list of places for what an operator types (``gis_ioc.search``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from gis_ioc import search as places
from gis_ioc.web.deps import ReadEngineDep, SettingsDep

router = APIRouter(tags=["Search"])


@router.get("/search", summary="Find a place", operation_id="search")
def search(
    engine: ReadEngineDep,
    settings: SettingsDep,
    q: Annotated[str, Query(min_length=1, max_length=places.MAX_QUERY,
                            description="A unit, facility, road (QL14), camera, incident id (#123) or coordinates; "
                                        "with or without diacritics")],
    types: Annotated[str | None, Query(max_length=100, description="Kinds to search, comma-separated: "
                                                                    + ", ".join(places.KINDS))] = None,
    near: Annotated[str | None, Query(max_length=60, description="lon,lat: places near it rank higher")] = None,
    limit: Annotated[int, Query(ge=1, le=places.MAX_LIMIT, description="Results")] = 10,
) -> JSONResponse:
    """Units (today's and former, with where they are today), facilities, roads, cameras, incidents, coordinates."""
    kinds = [k.strip() for k in types.split(",") if k.strip()] if types else None
    with engine.connect() as conn:
        return JSONResponse(places.search(conn, q, kinds=kinds, near=places.near_point(near), limit=limit,
                                          region=settings.region_extent))
