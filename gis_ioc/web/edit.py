"""OGC API – Features Part 4 (create, replace, update, delete) and file imports, for keyed callers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi import Path as FastPath
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from gis_ioc import auth, cap, db, duplicates, edits, features, ingest, limits, merge
from gis_ioc.catalog import LAYER_ID, Layer, quote_table
from gis_ioc.errors import GisIocError, InvalidInput, PayloadTooLarge, QueryTimeout, RequestTimeout
from gis_ioc.settings import Settings
from gis_ioc.web.deps import CatalogDep, EngineDep, Heavy, PrincipalDep, SettingsDep, WritableLayerDep

router = APIRouter(tags=["Edit"])
FeatureId = Annotated[str, FastPath(max_length=100, description="The feature's id")]
IfMatch = Annotated[str | None, Header(max_length=2000, description="The feature's ETag: change it only if it is "
                                                                  "still that version (strong comparison)")]
GEOJSON = "application/geo+json"
FEATURE_BODY = {
    "required": True,
    "content": {**{media: {"schema": {"$ref": "#/components/schemas/Feature"}}
                   for media in (GEOJSON, "application/json")},
                cap.MEDIA: {"schema": {"type": "string", "description": "A CAP 1.2 alert (incidents only)"}}},
}
CHANGE_BODY = {
    "required": True,
    "content": {media: {"schema": {"$ref": "#/components/schemas/FeatureChange"}}
                for media in (GEOJSON, "application/json")},
}


async def _bytes(request: Request) -> bytes:
    """A body read as it arrives, up to ``limits.MAX_FEATURE_BYTES``."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.MAX_FEATURE_BYTES:
            raise PayloadTooLarge(f"body: a feature is at most {limits.MAX_FEATURE_BYTES:,} bytes; load files with "
                                  "the import route", param="body")
        chunks.append(chunk)
    return b"".join(chunks)


async def _body(request: Request) -> Any:
    """A JSON body, parsed with its nesting bounded."""
    return edits.parse_json(await _bytes(request))


def _is_cap(request: Request) -> bool:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return media in (cap.MEDIA, "application/xml", "text/xml")


def _feature_response(request: Request, conn: Any, layer: Layer, feature_id: Any, status: int,
                      with_duplicates: bool = False) -> Response:
    """The feature as the write left it, read in the write's own transaction.

    Once the write commits nothing is left to fail: a database gone after the commit cannot turn it into an error.
    """
    found = features.item(conn, layer, feature_id)
    tag = edits.etag(conn, layer, feature_id)
    if found and with_duplicates and layer.duplicates:  # a foreign member of the GeoJSON Feature
        body = json.loads(found)
        body["possible_duplicates"] = duplicates.of_feature(conn, layer, feature_id)
        found = json.dumps(body)
    location = str(request.url_for("item", collection_id=layer.id, feature_id=str(feature_id)))
    headers = {"Location": location, "ETag": tag or ""}
    return Response(found or "{}", status_code=status, media_type=GEOJSON, headers=headers)


@router.post("/collections/{collection_id}/items", summary="Add a feature", operation_id="createFeature",
             status_code=201, openapi_extra={"requestBody": FEATURE_BODY}, response_class=Response,
             responses={201: {"content": {GEOJSON: {}}, "description": "The feature as stored (Location, ETag)"}})
async def create_feature(request: Request, layer: WritableLayerDep, engine: EngineDep, settings: SettingsDep,
                         principal: PrincipalDep) -> Response:
    """Add a feature (GeoJSON Feature in CRS84); 201 with its Location and ETag.

    A new incident comes back with ``possible_duplicates``: active incidents of a compatible type near it in
    space and time (the layer's ``duplicates`` rules), best first.
    """
    who = auth.require(principal, edits.writer_role(layer), f"writing to {layer.id}")
    if _is_cap(request):  # another agency's CAP alert: the incident it describes, with its area
        if not cap.supports(layer.properties):
            raise InvalidInput(f"body: CAP alerts are taken by layers of incidents, not {layer.id!r}", param="body")
        found = cap.parse(await _bytes(request))
        if len(found) != 1:
            raise InvalidInput(f"body: one alert per request ({len(found)} given); load files of several with "
                               "the import route or gis-ioc load", param="body")
        return _cap_alert(request, engine, layer, found[0], who, settings)
    body = await _body(request)
    with engine.begin() as conn:
        new_id = edits.create(conn, layer, body, who, settings.region_extent)
        return _feature_response(request, conn, layer, new_id, 201, with_duplicates=True)


def _cap_alert(request: Request, engine: Any, layer: Layer, feature: dict[str, Any], who: auth.Principal,
               settings: Settings) -> Response:
    """Another agency's alert: a new incident (201), or the incident an earlier alert made, changed (200).

    An Update or Cancel changes the incident that any alert it references made (the same alert again changes
    nothing), in one transaction with its audit.
    """
    message: cap.Message = feature.pop("cap")
    table = quote_table(layer.table)
    with engine.begin() as conn:
        found = cap.linked(conn, table, message)
        if found is None:
            if message.kind == "Cancel":
                raise InvalidInput(f"body: the Cancel {message.ref} withdraws "
                                   f"{', '.join(message.references) or 'no alert'}: no incident here came from "
                                   "any of them", param="body")
            target = edits.create(conn, layer, feature, who, settings.region_extent)
            status = 201
        else:
            target, current = found
            change = cap.change_of(feature, message, current)
            if change is not None:
                edits.change(conn, layer, target, change, who, None, settings.region_extent, partial=True)
            status = 200
        cap.remember(conn, table, target, message)
        return _feature_response(request, conn, layer, target, status, with_duplicates=status == 201)


@router.post("/collections/{collection_id}/items/{feature_id}/merge", summary="Merge a duplicate report into this "
             "feature", operation_id="mergeFeature", response_class=Response,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                 "type": "object", "required": ["duplicate"], "properties": {"duplicate": {
                     "type": ["integer", "string"], "description": "The report of the same event"}}}}}}},
             responses={200: {"content": {GEOJSON: {}}, "description": "This feature, counting its reports"}})
async def merge_feature(request: Request, layer: WritableLayerDep, engine: EngineDep, principal: PrincipalDep,
                        feature_id: FeatureId, if_match: IfMatch = None) -> Response:
    """Link a duplicate report to this feature: the report keeps its row, source and time; counts see one event."""
    who = auth.require(principal, edits.writer_role(layer), f"writing to {layer.id}")
    main = layer.feature_key(feature_id)
    report = merge.duplicate_id(layer, await _body(request))
    with engine.begin() as conn:
        merge.merge(conn, layer, main, report, who, if_match)
        return _feature_response(request, conn, layer, main, 200)


@router.delete("/collections/{collection_id}/items/{feature_id}/merge/{duplicate_id}",
               summary="Undo a merge: the report stands alone again", operation_id="unmergeFeature",
               response_class=Response,
               responses={200: {"content": {GEOJSON: {}}, "description": "This feature, counting its reports"}})
def unmerge_feature(request: Request, layer: WritableLayerDep, engine: EngineDep, principal: PrincipalDep,
                    feature_id: FeatureId,
                    duplicate_id: Annotated[str, FastPath(max_length=100, description="The merged report")],
                    ) -> Response:
    """Undo a merge (audited on both features)."""
    who = auth.require(principal, edits.writer_role(layer), f"writing to {layer.id}")
    main = layer.feature_key(feature_id)
    report = merge.duplicate_id(layer, {"duplicate": duplicate_id})
    with engine.begin() as conn:
        merge.unmerge(conn, layer, main, report, who)
        return _feature_response(request, conn, layer, main, 200)


async def _change(request: Request, layer: Layer, engine: Any, settings: Any, principal: Any, feature_id: str,
                  if_match: str | None, partial: bool) -> Response:
    who = auth.require(principal, edits.writer_role(layer), f"writing to {layer.id}")
    body = await _body(request)
    key = layer.feature_key(feature_id)
    with engine.begin() as conn:
        edits.change(conn, layer, key, body, who, if_match, settings.region_extent, partial=partial)
        return _feature_response(request, conn, layer, key, 200)


@router.put("/collections/{collection_id}/items/{feature_id}", summary="Replace a feature",
            operation_id="replaceFeature", openapi_extra={"requestBody": FEATURE_BODY}, response_class=Response,
            responses={200: {"content": {GEOJSON: {}}, "description": "The feature as stored (ETag)"}})
async def replace_feature(request: Request, layer: WritableLayerDep, engine: EngineDep, settings: SettingsDep,
                          principal: PrincipalDep, feature_id: FeatureId,
                          if_match: IfMatch = None) -> Response:
    """Replace a feature; with ``If-Match`` only if it has not changed since (else 412)."""
    return await _change(request, layer, engine, settings, principal, feature_id, if_match, partial=False)


@router.patch("/collections/{collection_id}/items/{feature_id}", summary="Update a feature",
              operation_id="updateFeature", openapi_extra={"requestBody": CHANGE_BODY}, response_class=Response,
              responses={200: {"content": {GEOJSON: {}}, "description": "The feature as stored (ETag)"}})
async def update_feature(request: Request, layer: WritableLayerDep, engine: EngineDep, settings: SettingsDep,
                         principal: PrincipalDep, feature_id: FeatureId,
                         if_match: IfMatch = None) -> Response:
    """Change some properties (and/or the geometry) of a feature; incident status follows the lifecycle."""
    return await _change(request, layer, engine, settings, principal, feature_id, if_match, partial=True)


@router.delete("/collections/{collection_id}/items/{feature_id}", summary="Delete a feature",
               operation_id="deleteFeature", status_code=204, response_class=Response,
               responses={204: {"description": "Deleted"}})
def delete_feature(layer: WritableLayerDep, engine: EngineDep, principal: PrincipalDep, feature_id: FeatureId,
                   if_match: IfMatch = None) -> Response:
    """Delete a feature; with ``If-Match`` only if it has not changed since (else 412)."""
    who = auth.require(principal, edits.writer_role(layer), f"writing to {layer.id}")
    with engine.begin() as conn:
        edits.delete(conn, layer, layer.feature_key(feature_id), who, if_match)
    return Response(status_code=204)


IMPORT_FORM = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary",
                     "description": "GeoJSON, GeoPackage, zipped Shapefile, FlatGeobuf, KML or CSV"},
            "mode": {"type": "string", "enum": list(ingest.MODES), "default": "append"},
            "crs": {"type": "string", "maxLength": 200, "description": "CRS of the file, e.g. EPSG:9216"},
            "strict": {"type": "boolean", "default": False,
                       "description": "Refuse invalid geometries instead of repairing them"},
        }}}},
}
NEW_LAYER_FORM = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file", "id"],
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "The file"},
            "id": {"type": "string", "pattern": LAYER_ID, "maxLength": ingest.MAX_NEW_LAYER_ID,
                   "description": "Id of the new layer"},
            "title": {"type": "string", "maxLength": 200},
            "crs": {"type": "string", "maxLength": 200},
            "datetime_column": {"type": "string", "maxLength": 63},
        }}}},
}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


async def _form(request: Request) -> tuple[UploadFile, dict[str, str]]:
    """The multipart form of an import, read after the key was checked, streamed to a spool file.

    The request's statement timeout is lifted: a load is bounded by the upload's size, and is all or nothing.
    """
    budget = db.BUDGET.get()
    if budget is not None:
        budget.timeout_ms = 0
    try:
        form = await request.form(max_files=1, max_fields=8, max_part_size=64 * 1024)
    except HTTPException as err:  # the multipart parser's own complaints
        raise InvalidInput(f"body: not a multipart form with a file ({err.detail})", param="body") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidInput("file: an import needs a file part named 'file'", param="file")
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    for name, value in fields.items():
        limits.check_text(value, name, 1000)
    return upload, fields


def _saved(upload: UploadFile, folder: str) -> Path:
    """The upload in a file of its own name (made safe: a name like ``..`` or ``../x`` is not a path)."""
    name = _SAFE_NAME.sub("_", Path(upload.filename or "").name).lstrip(".") or "upload"
    path = Path(folder) / name
    with open(path, "wb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)
    return path


@contextlib.asynccontextmanager
async def _cancelled_if_client_leaves(request: Request) -> AsyncIterator[ingest.Progress]:
    """While an import runs, a client that goes away cancels it: nothing is committed.

    Yields the load's progress callback, which stops the load between chunks; a statement running when the
    client leaves is cancelled on the server.
    """
    budget = db.BUDGET.get()

    async def watch() -> None:
        while True:
            try:
                message = await request.receive()
            except RequestTimeout:  # the body is over: only a disconnect is still to come
                continue
            if message["type"] == "http.disconnect":
                if budget is not None:
                    await asyncio.to_thread(budget.cancel)
                return

    def stop_if_gone(rows: int, total: int) -> None:
        if budget is not None and budget.cancelled:
            raise QueryTimeout("the client went away: its import was cancelled and nothing was written")

    watching = asyncio.create_task(watch())
    try:
        yield stop_if_gone
    finally:
        watching.cancel()


def _report(report: ingest.LoadReport) -> dict[str, Any]:
    return {"layer": report.layer, "mode": report.mode, "rowsRead": report.rows_read, "loaded": report.rows_loaded,
            "repaired": report.repaired, "refused": report.refused, "sourceCrs": report.source_crs,
            "seconds": round(report.seconds, 3)}


@contextlib.contextmanager
def _upload_folder(upload: UploadFile) -> Iterator[str]:
    """A private folder for the upload; messages name the client's file, never the server's folder."""
    with tempfile.TemporaryDirectory(prefix="gis-ioc-import-") as folder:
        try:
            yield folder
        except GisIocError as err:
            shown = Path(upload.filename or "upload").name
            err.message = err.message.replace(f"/vsizip/{folder}/", "").replace(folder + "/", "").replace(
                folder, shown)
            err.args = (err.message,)
            raise


def _flag(value: str | None, param: str) -> bool:
    if value is None or value == "":
        return False
    if value.lower() in ("true", "1", "yes", "on"):
        return True
    if value.lower() in ("false", "0", "no", "off"):
        return False
    raise InvalidInput(f"{param}: {value!r} is not true or false", param=param)


@router.post("/collections/{collection_id}/import", summary="Load a file into a layer", operation_id="importFile",
             openapi_extra={"requestBody": IMPORT_FORM}, dependencies=[Heavy])
async def import_file(request: Request, layer: WritableLayerDep, engine: EngineDep, catalog: CatalogDep,
                      settings: SettingsDep, principal: PrincipalDep) -> JSONResponse:
    """Load an uploaded file into the layer in one transaction (the same checks as ``gis-ioc load``).

    The key is checked before the upload is read; the upload is counted as it arrives.
    """
    who = auth.require(principal, edits.writer_role(layer), f"importing into {layer.id}")
    upload, fields = await _form(request)
    mode = fields.get("mode") or "append"
    if mode not in ingest.MODES:
        raise InvalidInput(f"mode: {mode!r} is not one of {', '.join(ingest.MODES)}", param="mode")
    strict = _flag(fields.get("strict"), "strict")
    with _upload_folder(upload) as folder:
        path = await run_in_threadpool(_saved, upload, folder)
        async with _cancelled_if_client_leaves(request) as progress:
            report = await run_in_threadpool(functools.partial(
                ingest.load, engine, catalog, path, layer.id, crs=fields.get("crs") or None, mode=mode,  # type: ignore[arg-type]
                strict=strict, region=settings.region_extent, progress=progress))
    await run_in_threadpool(_audit, engine, who, layer.id, "import", _report(report) | {"file": upload.filename})
    return JSONResponse(_report(report))


def _audit(engine: Any, who: Any, layer_id: str, operation: str, details: dict[str, Any]) -> None:
    with engine.begin() as conn:
        auth.audit(conn, who, layer_id, None, operation, None, details)


@router.post("/collections", summary="Import a file as a new layer", operation_id="createLayer", status_code=201,
             openapi_extra={"requestBody": NEW_LAYER_FORM}, dependencies=[Heavy])
async def create_layer(request: Request, engine: EngineDep, catalog: CatalogDep, settings: SettingsDep,
                       principal: PrincipalDep) -> JSONResponse:
    """A new layer from a file's columns, registered for every server process (admin)."""
    who = auth.require(principal, "admin", "creating a layer")
    upload, fields = await _form(request)
    layer_id = fields.get("id")
    if not layer_id:
        raise InvalidInput("id: the new layer needs an id (a-z, 0-9, _)", param="id")
    with _upload_folder(upload) as folder:
        path = await run_in_threadpool(_saved, upload, folder)
        async with _cancelled_if_client_leaves(request) as progress:
            report = await run_in_threadpool(functools.partial(
                ingest.import_layer, engine, catalog, path, layer_id, title=fields.get("title") or None,
                crs=fields.get("crs") or None, datetime_column=fields.get("datetime_column") or None,
                region=settings.region_extent, source_label=Path(upload.filename or "upload").name,
                progress=progress))
    await run_in_threadpool(_audit, engine, who, layer_id, "create_layer",
                            _report(report) | {"file": upload.filename})
    location = str(request.url_for("collection", collection_id=layer_id))
    return JSONResponse(_report(report), status_code=201, headers={"Location": location})
