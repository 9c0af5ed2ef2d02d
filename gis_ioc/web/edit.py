"""OGC API – Features Part 4 (create, replace, update, delete) and file imports, for keyed callers."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Header, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from gis_ioc import auth, edits, features, ingest
from gis_ioc.catalog import Layer
from gis_ioc.errors import InvalidInput, PayloadTooLarge
from gis_ioc.web.deps import CatalogDep, EngineDep, LayerDep, PrincipalDep, SettingsDep

router = APIRouter(tags=["Edit"])
GEOJSON = "application/geo+json"
FEATURE_BODY = {
    "required": True,
    "content": {GEOJSON: {"schema": {"type": "object", "description": "A GeoJSON Feature"}},
                "application/json": {"schema": {"type": "object", "description": "A GeoJSON Feature"}}},
}


async def _body(request: Request, limit: int) -> Any:
    raw = await request.body()
    if len(raw) > limit:
        raise PayloadTooLarge(f"body: {len(raw):,} bytes is over the limit of {limit:,}", param="body")
    return edits.parse_json(raw)


def _feature_response(request: Request, engine: Any, layer: Layer, feature_id: Any, status: int) -> Response:
    with engine.connect() as conn:
        found = features.item(conn, layer, feature_id)
        tag = edits.etag(conn, layer, feature_id)
    location = str(request.url_for("item", collection_id=layer.id, feature_id=str(feature_id)))
    headers = {"Location": location, "ETag": tag or ""}
    return Response(found or "{}", status_code=status, media_type=GEOJSON, headers=headers)


@router.post("/collections/{collection_id}/items", summary="Add a feature", operation_id="createFeature",
             status_code=201, openapi_extra={"requestBody": FEATURE_BODY})
async def create_feature(request: Request, layer: LayerDep, engine: EngineDep, settings: SettingsDep,
                         principal: PrincipalDep) -> Response:
    """Add a feature (GeoJSON Feature in CRS84); 201 with its Location and ETag."""
    who = auth.require(principal, edits.writer_role(layer), f"writing to {layer.id}")
    body = await _body(request, settings.max_body_bytes)
    with engine.begin() as conn:
        new_id = edits.create(conn, layer, body, who, settings.region_extent)
    return _feature_response(request, engine, layer, new_id, 201)


async def _change(request: Request, layer: Layer, engine: Any, settings: Any, principal: Any, feature_id: str,
                  if_match: str | None, partial: bool) -> Response:
    who = auth.require(principal, edits.writer_role(layer), f"writing to {layer.id}")
    body = await _body(request, settings.max_body_bytes)
    key = layer.feature_key(feature_id)
    with engine.begin() as conn:
        edits.change(conn, layer, key, body, who, if_match, settings.region_extent, partial=partial)
    return _feature_response(request, engine, layer, key, 200)


@router.put("/collections/{collection_id}/items/{feature_id}", summary="Replace a feature",
            operation_id="replaceFeature", openapi_extra={"requestBody": FEATURE_BODY})
async def replace_feature(request: Request, layer: LayerDep, engine: EngineDep, settings: SettingsDep,
                          principal: PrincipalDep, feature_id: str,
                          if_match: Annotated[str | None, Header()] = None) -> Response:
    """Replace a feature; with ``If-Match`` only if it has not changed since (else 412)."""
    return await _change(request, layer, engine, settings, principal, feature_id, if_match, partial=False)


@router.patch("/collections/{collection_id}/items/{feature_id}", summary="Update a feature",
              operation_id="updateFeature", openapi_extra={"requestBody": FEATURE_BODY})
async def update_feature(request: Request, layer: LayerDep, engine: EngineDep, settings: SettingsDep,
                         principal: PrincipalDep, feature_id: str,
                         if_match: Annotated[str | None, Header()] = None) -> Response:
    """Change some properties (and/or the geometry) of a feature; incident status follows the lifecycle."""
    return await _change(request, layer, engine, settings, principal, feature_id, if_match, partial=True)


@router.delete("/collections/{collection_id}/items/{feature_id}", summary="Delete a feature",
               operation_id="deleteFeature", status_code=204)
def delete_feature(layer: LayerDep, engine: EngineDep, principal: PrincipalDep, feature_id: str,
                   if_match: Annotated[str | None, Header()] = None) -> Response:
    """Delete a feature; with ``If-Match`` only if it has not changed since (else 412)."""
    who = auth.require(principal, edits.writer_role(layer), f"writing to {layer.id}")
    with engine.begin() as conn:
        edits.delete(conn, layer, layer.feature_key(feature_id), who, if_match)
    return Response(status_code=204)


def _saved(upload: UploadFile, folder: str, limit: int) -> Path:
    name = Path(upload.filename or "upload").name
    path = Path(folder) / name
    with open(path, "wb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)
    if path.stat().st_size > limit:
        raise PayloadTooLarge(f"file: {path.stat().st_size:,} bytes is over the limit of {limit:,}", param="file")
    return path


def _report(report: ingest.LoadReport) -> dict[str, Any]:
    return {"layer": report.layer, "mode": report.mode, "rowsRead": report.rows_read, "loaded": report.rows_loaded,
            "repaired": report.repaired, "refused": report.refused, "sourceCrs": report.source_crs,
            "seconds": round(report.seconds, 3)}


@router.post("/collections/{collection_id}/import", summary="Load a file into a layer", operation_id="importFile")
def import_file(layer: LayerDep, engine: EngineDep, catalog: CatalogDep, settings: SettingsDep,
                principal: PrincipalDep, file: Annotated[UploadFile, File(description="GeoJSON, GeoPackage, "
                                                                          "zipped Shapefile, FlatGeobuf, KML, CSV")],
                mode: Annotated[str, Form()] = "append", crs: Annotated[str | None, Form()] = None,
                strict: Annotated[bool, Form()] = False) -> JSONResponse:
    """Load an uploaded file into the layer in one transaction (the same checks as ``gis-ioc load``)."""
    who = auth.require(principal, edits.writer_role(layer), f"importing into {layer.id}")
    if mode not in ingest.MODES:
        raise InvalidInput(f"mode: {mode!r} is not one of {', '.join(ingest.MODES)}", param="mode")
    with tempfile.TemporaryDirectory() as folder:
        path = _saved(file, folder, settings.max_body_bytes)
        report = ingest.load(engine, catalog, path, layer.id, crs=crs, mode=mode, strict=strict,  # type: ignore[arg-type]
                             region=settings.region_extent)
    with engine.begin() as conn:
        auth.audit(conn, who, layer.id, None, "import", None, _report(report) | {"file": file.filename})
    return JSONResponse(_report(report))


@router.post("/collections", summary="Import a file as a new layer", operation_id="createLayer", status_code=201)
def create_layer(request: Request, engine: EngineDep, catalog: CatalogDep, settings: SettingsDep,
                 principal: PrincipalDep, file: Annotated[UploadFile, File(description="The file")],
                 id: Annotated[str, Form(description="Id of the new layer (a-z, 0-9, _)")],
                 title: Annotated[str | None, Form()] = None, crs: Annotated[str | None, Form()] = None,
                 datetime_column: Annotated[str | None, Form()] = None) -> JSONResponse:
    """A new layer from a file's columns, registered for every server process (admin)."""
    who = auth.require(principal, "admin", "creating a layer")
    with tempfile.TemporaryDirectory() as folder:
        path = _saved(file, folder, settings.max_body_bytes)
        report = ingest.import_layer(engine, catalog, path, id, title=title, crs=crs, datetime_column=datetime_column,
                                     region=settings.region_extent)
    with engine.begin() as conn:
        auth.audit(conn, who, id, None, "create_layer", None, _report(report) | {"file": file.filename})
    location = str(request.url_for("collection", collection_id=id))
    return JSONResponse(_report(report), status_code=201, headers={"Location": location})
