"""Vector tiles over HTTP: ``/tiles/{layers}/{z}/{x}/{y}.mvt`` and TileJSON."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gis_ioc import tiles
from gis_ioc.web.deps import CatalogDep, EngineDep

router = APIRouter(tags=["Tiles"])
MVT = "application/vnd.mapbox-vector-tile"


@router.get("/tiles/{layers}/{z}/{x}/{y}.mvt", summary="A vector tile of one or several layers",
            operation_id="getTile", response_class=Response,
            responses={200: {"content": {MVT: {}}, "description": "Mapbox Vector Tile"},
                       304: {"description": "The tile has not changed (If-None-Match)"}})
def tile(request: Request, engine: EngineDep, catalog: CatalogDep, layers: str, z: int, x: int, y: int) -> Response:
    """A vector tile: layers comma-separated (``incidents,cameras``), WebMercatorQuad z/x/y.

    Item filters (property values, ``filter``, ``datetime``) apply to a one-layer tile. ETag and
    ``If-None-Match``; gzip when accepted.
    """
    params = dict(request.query_params)
    with engine.connect() as conn:
        found = tiles.get_tile(conn, catalog, request.app.state.tile_cache, layers, z, x, y, params)
    headers = {"ETag": found.etag, "Cache-Control": "public, max-age=5", "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == found.etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(found.gzipped, media_type=MVT, headers={**headers, "Content-Encoding": "gzip"})
    return Response(found.data, media_type=MVT, headers=headers)


@router.get("/tiles/{layers}.json", summary="TileJSON of one or several layers", operation_id="getTileJson")
def tilejson(request: Request, engine: EngineDep, catalog: CatalogDep, layers: str) -> JSONResponse:
    """TileJSON 3.0.0: the tile URL template, bounds, zooms and each layer's fields."""
    with engine.connect() as conn:
        resolved = tiles.resolve_layers(catalog, conn, layers)
        body = tiles.tilejson(str(request.base_url).rstrip("/"), resolved, conn)
    return JSONResponse(body)
