"""A new layer from a file: a table from its columns, registered for every server process, then loaded."""

from __future__ import annotations

import re
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from gis_ioc.catalog import (
    IMPORTED_SCHEMA,
    LAYER_ID,
    Catalog,
    Geometry,
    GeometryType,
    Layer,
    Property,
    PropertyType,
    Style,
    quote_ident,
    quote_table,
)
from gis_ioc.errors import IngestError, LayerNotFound
from gis_ioc.ingest.read import read_file
from gis_ioc.ingest.rows import _normalize_columns, parse_crs, prepare
from gis_ioc.ingest.store import LoadReport, Progress, _chunks_of, _transaction, write_rows

_SQL_TYPES = {
    PropertyType.string: "text",
    PropertyType.integer: "bigint",
    PropertyType.number: "double precision",
    PropertyType.boolean: "boolean",
    PropertyType.date: "date",
    PropertyType.datetime: "timestamptz",
}


def _infer_property(values: pd.Series) -> PropertyType:
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return PropertyType.boolean
    if pd.api.types.is_integer_dtype(dtype):
        return PropertyType.integer
    if pd.api.types.is_float_dtype(dtype):
        present = values.dropna()
        return PropertyType.integer if len(present) and np.all(np.mod(present, 1) == 0) else PropertyType.number
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return PropertyType.datetime
    present = values.dropna()
    if len(present) and all(hasattr(v, "isoformat") and not hasattr(v, "hour") for v in present[:100]):
        return PropertyType.date
    return PropertyType.string


def _infer_geometry(geoms: gpd.GeoSeries) -> list[GeometryType]:
    present = {t for t in geoms.geom_type.dropna().unique() if t}
    if not present:
        raise IngestError("the file has no usable geometry", param="geometry")
    if present <= {"Polygon", "MultiPolygon"}:
        return [GeometryType.MultiPolygon]
    if present <= {"LineString", "MultiLineString"}:
        return [GeometryType.MultiLineString] if "MultiLineString" in present else [GeometryType.LineString]
    if present <= {"Point", "MultiPoint"}:
        return [GeometryType.MultiPoint] if "MultiPoint" in present else [GeometryType.Point]
    try:
        return sorted({GeometryType(t) for t in present}, key=lambda t: t.value)
    except ValueError:
        raise IngestError(f"unsupported geometry types: {', '.join(sorted(present))}", param="geometry") from None


MAX_NEW_LAYER_ID = 40  # the id names a table; a load's shadow and the indexes add up to 23 characters


def import_layer(
    engine: Engine,
    catalog: Catalog,
    path: Path | str,
    layer_id: str,
    *,
    title: str | None = None,
    description: str = "",
    crs: str | None = None,
    datetime_column: str | None = None,
    source_layer: str | None = None,
    region: tuple[float, float, float, float] | None = None,
    progress: Progress | None = None,
    source_label: str | None = None,
) -> LoadReport:
    """Create a new layer from a file: a table from the file's columns, registered, then loaded.

    ``source_label`` names the file in the layer's description and registry (default: its path).
    """
    started = time.perf_counter()
    if not re.match(LAYER_ID, layer_id):
        raise IngestError(
            f"layer id {layer_id!r} must start with a letter and hold only a-z, 0-9 and _", param="id"
        )
    if len(layer_id) > MAX_NEW_LAYER_ID:
        raise IngestError(f"layer id {layer_id[:20]!r}…: at most {MAX_NEW_LAYER_ID} characters (its table, shadow "
                          "and index names add to it within PostgreSQL's 63)", param="id")
    try:
        catalog.get(layer_id)
    except LayerNotFound:
        pass  # the id is free
    else:
        raise IngestError(f"layer {layer_id!r} exists already; load into it with gis-ioc load", param="id")
    source_crs = parse_crs(crs)
    frame = _normalize_columns(read_file(path, source_layer))
    props: dict[str, Property] = {"id": Property(type=PropertyType.integer, description="Row id", read_only=True)}
    renames = {}
    for column in frame.columns:
        if column == "geometry":
            continue
        name = column
        if name in ("id", "geom", "created_at", "updated_at"):
            name = f"source_{name}"
        renames[column] = name[:63]
        props[name[:63]] = Property(type=_infer_property(frame[column]), description=f"From column {column!r}")
    frame = frame.rename(columns=renames)
    if datetime_column and datetime_column not in props:
        raise IngestError(f"--datetime-column: no column {datetime_column!r} in the file", param="datetime_column")
    if datetime_column and props[datetime_column].type == PropertyType.string:
        props[datetime_column] = Property(type=PropertyType.datetime, description=props[datetime_column].description)
    props["created_at"] = Property(type=PropertyType.datetime, description="Row created", read_only=True)
    props["updated_at"] = Property(type=PropertyType.datetime, description="Row last changed", read_only=True)
    geometry_types = _infer_geometry(frame.geometry)
    label = next((n for n in ("name", "ten", "title") if n in props), None)
    layer = Layer(
        id=layer_id, title=title or layer_id.replace("_", " ").capitalize(),
        description=description or f"Imported from {source_label or Path(path).name}",
        table=f"{IMPORTED_SCHEMA}.{layer_id}",
        geometry=Geometry(types=geometry_types), datetime_column=datetime_column, properties=props,
        style=Style(label=label), source="imported",
    )
    prepared = prepare(frame, layer, crs=source_crs, region=region, source=str(path))
    geom_type = geometry_types[0].value if len(geometry_types) == 1 else "Geometry"
    column_sql = ",\n".join(
        f"{quote_ident(n)} {_SQL_TYPES[p.type]}"
        for n, p in props.items()
        if n not in ("id", "created_at", "updated_at")
    )
    ddl = (
        f"CREATE TABLE {quote_table(layer.table)} (\n"
        "id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,\n"
        + (column_sql + ",\n" if column_sql else "")
        + f"geom geometry({geom_type}, 4326) NOT NULL,\n"
        "created_at timestamptz NOT NULL DEFAULT now(),\n"
        "updated_at timestamptz NOT NULL DEFAULT now())"
    )
    with _transaction(engine) as cur:
        cur.execute(ddl)
        table = quote_table(layer.table)
        cur.execute(f"CREATE INDEX {quote_ident(layer_id + '_geom_idx')} ON {table} USING gist (geom)")
        if datetime_column:
            cur.execute(f"CREATE INDEX ON {quote_table(layer.table)} ({quote_ident(datetime_column)})")
        cur.execute("SELECT gis_ioc_track_layer(%s::regclass)", (layer.table,))
        loaded = write_rows(cur, layer, prepared.columns, _chunks_of(prepared.frame), len(prepared.frame), "append",
                            progress).rows
        cur.execute(
            "INSERT INTO layer_registry (id, definition, source) VALUES (%s, %s::jsonb, %s)",
            (layer.id, layer.model_dump_json(), source_label or str(path)),
        )
        cur.execute(f"ANALYZE {quote_table(layer.table)}")
    return LoadReport(
        layer=layer.id, mode="create", rows_read=prepared.rows_read, rows_loaded=loaded, repaired=prepared.repaired,
        refused=prepared.refused, seconds=time.perf_counter() - started, source_crs=prepared.source_crs,
    )
