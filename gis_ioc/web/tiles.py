"""Vector tiles over HTTP: ``/tiles/{layers}/{z}/{x}/{y}.mvt``, TileJSON, OGC API – Tiles, MapLibre styles."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import morecantile
from fastapi import APIRouter, Query, Request
from fastapi import Path as FastPath
from fastapi.responses import JSONResponse, Response
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from gis_ioc import db, glyphs, limits, tile_cells, tiles
from gis_ioc.catalog import Catalog
from gis_ioc.errors import NotFound
from gis_ioc.web.compress import accepts_gzip
from gis_ioc.web.deps import CatalogDep, Heavy, ReadEngineDep, SettingsDep, keyless_public_read
from gis_ioc.web.formats import not_modified

router = APIRouter(tags=["Tiles"])
MVT = "application/vnd.mapbox-vector-tile"
Layers = Annotated[str, FastPath(max_length=300, description="Layer ids, comma-separated")]
CollectionId = Annotated[str, FastPath(max_length=63, description="Layer id")]
Zoom = Annotated[int, FastPath(ge=0, le=tiles.MAX_ZOOM, description="Zoom (tile matrix)")]
Column = Annotated[int, FastPath(ge=0, le=2**tiles.MAX_ZOOM - 1, description="Tile column (x), below 2^zoom")]
Row = Annotated[int, FastPath(ge=0, le=2**tiles.MAX_ZOOM - 1, description="Tile row (y), below 2^zoom")]
TileFilter = Annotated[str | None, Query(alias="filter", max_length=limits.MAX_FILTER_CHARS,
                                         description="CQL2 (one-layer tiles)")]
TileFilterLang = Annotated[Literal["cql2-text", "cql2-json"] | None, Query(alias="filter-lang")]
TileDatetime = Annotated[str | None, Query(alias="datetime", max_length=100,
                                           description="Instant or interval (one-layer tiles)")]


@router.get("/tiles/{layers}/{z}/{x}/{y}.mvt", summary="A vector tile of one or several layers",
            operation_id="getTile", response_class=Response,
            responses={200: {"content": {MVT: {}}, "description": "Mapbox Vector Tile"},
                       304: {"description": "The tile has not changed (If-None-Match)"}})
async def tile(request: Request, engine: ReadEngineDep, catalog: CatalogDep, layers: Layers, z: Zoom, x: Column,
               y: Row, filter_: TileFilter = None, filter_lang: TileFilterLang = None,
               datetime_: TileDatetime = None) -> Response:
    """A vector tile: layers comma-separated (``incidents,cameras``), WebMercatorQuad z/x/y.

    Item filters (property values, ``filter``, ``datetime``) apply to a one-layer tile. ETag and
    ``If-None-Match``; gzip when accepted.
    """
    return await tile_response(request, engine, catalog, layers, z, x, y)


async def tile_response(request: Request, engine: Engine, catalog: Catalog, layers: str, z: int, x: int,
                        y: int) -> Response:
    """A tile answered from the cache when the listener knows the versions, else made in a worker thread."""
    params = {k: v for k, v in request.query_params.items() if k != "f"}
    cache = request.app.state.tile_cache
    known = request.app.state.listener.versions()
    found = tiles.cached_tile(catalog, cache, layers, z, x, y, params, known)
    if found is None:
        found = await run_in_threadpool(_make_tile, engine, request.app.state.engine, catalog, cache, layers,
                                        z, x, y, params, known, request.app.state.fresh_cells)
    # any cache may keep a tile five seconds when reads are public; when they need a key, only the client's own
    kept_by = "public" if request.app.state.settings.public_read else "private"
    headers = {"ETag": found.etag, "Cache-Control": f"{kept_by}, max-age=5", "Vary": "Accept-Encoding"}
    if not_modified(request, found.etag):
        return Response(status_code=304, headers=headers)
    if accepts_gzip(request.headers.get("accept-encoding", "")):
        return Response(found.gzipped, media_type=MVT, headers={**headers, "Content-Encoding": "gzip"})
    return Response(found.data, media_type=MVT, headers=headers)


class TileFastPath:
    """Plain tile requests answered without FastAPI's routing, validation and dependencies (pure ASGI).

    A map asks for hundreds of tiles a view and nearly all of them are plain: ``GET /tiles/{layers}/{z}/{x}/{y}.mvt``
    (or the OGC API – Tiles path of one layer), no query, no key, built-in layers. Those are answered here,
    inside the guard (request id, statement budget, disconnect watch, errors as JSON), by the same
    ``tile_response`` the routes use; the router's matching, parameter models, dependency solving and the gzip
    middleware cost an uncached tile about as much CPU as the tile's own work in Python. Anything else — a
    filter, a key, private reads, an imported layer, a number out of range — goes on to the routes, which
    validate it and name what is wrong.
    """

    PATHS = (re.compile(r"/tiles/([^/]{1,300})/(\d{1,2})/(\d{1,7})/(\d{1,7})\.mvt"),
             re.compile(r"/collections/([^/,]{1,63})/tiles/WebMercatorQuad/(\d{1,2})/(\d{1,7})/(\d{1,7})"))

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a plain tile request; pass every other request on."""
        found = self._plain_tile(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        state = request.app.state
        layers, z, x, y = found
        response = await tile_response(request, state.reads.engine(), state.catalog, layers, z, x, y)
        await response(scope, receive, send)

    def _plain_tile(self, scope: Scope) -> tuple[str, int, int, int] | None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("query_string"):
            return None
        path: str = scope["path"]
        if not (path.startswith("/tiles/") or path.startswith("/collections/")):
            return None
        tiles_path, ogc_path = self.PATHS
        match, ogc = tiles_path.fullmatch(path), False
        if match is None:
            match, ogc = ogc_path.fullmatch(path), True
        if match is None:
            return None
        if not keyless_public_read(scope):
            return None  # a key is checked (and its statement budget set) by the routes' dependencies
        state = scope["app"].state
        names, z, first, second = match[1], int(match[2]), int(match[3]), int(match[4])
        x, y = (second, first) if ogc else (first, second)  # OGC API – Tiles: row (y), then column (x)
        if z > tiles.MAX_ZOOM or x >= 2**z or y >= 2**z:
            return None
        if tiles.known_layers(state.catalog, names, state.listener.versions()) is None:
            return None  # an imported layer, a name to refuse, or no versions heard yet: the routes ask the database
        return names, z, x, y


def _make_tile(engine: Engine, primary: Engine, catalog: Catalog, cache: tiles.TileCache | None, layers: str, z: int,
               x: int, y: int, params: dict[str, str], known: Mapping[str, int] | None,
               seen: tile_cells.FreshCells) -> tiles.Tile:
    # one statement, so no transaction: no BEGIN and ROLLBACK round trips around it
    def make(on: Engine) -> tiles.Tile:
        with db.autocommit(on) as conn:
            return tiles.get_tile(conn, catalog, cache, layers, z, x, y, params, known, seen, on is primary)

    try:  # while another thread rebuilds stale cells this tile needs: waits for it, holding no connection
        return tile_cells.wait_for_cells(lambda: make(engine))
    except tile_cells.StaleCells:  # a replica found cells a bulk load left stale: the primary rebuilds them
        return tile_cells.wait_for_cells(lambda: make(primary))


@router.get("/tiles/{layers}.json", summary="TileJSON of one or several layers", operation_id="getTileJson")
def tilejson(request: Request, engine: ReadEngineDep, catalog: CatalogDep, layers: Layers) -> JSONResponse:
    """TileJSON 3.0.0: the tile URL template, bounds, zooms and each layer's fields."""
    with engine.connect() as conn:
        resolved = tiles.resolve_layers(catalog, conn, layers)
        body = tiles.tilejson(str(request.base_url).rstrip("/"), resolved, conn)
    return JSONResponse(body)


# -- OGC API – Tiles -----------------------------------------------------------------------------------

OGC_REL = "http://www.opengis.net/def/rel/ogc/1.0/"
TMS_ID = "WebMercatorQuad"


@functools.cache
def _tms() -> dict[str, Any]:
    """The WebMercatorQuad definition (made once; it never changes)."""
    return morecantile.tms.get(TMS_ID).model_dump(mode="json", exclude_none=True, by_alias=True)


def _check_tms(tile_matrix_set_id: str) -> None:
    if tile_matrix_set_id != TMS_ID:
        raise NotFound(f"tileMatrixSetId: {tile_matrix_set_id!r} is not offered (only {TMS_ID})",
                       param="tileMatrixSetId")


@router.get("/tileMatrixSets", summary="Tile matrix sets", operation_id="tileMatrixSets")
def tile_matrix_sets(request: Request) -> JSONResponse:
    """The tiling schemes tiles are offered in (WebMercatorQuad)."""
    href = str(request.url_for("tile_matrix_set", tile_matrix_set_id=TMS_ID))
    return JSONResponse({"tileMatrixSets": [{"id": TMS_ID, "title": "Google Maps Compatible for the World",
                                             "uri": _tms()["uri"], "links": [{"href": href, "rel": "self",
                                                                              "type": "application/json"}]}]})


@router.get("/tileMatrixSets/{tile_matrix_set_id}", summary="A tile matrix set", operation_id="tileMatrixSet")
def tile_matrix_set(tile_matrix_set_id: Annotated[str, FastPath(max_length=100)]) -> JSONResponse:
    """The definition of a tiling scheme (OGC Two Dimensional Tile Matrix Set 2.0)."""
    _check_tms(tile_matrix_set_id)
    return JSONResponse(_tms())


def _tileset(request: Request, engine: Engine, catalog: Catalog, collection_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        layer = catalog.get(collection_id, conn)
        meta = tiles.tilejson(str(request.base_url).rstrip("/"), [layer], conn)
    west, south, east, north = meta["bounds"]
    vector = meta["vector_layers"][0]
    dimension = {"Point": 0, "MultiPoint": 0, "LineString": 1, "MultiLineString": 1}
    dims = {dimension.get(t.value, 2) for t in layer.geometry.types}
    base = str(request.url_for("collection_tileset", collection_id=layer.id, tile_matrix_set_id=TMS_ID))
    return {
        "title": f"{layer.title} (vector tiles)",
        "dataType": "vector",
        "crs": "http://www.opengis.net/def/crs/EPSG/0/3857",
        "tileMatrixSetURI": _tms()["uri"],
        "boundingBox": {"lowerLeft": [west, south], "upperRight": [east, north],
                        "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"},
        "links": [
            {"href": base, "rel": "self", "type": "application/json", "title": "this tileset"},
            {"href": str(request.url_for("tile_matrix_set", tile_matrix_set_id=TMS_ID)),
             "rel": OGC_REL + "tiling-scheme", "type": "application/json", "title": TMS_ID},
            {"href": str(request.url_for("collection", collection_id=layer.id)), "rel": "collection",
             "type": "application/json", "title": layer.title},
            {"href": base + "/{tileMatrix}/{tileRow}/{tileCol}", "rel": "item", "templated": True,
             "type": MVT, "title": "a tile (Mapbox Vector Tile)"},
        ],
        "layers": [{"id": layer.id, "title": layer.title, "dataType": "vector",
                    "geometryDimension": dims.pop() if len(dims) == 1 else None,
                    "minTileMatrix": str(vector["minzoom"]), "maxTileMatrix": str(vector["maxzoom"]),
                    "propertiesSchema": {"type": "object", "properties": {
                        k: {"description": v} for k, v in vector["fields"].items()}}}],
    }


@router.get("/collections/{collection_id}/tiles", summary="A layer's tilesets", operation_id="collectionTilesets")
def collection_tilesets(request: Request, engine: ReadEngineDep, catalog: CatalogDep, collection_id: CollectionId
                        ) -> JSONResponse:
    """The vector tilesets of a layer (one, in WebMercatorQuad)."""
    tileset = _tileset(request, engine, catalog, collection_id)
    return JSONResponse({"tilesets": [{k: tileset[k] for k in ("title", "dataType", "crs", "tileMatrixSetURI",
                                                                "links")}],
                         "links": [{"href": str(request.url), "rel": "self", "type": "application/json"}]})


@router.get("/collections/{collection_id}/tiles/{tile_matrix_set_id}", summary="A layer's tileset metadata",
            operation_id="collectionTileset")
def collection_tileset(request: Request, engine: ReadEngineDep, catalog: CatalogDep, collection_id: CollectionId,
                       tile_matrix_set_id: Annotated[str, FastPath(max_length=100)]) -> JSONResponse:
    """Tileset metadata (OGC API – Tiles): bounds, layers and fields, the tile URL template."""
    _check_tms(tile_matrix_set_id)
    return JSONResponse(_tileset(request, engine, catalog, collection_id))


@router.get("/collections/{collection_id}/tiles/{tile_matrix_set_id}/{tile_matrix}/{tile_row}/{tile_col}",
            summary="A layer's vector tile (OGC API – Tiles)", operation_id="collectionTile", response_class=Response,
            responses={200: {"content": {MVT: {}}, "description": "Mapbox Vector Tile"},
                       304: {"description": "The tile has not changed (If-None-Match)"}})
async def collection_tile(request: Request, engine: ReadEngineDep, catalog: CatalogDep, collection_id: CollectionId,
                          tile_matrix_set_id: Annotated[str, FastPath(max_length=100)], tile_matrix: Zoom,
                          tile_row: Row, tile_col: Column, filter_: TileFilter = None,
                          filter_lang: TileFilterLang = None, datetime_: TileDatetime = None) -> Response:
    """The same tile as ``/tiles/{collection_id}/{z}/{x}/{y}.mvt`` (row = y, column = x), with the same filters."""
    _check_tms(tile_matrix_set_id)
    if "," in collection_id:
        raise NotFound(f"collectionId: no layer {collection_id!r} (one layer per collection)", param="collectionId")
    return await tile_response(request, engine, catalog, collection_id, tile_matrix, tile_col, tile_row)


# -- MapLibre styles -----------------------------------------------------------------------------------

@router.get("/fonts/{fontstack}/{block}.pbf", summary="Label glyphs for MapLibre styles", operation_id="getGlyphs",
            response_class=Response, dependencies=[Heavy],  # a block not made yet costs up to ~1 s of CPU
            responses={200: {"content": {"application/x-protobuf": {}}, "description": "SDF glyphs of 256 code "
                                                                                      "points"}})
def glyph_block(fontstack: Annotated[str, FastPath(max_length=200, description="e.g. `DejaVu Sans Book`")],
                block: Annotated[str, FastPath(max_length=20, description="e.g. `0-255`, `7680-7935`")]) -> Response:
    """Signed-distance-field glyphs made by this server from DejaVu Sans (Vietnamese included): no CDN."""
    data = glyphs.glyph_block(fontstack, glyphs.parse_range(block))
    return Response(data, media_type="application/x-protobuf",
                    headers={"Cache-Control": "public, max-age=604800"})


@router.get("/styles", summary="Map styles", operation_id="getStyles")
def styles_list(request: Request, settings: SettingsDep) -> JSONResponse:
    """The MapLibre style documents kept in ``tiles/styles``."""
    names = sorted(p.stem for p in settings.styles_dir.glob("*.json"))
    return JSONResponse({"styles": [{"id": n, "links": [{"href": str(request.url_for("style", name=n)),
                                                        "rel": "stylesheet",
                                                        "type": "application/vnd.mapbox.style+json"}]}
                                    for n in names]})


@router.get("/styles/{name}.json", summary="A MapLibre style document", operation_id="getStyle",
            responses={200: {"content": {"application/vnd.mapbox.style+json": {}}, "description": "A style"}})
def style(request: Request, settings: SettingsDep, name: Annotated[str, FastPath(max_length=100)]) -> JSONResponse:
    """A style from ``tiles/styles``, its relative source and glyph URLs made absolute for this server."""
    return JSONResponse(tiles.style_document(settings.styles_dir, name, str(request.base_url).rstrip("/")),
                        media_type="application/vnd.mapbox.style+json")
