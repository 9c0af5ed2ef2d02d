"""The published contract: FastAPI's OpenAPI document, made exact.

FastAPI describes the parameters and the success of each route; this adds what the service does
around them: the one error shape (``Error``) for every status a route can answer (400 for any
parameter, and for a NUL anywhere in the URL; 401 and 403 for keys; 404 for what a path names; 408,
412 and 413 for bodies and preconditions; 503 for the database, a timeout or a full queue), drops
FastAPI's 422 (the service answers 400), and describes OGC's comma-separated arrays as arrays.
"""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA = {
    "type": "object",
    "title": "Error",
    "required": ["code", "description"],
    "properties": {
        "code": {"type": "string", "description": "What went wrong, for programs (invalid_input, not_found, …)"},
        "description": {"type": "string", "description": "What went wrong, for people; names the parameter"},
        "parameter": {"type": "string", "description": "The parameter, field or header at fault"},
        "request_id": {"type": "string", "description": "The request's id (X-Request-ID), as logged"},
    },
}
_POSITION = {"type": "array", "minItems": 2, "maxItems": 3, "items": {"type": "number"}}
_LINE = {"type": "array", "minItems": 2, "items": _POSITION}
_RING = {"type": "array", "minItems": 4, "items": _POSITION}
_POLYGON = {"type": "array", "minItems": 1, "items": _RING}


def _geometry(kind: str, coordinates: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "title": kind, "required": ["type", "coordinates"],
            "properties": {"type": {"type": "string", "enum": [kind]}, "coordinates": coordinates}}


GEOMETRY_SCHEMA = {
    "title": "Geometry",
    "description": "A GeoJSON geometry in longitude, latitude (CRS84); each layer takes some types only",
    "oneOf": [_geometry("Point", _POSITION), _geometry("LineString", _LINE), _geometry("Polygon", _POLYGON),
              _geometry("MultiPoint", {"type": "array", "items": _POSITION}),
              _geometry("MultiLineString", {"type": "array", "items": _LINE}),
              _geometry("MultiPolygon", {"type": "array", "items": _POLYGON})],
}
FEATURE_SCHEMA = {
    "type": "object", "title": "Feature", "required": ["type", "geometry"],
    "properties": {
        "type": {"type": "string", "enum": ["Feature"]},
        "id": {"oneOf": [{"type": "string"}, {"type": "integer"}], "description": "Ignored: the service keeps ids"},
        "geometry": {"$ref": "#/components/schemas/Geometry"},
        "properties": {"type": ["object", "null"], "description": "The layer's writable properties (see "
                                                                   "/collections/{collectionId}/queryables)"},
    },
}
FEATURE_CHANGE_SCHEMA = {
    "type": "object", "title": "FeatureChange",
    "description": "Some properties and/or the geometry of a feature (the rest stays)",
    "properties": {**FEATURE_SCHEMA["properties"], "type": {"type": "string", "enum": ["Feature"]}},  # type: ignore[dict-item]
}
REASONS = {
    304: "Not modified since the ETag given in If-None-Match",
    400: "A parameter, field or header is wrong (the error names it)",
    401: "An API key is needed, or the one given is unknown or revoked",
    403: "The API key's role is too weak",
    404: "What the path names does not exist",
    408: "The request body stopped arriving",
    412: "If-Match names another version of the feature (or a weak tag)",
    413: "The body is over the size limit",
    503: "The database is unreachable, the query ran past its time, or heavy work is queued to the limit; "
         "try again after Retry-After",
}
OPEN = {"getHealth", "getReady", "openViewSession", "endViewSession"}  # answered without a key
WRITES = {"createFeature", "replaceFeature", "updateFeature", "deleteFeature", "importFile", "createLayer"}
CONDITIONAL = {"replaceFeature", "updateFeature", "deleteFeature"}
HTML_VIEWS = {"viewWall", "viewIncident", "viewChoropleth"}
# OGC API parameters that are comma-separated lists (style form, explode false)
ARRAYS = {
    "bbox": {"type": "array", "minItems": 4, "maxItems": 6, "items": {"type": "number"}},
    "sortby": {"type": "array", "minItems": 1, "maxItems": 20, "items": {"type": "string", "pattern": r"^[+-]?\w+$"}},
    "properties": {"type": "array", "minItems": 1, "maxItems": 100, "items": {"type": "string", "pattern": r"^\w+$"}},
}


def _error(status: int, html: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": ERROR}}
    if html:
        content["text/html"] = {"schema": {"type": "string"}}
    return {"description": REASONS[status], "content": content}


def exact(document: dict[str, Any]) -> dict[str, Any]:
    """The document with every status each route can answer, and typed list parameters."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update({"Error": ERROR_SCHEMA, "Geometry": GEOMETRY_SCHEMA, "Feature": FEATURE_SCHEMA,
                    "FeatureChange": FEATURE_CHANGE_SCHEMA})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path, operations in document["paths"].items():
        for operation in operations.values():
            name = operation.get("operationId", "")
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query" and parameter["name"] in ARRAYS:
                    parameter["schema"] = ARRAYS[parameter["name"]]
                    parameter["style"], parameter["explode"] = "form", False
            statuses = [400, 503]
            if name not in OPEN:
                statuses.append(401)
            if name in WRITES:
                statuses += [403, 408, 413]
            if "{" in path:
                statuses.append(404)
            if name in CONDITIONAL:
                statuses.append(412)
            for status in statuses:
                if str(status) not in responses:
                    responses[str(status)] = _error(status, html=name in HTML_VIEWS and status in (401, 404))
            if name == "openViewSession":
                responses["401"] = {"description": "The key is unknown or revoked: the sign-in page again",
                                    "content": {"text/html": {"schema": {"type": "string"}}}}
            operation["responses"] = dict(sorted(responses.items()))
    return document


def with_collections(document: dict[str, Any], layers: list[Any]) -> dict[str, Any]:
    """The document with one items path per collection, listing its properties as query parameters.

    GDAL and QGIS read the parameters of ``/collections/{id}/items`` to learn which attribute
    filters the server evaluates (``ogr2ogr -where "severity='extreme'"`` becomes ``?severity=extreme``).
    """
    from gis_ioc.catalog import JSON_SCHEMA_TYPES  # the types queryables and schemas use

    template = document["paths"]["/collections/{collection_id}/items"]["get"]
    standard = [p for p in template.get("parameters", []) if p.get("in") != "path"]
    taken = {p["name"] for p in standard}
    paths = dict(document["paths"])
    for layer in layers:
        own = []
        for name, prop in layer.properties.items():
            if name in taken:
                continue
            schema = dict(JSON_SCHEMA_TYPES[prop.type])
            if prop.enum:
                schema["enum"] = prop.enum
            own.append({"name": name, "in": "query", "required": False, "schema": schema,
                        "description": f"Only features whose {name} equals this value"})
        operation = {**template, "operationId": f"getFeatures.{layer.id}", "parameters": [*standard, *own],
                     "summary": f"Features of {layer.id}", "description": layer.title}
        operation["responses"] = {k: v for k, v in template["responses"].items() if k != "404"}
        paths[f"/collections/{layer.id}/items"] = {"get": operation}
    return {**document, "paths": paths}
