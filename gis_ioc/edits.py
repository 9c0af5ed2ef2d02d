"""Writing features (OGC API – Features Part 4): create, replace, update, delete.

Each write is one transaction: the row, the audit record and the layer version (kept by a
trigger). A body is checked against the catalog like a file row (types, allowed values,
geometry type, province extent); a stale ``If-Match`` is a 412; incident status changes
follow the lifecycle and stamp their times.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import shapely
import shapely.geometry
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gis_ioc import auth, ingest, limits, queries
from gis_ioc.auth import Principal
from gis_ioc.catalog import Layer, definition_digest, quote_ident, quote_table
from gis_ioc.errors import InvalidInput, NotFound, PreconditionFailed

LIFECYCLE: dict[str, tuple[str, ...]] = {
    "new": ("verified", "rejected"),
    "verified": ("dispatched", "rejected"),
    "rejected": ("reopened",),
    "dispatched": ("in_progress",),
    "in_progress": ("resolved",),
    "resolved": ("closed", "reopened"),
    "closed": ("reopened",),
    "reopened": ("verified", "dispatched", "in_progress"),
}
LIFECYCLE_FIELDS = {"status", "reported_at", "verified_at", "dispatched_at", "resolved_at", "closed_at"}
STAMPS = {"verified": "verified_at", "dispatched": "dispatched_at", "resolved": "resolved_at", "closed": "closed_at"}
INCIDENTS = "incidents"
CLOCK_SKEW = timedelta(minutes=5)  # a reporter's clock may run this much ahead of the server's


def writer_role(layer: Layer) -> str:
    """Who may write a layer: admin units need an admin, other layers an operator."""
    return "admin" if layer.id == "admin_units" else "operator"


# GeoJSON's geometry types (RFC 7946, case-sensitive) and how deep positions lie in their coordinates
POSITION_DEPTH = {"Point": 0, "MultiPoint": 1, "LineString": 1, "MultiLineString": 2, "Polygon": 2,
                  "MultiPolygon": 3}


def check_geojson(value: Any, param: str = "geometry") -> None:
    """Refuse a geometry RFC 7946 refuses, saying what is wrong (shapely would read many of them leniently)."""
    if not isinstance(value, dict) or "type" not in value:
        raise InvalidInput(f"{param}: not a GeoJSON geometry object", param=param)
    kind = value["type"]
    if kind in ("Feature", "FeatureCollection"):
        raise InvalidInput(f"{param}: a {kind} is not a geometry (send the feature's geometry member)", param=param)
    if "crs" in value:
        raise InvalidInput(f"{param}: GeoJSON (RFC 7946) has no crs member; coordinates are longitude, latitude "
                           "in WGS 84 (CRS84)", param=param)
    if kind == "GeometryCollection":
        parts = value.get("geometries")
        if not isinstance(parts, list | tuple):
            raise InvalidInput(f"{param}.geometries: a GeometryCollection needs a list of geometries", param=param)
        for part in parts:
            check_geojson(part, param)
        return
    if kind not in POSITION_DEPTH:
        known = next((k for k in POSITION_DEPTH if isinstance(kind, str) and k.lower() == kind.lower()), None)
        hint = f" (types are case-sensitive: {known})" if known else ""
        raise InvalidInput(f"{param}: {str(kind)[:40]!r} is not a GeoJSON geometry type{hint}", param=param)
    coordinates: Any = value["coordinates"] if "coordinates" in value else None
    _check_positions(coordinates, POSITION_DEPTH[kind], kind, param)
    lines = [coordinates] if kind == "LineString" else coordinates if kind == "MultiLineString" else []
    if any(len(line) < 2 for line in lines):
        raise InvalidInput(f"{param}: a line needs at least two positions", param=param)
    rings = coordinates if kind == "Polygon" else [r for p in coordinates for r in p] if kind == "MultiPolygon" \
        else []
    for ring in rings:
        if len(ring) < 4 or list(ring[0]) != list(ring[-1]):
            raise InvalidInput(f"{param}: a polygon's ring is closed (its last position is its first) and has at "
                               "least four positions", param=param)


def _check_positions(value: Any, depth: int, kind: str, param: str) -> None:
    """Coordinates nested as the type says, each position 2 numbers (longitude, latitude)."""
    if depth == 0:
        if not isinstance(value, list | tuple) or not value or isinstance(value[0], list | tuple):
            raise InvalidInput(f"{param}: a {kind}'s position is one [longitude, latitude] pair", param=param)
        odd = next((n for n in value if isinstance(n, bool) or not isinstance(n, int | float)), None)
        if odd is not None:
            raise InvalidInput(f"{param}: coordinates must be numbers, not {type(odd).__name__} ({str(odd)[:20]!r})",
                               param=param)
        if len(value) == 3:
            raise InvalidInput(f"{param}: a position has a height (Z); layers keep longitude, latitude only: send "
                               "two numbers per position", param=param)
        if len(value) != 2:
            raise InvalidInput(f"{param}: a position is two numbers, longitude and latitude ({len(value)} given)",
                               param=param)
        return
    if not isinstance(value, list | tuple):
        raise InvalidInput(f"{param}: a {kind}'s coordinates are nested {depth + 1} lists deep", param=param)
    for item in value:
        _check_positions(item, depth - 1, kind, param)


def _geometry(layer: Layer, value: Any, region: tuple[float, float, float, float] | None) -> str:
    """A GeoJSON geometry checked for the layer, as hex EWKB."""
    check_geojson(value)
    try:
        geom = shapely.geometry.shape(value)
    except Exception as err:  # shapely raises several types (GeometryTypeError for an unknown type)
        reason = re.sub(r"^\w+Exception: ", "", str(err).splitlines()[0])[:120] if str(err) else "unreadable"
        raise InvalidInput(f"geometry: not a valid GeoJSON {str(value.get('type'))[:40]}: {reason}",
                           param="geometry") from None
    if geom.is_empty:
        raise InvalidInput("geometry: empty", param="geometry")
    vertices = int(shapely.get_num_coordinates(geom))
    if vertices > limits.MAX_FEATURE_VERTICES:
        raise InvalidInput(f"geometry: {vertices:,} vertices is over the limit of {limits.MAX_FEATURE_VERTICES:,} "
                           "for a feature written through the API (simplify it, or load it from a file)",
                           param="geometry")
    if not np.all(np.isfinite(shapely.get_coordinates(geom))):
        raise InvalidInput("geometry: coordinates must be finite numbers", param="geometry")
    if not geom.is_valid:
        raise InvalidInput(f"geometry: invalid ({shapely.is_valid_reason(geom)})", param="geometry")
    geom = shapely.force_2d(geom)
    allowed = set(layer.geometry.types)
    fixed = ingest._fix_geometry_types(np.asarray([geom], dtype=object), allowed)[0]
    if fixed.geom_type not in {t.value for t in allowed}:
        raise InvalidInput(f"geometry: a {geom.geom_type} cannot go into layer {layer.id!r}, which takes "
                           f"{', '.join(t.value for t in layer.geometry.types)}", param="geometry")
    if region is not None:
        xmin, ymin, xmax, ymax = fixed.bounds
        if xmin < region[0] or ymin < region[1] or xmax > region[2] or ymax > region[3]:
            raise InvalidInput(f"geometry: at {xmin:.4f}, {ymin:.4f} it lies far outside the province "
                               "(coordinates are longitude, latitude in CRS84)", param="geometry")
    return str(shapely.to_wkb(shapely.set_srid(fixed, 4326), hex=True, include_srid=True))


def _python(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.to_pydatetime()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _properties(layer: Layer, value: Any) -> dict[str, Any]:
    """Properties checked and converted like a file's columns (types, ranges, allowed values)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput("properties: must be an object", param="properties")
    out: dict[str, Any] = {}
    writable = layer.api_writable_properties
    for name, raw in value.items():
        param = f"properties.{name}"
        if name not in layer.properties:
            raise InvalidInput(f"{param}: layer {layer.id!r} has no property {name!r} "
                               f"(writable: {', '.join(p for p in writable if p != layer.id_column)})", param=param)
        if name not in writable or name == layer.id_column:
            raise InvalidInput(f"{param}: is kept by the service and cannot be written", param=param)
        prop = layer.properties[name]
        if raw is None:
            if prop.required:
                raise InvalidInput(f"{param}: is required", param=param)
            out[name] = None
            continue
        if isinstance(raw, dict | list):
            raise InvalidInput(f"{param}: must be a {prop.type.value}, not an object or list", param=param)
        try:
            converted = ingest._convert(name, prop, pd.Series([raw], dtype=object))
        except InvalidInput as err:
            raise InvalidInput(f"{param}: {err.message.split(': ', 1)[-1]}", param=param) from None
        result = _python(converted.iloc[0])
        if prop.enum is not None and result not in prop.enum:
            raise InvalidInput(f"{param}: {raw!r} is not one of {', '.join(prop.enum)}", param=param)
        if layer.id == INCIDENTS and name == "reported_at" and isinstance(result, datetime):
            latest = datetime.now(UTC) + CLOCK_SKEW
            if (result if result.tzinfo else result.replace(tzinfo=UTC)) > latest:
                raise InvalidInput(f"{param}: {raw!r} is in the future (at most {CLOCK_SKEW.seconds // 60} minutes "
                                   "ahead of the server's clock)", param=param)
        out[name] = result
    return out


def _feature_body(body: Any, partial: bool) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInput("body: not a GeoJSON Feature object", param="body")
    if not partial and body.get("type") != "Feature":
        raise InvalidInput("type: the body must be a GeoJSON Feature (\"type\": \"Feature\")", param="type")
    extra = set(body) - {"type", "id", "geometry", "properties", "links", "bbox"}
    if extra:
        raise InvalidInput(f"{sorted(extra)[0]}: not a member of a GeoJSON Feature", param=sorted(extra)[0])
    return body


def row_json(conn: Connection, layer: Layer, feature_id: Any, lock: bool) -> tuple[dict[str, Any], str] | None:
    """The current row (properties and geometry) and its ETag, locked for the write.

    The ETag is a digest of the whole row and of the layer's definition: after an edit of the layer's file
    (what a feature shows), a copy kept by a client is no longer confirmed (304) nor written over (412).
    """
    geom, key = quote_ident(layer.geometry.column), quote_ident(layer.id_column)
    sql = (f"SELECT to_jsonb(t) - :g || jsonb_build_object('geometry', ST_AsGeoJSON(t.{geom})::jsonb), "
           f"md5(t::text) FROM {quote_table(layer.table)} AS t WHERE t.{key} = :id{' FOR UPDATE' if lock else ''}")
    row = conn.execute(sa.text(sql), {"g": layer.geometry.column, "id": feature_id}).first()
    if row is None:
        return None
    return dict(row[0]), f'"{row[1]}-{definition_digest(layer)[:8]}"'


def etag(conn: Connection, layer: Layer, feature_id: Any) -> str | None:
    """The ETag of a feature (its row's and its layer definition's digests), or None when it does not exist."""
    found = row_json(conn, layer, feature_id, lock=False)
    return found[1] if found else None


def check_if_match(if_match: str | None, current: str, layer: Layer, feature_id: Any) -> None:
    """``If-Match`` with the strong comparison RFC 9110 asks for: a weak tag (``W/"…"``) never matches."""
    if if_match is None:
        return
    tags = {t.strip() for t in if_match.split(",")}
    if "*" not in tags and current not in tags:
        raise PreconditionFailed(f"If-Match: feature {feature_id} of {layer.id!r} changed since {if_match[:100]} "
                                 f"(now {current}), or the tag is weak; fetch it again", param="If-Match")


def _lifecycle(layer: Layer, old: dict[str, Any] | None, values: dict[str, Any]) -> None:
    """Incident status: only lifecycle transitions, each stamping its time."""
    if layer.id != INCIDENTS or "status" not in values:
        return
    new_status = values["status"]
    if old is None:
        if new_status not in (None, "new"):
            raise InvalidInput(f"properties.status: a new incident starts as 'new', not {new_status!r}",
                               param="properties.status")
        return
    current = old.get("status")
    if new_status == current:
        return
    allowed = LIFECYCLE.get(str(current), ())
    if new_status not in allowed:
        raise InvalidInput(
            f"properties.status: an incident cannot go from {current!r} to {new_status!r} "
            f"(from {current!r} it can go to {', '.join(allowed) or 'nothing'})",
            param="properties.status",
        )
    if new_status in STAMPS:
        values[STAMPS[new_status]] = sa.func.now()
    if new_status == "reopened":
        values["resolved_at"] = None
        values["closed_at"] = None


def _geom_value(hex_ewkb: str) -> Any:
    return sa.func.ST_GeomFromEWKB(sa.func.decode(hex_ewkb, "hex"))


def _write(conn: Connection, layer: Layer, statement: Any) -> Any:
    """Run a write; a value the table's constraints refuse (NOT NULL, CHECK) is a 400 naming the property."""
    try:
        return conn.execute(statement)
    except sa.exc.IntegrityError as err:
        diag = getattr(err.orig, "diag", None)
        code = getattr(err.orig, "pgcode", None)
        column = getattr(diag, "column_name", None) or next(
            (n for n in sorted(layer.properties, key=len, reverse=True)
             if n in str(getattr(diag, "constraint_name", None) or "")), None)
        param = f"properties.{column}" if column else "properties"
        if code == "23502":
            raise InvalidInput(f"{param}: cannot be empty", param=param) from None
        if code == "23514":
            raise InvalidInput(f"{param}: the value is outside what layer {layer.id!r} allows", param=param) from None
        raise


def create(conn: Connection, layer: Layer, body: Any, principal: Principal | None,
           region: tuple[float, float, float, float] | None) -> Any:
    """Insert a feature; return its id."""
    body = _feature_body(body, partial=False)
    values: dict[str, Any] = _properties(layer, body.get("properties"))
    missing = [n for n, p in layer.properties.items() if p.required and values.get(n) is None]
    if missing:
        raise InvalidInput(f"properties.{missing[0]}: is required", param=f"properties.{missing[0]}")
    values[layer.geometry.column] = _geom_value(_geometry(layer, body.get("geometry"), region))
    _lifecycle(layer, None, values)
    values = {k: v for k, v in values.items() if v is not None}
    table = queries.table_of(layer)
    new_id = _write(conn, layer, sa.insert(table).values(values).returning(table.c[layer.id_column])).scalar_one()
    after = row_json(conn, layer, new_id, lock=False)
    auth.audit(conn, principal, layer.id, new_id, "create", None, after[0] if after else None)
    return new_id


def change(conn: Connection, layer: Layer, feature_id: Any, body: Any, principal: Principal | None,
           if_match: str | None, region: tuple[float, float, float, float] | None, *, partial: bool) -> None:
    """Replace (PUT) or update (PATCH) a feature."""
    body = _feature_body(body, partial=partial)
    found = row_json(conn, layer, feature_id, lock=True)
    if found is None:
        raise NotFound(f"layer {layer.id!r} has no feature {feature_id!r}", param="featureId")
    before, current = found
    check_if_match(if_match, current, layer, feature_id)
    values = _properties(layer, body.get("properties"))
    if not partial:
        # A replacement sets every writable property: what the body leaves out takes its default,
        # as in a new feature; an incident's lifecycle fields stay as they are.
        kept = LIFECYCLE_FIELDS if layer.id == INCIDENTS else set()
        for name, prop in layer.api_writable_properties.items():
            if name != layer.id_column and name not in values and name not in kept:
                if prop.required:
                    raise InvalidInput(f"properties.{name}: is required", param=f"properties.{name}")
                values[name] = sa.text("DEFAULT")
    if "geometry" in body or not partial:
        values[layer.geometry.column] = _geom_value(_geometry(layer, body.get("geometry"), region))
    _lifecycle(layer, before, values)
    if not values:
        return
    table = queries.table_of(layer)
    _write(conn, layer, sa.update(table).where(table.c[layer.id_column] == feature_id).values(values))
    after = row_json(conn, layer, feature_id, lock=False)
    auth.audit(conn, principal, layer.id, feature_id, "update" if partial else "replace", before,
               after[0] if after else None)


def delete(conn: Connection, layer: Layer, feature_id: Any, principal: Principal | None,
           if_match: str | None) -> None:
    """Delete a feature."""
    found = row_json(conn, layer, feature_id, lock=True)
    if found is None:
        raise NotFound(f"layer {layer.id!r} has no feature {feature_id!r}", param="featureId")
    check_if_match(if_match, found[1], layer, feature_id)
    table = queries.table_of(layer)
    conn.execute(sa.delete(table).where(table.c[layer.id_column] == feature_id))
    auth.audit(conn, principal, layer.id, feature_id, "delete", found[0], None)


def parse_json(raw: bytes) -> Any:
    """A request body as JSON, nesting bounded and without NUL characters; anything else is a 400 naming it."""
    body = limits.loads(raw, "body")
    where = limits.nul_path(body)
    if where is not None:
        raise InvalidInput(f"{where}: contains a NUL character", param=where)
    return body


def history(conn: Connection, layer: Layer, feature_id: Any, limit: int = 200) -> list[dict[str, Any]] | None:
    """A feature's writes from the audit trail, oldest first: when, by which key, what changed (None: never existed).

    A change lists each property whose value moved (``{"from": …, "to": …}``); the geometry is only
    said to have changed. A feature deleted since keeps its history.
    """
    rows = conn.execute(sa.text(
        "SELECT at, key_name, role, operation, before, after FROM audit_log WHERE layer_id = :l AND feature_id = :f "
        "ORDER BY at, id LIMIT :n"), {"l": layer.id, "f": str(feature_id), "n": limit}).all()
    if not rows and etag(conn, layer, feature_id) is None:
        return None
    steps = []
    for at, key_name, role, operation, before, after in rows:
        old, new = before or {}, after or {}
        changes: dict[str, Any] = {}
        for name in dict.fromkeys([*old, *new]):
            if name == "geometry":
                if old.get(name) != new.get(name):
                    changes["geometry"] = "changed" if old and new else ("set" if new else "removed")
            elif old.get(name) != new.get(name) and name != "updated_at":
                changes[name] = {"from": old.get(name), "to": new.get(name)}
        steps.append({"at": at.isoformat(), "by": key_name, "role": role, "operation": operation,
                      "changes": changes})
    return steps
