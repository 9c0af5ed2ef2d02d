"""OGC API – Features: landing page, conformance, collections, items, queryables (Parts 1, 2, 3)."""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
from collections.abc import AsyncIterator, Generator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Query, Request
from fastapi import Path as FastPath
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from gis_ioc import duplicates, edits, features, limits, queries
from gis_ioc.catalog import JSON_SCHEMA_TYPES, Layer, Property, definition_digest
from gis_ioc.errors import InvalidInput, NotFound
from gis_ioc.web import alerts, html
from gis_ioc.web.deps import ITEM_FORMATS, CatalogDep, Export, LayerDep, ReadEngineDep, SettingsDep
from gis_ioc.web.formats import MEDIA, negotiate, not_modified
from gis_ioc.web.server import SEND_STALL_KEY

router = APIRouter()

CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/html",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/create-replace-delete",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/update",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables-query-parameters",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/temporal-functions",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tileset",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tilesets-list",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/geodata-tilesets",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/oas30",
]
GEOJSON = "application/geo+json"

Text = Annotated[str | None, Query()]
Fmt = Annotated[Literal["json", "html"] | None, Query(description="json or html (or ask with Accept)")]
JSON_OR_HTML: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}, "text/html": {}}, "description": "JSON, or HTML with f=html"}}


def _link(href: str, rel: str, media: str, title: str | None = None) -> dict[str, str]:
    link = {"href": href, "rel": rel, "type": media}
    if title:
        link["title"] = title
    return link


def _alternates(url: str, formats: tuple[str, ...], current: str) -> list[dict[str, str]]:
    base = url.split("?")[0]
    return [_link(f"{base}?f={f}", "self" if f == current else "alternate", MEDIA[f], f"this document as {f}")
            for f in formats]


@router.get("/", summary="Landing page", operation_id="getLandingPage", tags=["Capabilities"],
            response_class=Response, responses=JSON_OR_HTML)
def landing(request: Request, f: Fmt = None) -> Response:
    """What this service offers, with links to the API description, conformance and the layers."""
    fmt = negotiate(request, ("json", "html"))
    body = {
        "title": "gis-ioc",
        "description": "Spatial operations service of a provincial Intelligent Operations Center (Kon Tum)",
        "links": [
            *_alternates(str(request.url_for("landing")), ("json", "html"), fmt),
            _link(str(request.url_for("openapi")), "service-desc", "application/vnd.oai.openapi+json;version=3.0",
                  "the API definition"),
            _link(str(request.base_url) + "docs", "service-doc", "text/html", "the API documentation"),
            _link(str(request.url_for("conformance")), "conformance", "application/json", "conformance classes"),
            _link(str(request.url_for("collections")), "data", "application/json", "the layers"),
            _link(str(request.url_for("tile_matrix_sets")), "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes",
                  "application/json", "tile matrix sets"),
            _link(str(request.base_url) + "views/wall", "alternate", "text/html", "the wall map"),
            _link(str(request.url_for("health")), "service-status", "application/json", "health"),
        ],
    }
    if fmt == "html":
        return HTMLResponse(html.landing(body))
    return JSONResponse(body)


@router.get("/conformance", summary="Conformance classes", operation_id="getConformance", tags=["Capabilities"],
            response_class=Response, responses=JSON_OR_HTML)
def conformance(request: Request, f: Fmt = None) -> Response:
    """The OGC conformance classes this service implements."""
    fmt = negotiate(request, ("json", "html"))
    if fmt == "html":
        return HTMLResponse(html.conformance(CONFORMANCE))
    return JSONResponse({"conformsTo": CONFORMANCE})


def _collection(request: Request, layer: Layer, extent: dict[str, Any] | None, count: Any = None) -> dict[str, Any]:
    items = str(request.url_for("items", collection_id=layer.id))
    schema = str(request.url_for("schema", collection_id=layer.id))
    body: dict[str, Any] = {
        "id": layer.id,
        "title": layer.title,
        "description": layer.description,
        "keywords": layer.keywords,
        "itemType": "feature",
        "crs": list(queries.SUPPORTED_CRS),
        "storageCrs": queries.CRS84.uri,
        "links": [
            _link(str(request.url_for("collection", collection_id=layer.id)), "self", "application/json"),
            _link(items, "items", GEOJSON, "the features as GeoJSON"),
            _link(items + "?f=html", "items", "text/html", "the features as HTML"),
            _link(items + "?f=csv", "items", "text/csv", "the features as CSV"),
            _link(items + "?f=gpkg", "items", MEDIA["gpkg"], "the features as GeoPackage"),
            _link(str(request.url_for("queryables", collection_id=layer.id)), "http://www.opengis.net/def/rel/ogc/1.0/"
                  "queryables", "application/schema+json", "the queryable properties"),
            # the schema of a feature, where GDAL (rel describedBy up to 3.8) and QGIS read a layer's fields
            _link(schema, "describedby", "application/schema+json", "the schema of a feature"),
            _link(schema, "describedBy", "application/schema+json", "the schema of a feature"),
        ],
        "geometryTypes": layer.served_types,
        "source": layer.source,
    }
    if layer.part:
        body["links"].append(_link(str(request.url_for("collection", collection_id=layer.base_id)), "collection",
                                   "application/json", "the whole layer"))
    else:
        body["links"].append(_link(str(request.url_for("collection_tilesets", collection_id=layer.id)),
                                   "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector", "application/json",
                                   "vector tiles"))
        for view in layer.parts():
            body["links"].append(_link(str(request.url_for("collection", collection_id=view.id)), "related",
                                       "application/json", f"only the {view.part}, one geometry type"))
    if extent:
        body["extent"] = extent
    if count is not None:
        body["numberOfFeatures"] = count.value
        body["countIsEstimate"] = count.estimated
        if count.note:
            body["note"] = count.note
    return body


@router.get("/collections", summary="The layers", operation_id="getCollections", tags=["Data"],
            response_class=Response, responses=JSON_OR_HTML)
def collections(request: Request, engine: ReadEngineDep, catalog: CatalogDep, f: Fmt = None) -> Response:
    """Every layer (built-in and imported), with its feature count and extent."""
    fmt = negotiate(request, ("json", "html"))
    with engine.connect() as conn:
        entries = []
        for layer, count in catalog.counts(conn):
            extent = features.extent(conn, layer)
            entries.append(_collection(request, layer, extent, count))
            entries += [_collection(request, view, extent) for view in layer.parts()]
    body = {
        "collections": entries,
        "links": _alternates(str(request.url_for("collections")), ("json", "html"), fmt),
    }
    if fmt == "html":
        return HTMLResponse(html.collections(body))
    return JSONResponse(body)


@router.get("/collections/{collection_id}", summary="One layer", operation_id="getCollection", tags=["Data"],
            response_class=Response, responses=JSON_OR_HTML)
def collection(request: Request, layer: LayerDep, engine: ReadEngineDep, catalog: CatalogDep,
               f: Fmt = None) -> Response:
    """A layer's description, extent and links."""
    fmt = negotiate(request, ("json", "html"))
    with engine.connect() as conn:
        body = _collection(request, layer, features.extent(conn, layer), catalog.count(conn, layer))
    if fmt == "html":
        return HTMLResponse(html.collection(body, layer))
    return JSONResponse(body)


def _property_schema(name: str, prop: Property) -> dict[str, Any]:
    """One property as JSON Schema (queryables, and the feature schema GDAL and QGIS read)."""
    entry: dict[str, Any] = {"title": prop.title or name, "description": prop.description,
                             **JSON_SCHEMA_TYPES[prop.type]}
    if prop.enum:
        entry["enum"] = prop.enum
    if prop.read_only or prop.server_owned:
        entry["readOnly"] = True  # kept by the service: a write that sets it is refused
    return entry


def _geometry_schema(layer: Layer) -> dict[str, Any]:
    """The geometry as JSON Schema (OGC API – Features Part 5 roles and formats)."""
    kinds = layer.served_types
    return {"title": "geometry", "x-ogc-role": "primary-geometry",
            "format": f"geometry-{kinds[0].lower()}" if len(kinds) == 1 else "geometry-any"}


@router.get("/collections/{collection_id}/queryables", summary="Queryable properties", tags=["Data"],
            response_class=Response,
            responses={200: {"content": {"application/schema+json": {}}, "description": "JSON Schema"}},
            operation_id="getQueryables")
def queryables(request: Request, layer: LayerDep) -> Response:
    """The properties a filter may use, as JSON Schema."""
    props = {name: _property_schema(name, prop) for name, prop in layer.properties.items()}
    props[layer.geometry.column] = _geometry_schema(layer)
    body = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": str(request.url_for("queryables", collection_id=layer.id)),
        "type": "object",
        "title": layer.title,
        "properties": props,
        "additionalProperties": False,
    }
    return JSONResponse(body, media_type="application/schema+json")


@router.get("/collections/{collection_id}/schema", summary="The schema of a feature", tags=["Data"],
            response_class=Response,
            responses={200: {"content": {"application/schema+json": {}}, "description": "JSON Schema"}},
            operation_id="getSchema")
def schema(request: Request, layer: LayerDep) -> Response:
    """A feature of the layer as JSON Schema: a GeoJSON Feature with its typed properties and geometry types.

    The collection links it as ``describedby``; GDAL and QGIS type the layer's fields from it.
    """
    props = {name: _property_schema(name, prop) for name, prop in layer.properties.items()
             if name != layer.id_column}
    body = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": str(request.url_for("schema", collection_id=layer.id)),
        "title": layer.title,
        "type": "object",
        "required": ["type", "geometry", "properties"],
        "properties": {
            "type": {"type": "string", "enum": ["Feature"]},
            "id": JSON_SCHEMA_TYPES[layer.properties[layer.id_column].type],
            "geometry": {**_geometry_schema(layer),
                         "oneOf": [{"$ref": f"https://geojson.org/schema/{kind}.json"} for kind in layer.served_types]},
            "properties": {"type": "object", "properties": props},
        },
    }
    return JSONResponse(body, media_type="application/schema+json")


@router.get("/collections/{collection_id}/items", summary="Features of a layer", operation_id="getFeatures",
            tags=["Data"], response_class=Response, dependencies=[Export],
            responses={200: {"content": {GEOJSON: {}, "text/html": {}, "text/csv": {}, MEDIA["gpkg"]: {}},
                             "description": "A page of features"},
                       304: {"description": "The page has not changed (If-None-Match)"}})
def items(
    request: Request,
    layer: LayerDep,
    engine: ReadEngineDep,
    bbox: Annotated[str | None, Query(max_length=400, description="minlon,minlat,maxlon,maxlat (in bbox-crs)")]
    = None,
    bbox_crs: Annotated[str | None, Query(alias="bbox-crs", max_length=200, description="CRS of bbox (URI)")] = None,
    datetime_: Annotated[str | None, Query(alias="datetime", max_length=100,
                                           description="Instant or interval (a/b, ../b, a/..)")] = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT, description="Features per page")]
    = queries.DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, le=limits.MAX_OFFSET, description="Features to skip; deeper pages follow "
                                                                          "the next link (a cursor)")] = 0,
    cursor: Annotated[str | None, Query(max_length=4000, description="Where the next page starts (from the next "
                                                                     "link)")] = None,
    filter_: Annotated[str | None, Query(alias="filter", max_length=limits.MAX_FILTER_CHARS,
                                         description="CQL2 text or JSON")] = None,
    filter_lang: Annotated[Literal["cql2-text", "cql2-json"] | None, Query(alias="filter-lang")] = None,
    filter_crs: Annotated[str | None, Query(alias="filter-crs", max_length=200,
                                            description="CRS of filter geometries (CRS84 only)")] = None,
    sortby: Annotated[str | None, Query(max_length=1000, description="e.g. -reported_at,name")] = None,
    properties: Annotated[str | None, Query(max_length=4000, description="Properties to return, comma-separated")]
    = None,
    crs: Annotated[str | None, Query(max_length=200, description="CRS of the response (URI)")] = None,
    f: Annotated[Literal["json", "html", "csv", "gpkg"] | None, Query()] = None,
) -> Response:
    """Features of a layer: bbox, datetime, property filters (``?status=online``), CQL2, sorting, paging, CRS.

    The ETag is the layer's version with the request: ``If-None-Match`` answers 304 without a query.
    """
    fmt = negotiate(request, ITEM_FORMATS)
    params = dict(request.query_params)
    req = queries.parse_items(layer, params)
    tag = _page_etag(request, layer, fmt)
    if tag is not None and not_modified(request, tag):
        return Response(status_code=304, headers={"ETag": tag})
    headers = {"Content-Crs": f"<{req.crs.uri}>", **({"ETag": tag} if tag else {})}
    if fmt == "json" and req.limit > limits.LIGHT_PAGE_ITEMS:
        setattr(request.state, SEND_STALL_KEY, STREAM_STALL_S)
        pieces = _Pieces(_streamed_items(request, engine, layer, req))
        return StreamingResponse(pieces.sent(), media_type=GEOJSON, headers=headers)
    with engine.connect() as conn:
        page = features.items_page(conn, layer, req)
    if fmt == "csv":
        frame = features.to_frame(page.features, req.crs)
        frame["wkt"] = frame.geometry.to_wkt()
        text = features.csv_text(frame.drop(columns=frame.geometry.name))
        return Response(text, media_type="text/csv; charset=utf-8", headers={
            **headers, "Content-Disposition": f'attachment; filename="{layer.id}.csv"'})
    if fmt == "gpkg":
        return Response(_geopackage(page.features, layer, req.crs), media_type=MEDIA["gpkg"], headers={
            **headers, "Content-Disposition": f'attachment; filename="{layer.id}.gpkg"'})
    links = _page_links(request, req, page, fmt)
    if fmt == "html":
        return HTMLResponse(html.items(layer, json.loads(page.features), page, links, req), headers=headers)
    head = {
        "type": "FeatureCollection",
        "numberReturned": page.returned,
        **({"numberMatched": page.matched} if page.matched is not None else {}),
        "timeStamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "links": links,
    }
    # The features come from PostgreSQL as JSON text; they are spliced in, not parsed again.
    body = json.dumps(head)[:-1] + ',"features":' + page.features + "}"
    return Response(body, media_type=GEOJSON, headers=headers)


STREAM_STALL_S = 5.0  # a streamed page's client may read nothing this long: it holds a heavy place and a connection


class _Pieces:
    """A page made piece by piece in worker threads, and closed (its connection given back) however sending ends."""

    def __init__(self, pieces: Generator[bytes, None, None]) -> None:
        self._pieces = pieces
        self._lock = threading.Lock()  # a piece still being made when the client left is made before closing

    def _next(self) -> bytes | None:
        with self._lock:
            return next(self._pieces, None)

    def _close(self) -> None:
        with self._lock:
            self._pieces.close()

    async def sent(self) -> AsyncIterator[bytes]:
        """The pieces for the response; a client that leaves (or is dropped) closes them at once."""
        try:
            while (piece := await run_in_threadpool(self._next)) is not None:
                yield piece
        finally:
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(self._close)


def _streamed_items(request: Request, engine: Any, layer: Layer,
                    req: queries.ItemsRequest) -> Generator[bytes, None, None]:
    """A big page of GeoJSON sent as PostgreSQL writes its features: the features first, then what they said.

    Members of a JSON object have no order, so ``numberReturned`` and the ``next`` link, known once the rows are
    read, follow the features. The page holds its heavy-work place and a connection until it is sent; a client
    that stops reading is dropped by the server after ``STREAM_STALL_S``, which ends both.
    """
    streamed = features.Streamed()
    with engine.connect() as conn:
        counted = features.count_matched(conn, layer, req) if req.after is None else None
        yield b'{"type": "FeatureCollection", "features": ['
        for piece in features.stream_page(conn, layer, req, streamed):
            yield piece.encode()
    page = features.Page("", streamed.returned, counted, streamed.next_cursor)
    tail = {
        "numberReturned": page.returned,
        **({"numberMatched": page.matched} if page.matched is not None else {}),
        "timeStamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "links": _page_links(request, req, page, "json"),
    }
    yield ("], " + json.dumps(tail)[1:]).encode()


def _page_etag(request: Request, layer: Layer, fmt: str) -> str | None:
    """A weak ETag for a page: the layer's version as last heard here, its definition, the query and the format.

    None when the version is not known here (the listener is reconnecting): no validator rather than a wrong one.
    """
    known = request.app.state.listener.versions()
    if known is None or layer.table not in known:
        return None
    query = "&".join(f"{k}={v}" for k, v in sorted(request.query_params.multi_items()))
    digest = hashlib.sha256(f"{layer.id}@{known[layer.table]}:{definition_digest(layer)}|{fmt}|{query}".encode()
                            ).hexdigest()[:32]
    return f'W/"{digest}"'


def _page_links(request: Request, req: queries.ItemsRequest, page: features.Page, fmt: str) -> list[dict[str, str]]:
    url = request.url
    media = GEOJSON if fmt == "json" else MEDIA[fmt]
    links = [_link(str(url), "self", media)]
    for other in ("json", "html", "csv", "gpkg"):
        if other != fmt:
            links.append(_link(str(url.include_query_params(f=other)), "alternate",
                               GEOJSON if other == "json" else MEDIA[other]))
    if page.next_cursor is not None:  # keyset: the next page costs what this one did, at any depth
        following = url.remove_query_params("offset").include_query_params(cursor=page.next_cursor)
        links.append(_link(str(following), "next", media, "next page"))
    if req.offset > 0 and req.after is None:
        links.append(_link(str(url.include_query_params(offset=max(0, req.offset - req.limit))), "prev", media,
                           "previous page"))
    links.append(_link(str(request.url_for("collection", collection_id=request.path_params["collection_id"])),
                       "collection", "application/json"))
    return links


def _geopackage(features_json: str, layer: Layer, crs: queries.Crs) -> bytes:
    frame = features.to_frame(features_json, crs)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{layer.id}.gpkg"
        if len(frame):
            frame.to_file(path, layer=layer.id, driver="GPKG", engine="pyogrio")
        else:
            import geopandas as gpd

            gpd.GeoDataFrame({"id": []}, geometry=[], crs=frame.crs or 4326).to_file(
                path, layer=layer.id, driver="GPKG", engine="pyogrio")
        return path.read_bytes()


@router.get("/collections/{collection_id}/items/{feature_id}", summary="One feature", operation_id="getFeature",
            tags=["Data"], response_class=Response,
            responses={200: {"content": {GEOJSON: {}, "text/html": {}, "application/cap+xml": {}},
                             "description": "A feature"},
                       304: {"description": "The feature has not changed (If-None-Match)"}})
def item(
    request: Request,
    layer: LayerDep,
    engine: ReadEngineDep,
    settings: SettingsDep,
    feature_id: Annotated[str, FastPath(max_length=100, description="The feature's id")],
    crs: Annotated[str | None, Query(max_length=200, description="CRS of the response (URI)")] = None,
    f: Annotated[Literal["json", "html", "cap"] | None, Query(description="cap: the incident as a CAP 1.2 "
                                                                         "alert")] = None,
) -> Response:
    """One feature by id; its ETag changes with the row and the layer's file.

    ``If-Match`` on writes, ``If-None-Match`` here.
    """
    fmt = negotiate(request, ("json", "html", "cap"))
    out_crs = queries.parse_crs(crs)
    key = layer.feature_key(feature_id)
    with engine.connect() as conn:
        tag = edits.etag(conn, layer, key)
        if tag is None:
            raise NotFound(f"layer {layer.id!r} has no feature {feature_id!r}", param="featureId")
        if not_modified(request, tag):
            return Response(status_code=304, headers={"ETag": tag})
        found = None if fmt == "cap" else features.item(conn, layer, key, out_crs)
    if fmt == "cap":
        return alerts.alert_response(request, engine, settings, layer, key, {"ETag": tag})
    if found is None:  # deleted between the two reads
        raise NotFound(f"layer {layer.id!r} has no feature {feature_id!r}", param="featureId")
    feature = json.loads(found)
    feature["links"] = [
        _link(str(request.url), "self", GEOJSON),
        _link(str(request.url_for("collection", collection_id=layer.id)), "collection", "application/json"),
    ]
    headers = {"Content-Crs": f"<{out_crs.uri}>", "ETag": tag}
    if fmt == "html":
        return HTMLResponse(html.feature(layer, feature), headers=headers)
    return Response(json.dumps(feature), media_type=GEOJSON, headers=headers)


@router.get("/collections/{collection_id}/items/{feature_id}/history", summary="A feature's history",
            operation_id="getFeatureHistory", tags=["Data"])
def item_history(
    layer: LayerDep,
    engine: ReadEngineDep,
    feature_id: Annotated[str, FastPath(max_length=100, description="The feature's id")],
) -> JSONResponse:
    """Every write of the feature from the audit trail, oldest first: when, which key, what changed (200 at most)."""
    key = layer.feature_key(feature_id)
    with engine.connect() as conn:
        steps = edits.history(conn, layer, key)
    if steps is None:
        raise NotFound(f"layer {layer.id!r} has no feature {feature_id!r}", param="featureId")
    return JSONResponse({"layer": layer.id, "id": key, "steps": steps})


@router.get("/collections/{collection_id}/duplicates", summary="Possible duplicates of a report, before it is saved",
            operation_id="getPossibleDuplicates", tags=["Data"])
def possible_duplicates(
    layer: LayerDep,
    engine: ReadEngineDep,
    lon: Annotated[float, Query(ge=-180, le=180, allow_inf_nan=False, description="Longitude (CRS84)")],
    lat: Annotated[float, Query(ge=-90, le=90, allow_inf_nan=False, description="Latitude (CRS84)")],
    type_: Annotated[str, Query(alias="type", min_length=1, max_length=63, description="The report's kind")],
    at: Annotated[datetime | None, Query(description="When it was reported (default now)")] = None,
) -> JSONResponse:
    """Active features of a compatible kind near the point in space and time (the layer's ``duplicates`` rules)."""
    if layer.duplicates is None:
        raise NotFound(f"layer {layer.id!r} keeps no duplicate rules", param="collectionId")
    when = at or datetime.now(UTC)
    if when.tzinfo is None:
        raise InvalidInput("at: give a time zone (e.g. 2026-11-30T08:15:00+07:00)", param="at")
    with engine.connect() as conn:
        found = duplicates.possible(conn, layer, {"type": "Point", "coordinates": [lon, lat]},
                                    duplicates.check_kind(layer, type_), when)
    return JSONResponse({"layer": layer.id, "possible_duplicates": found})
