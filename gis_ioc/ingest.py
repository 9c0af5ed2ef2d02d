"""Load files into layers: read (pyogrio) → prepare (columns, CRS, validity) → COPY → record.

A load is one transaction: a failure leaves the layer exactly as it was. Rows go in with
``COPY``; a large load into a table drops and rebuilds its indexes inside that transaction,
as ``pg_restore`` does, because bulk-building a GiST index is several times faster than
growing it row by row.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import queue
import re
import threading
import time
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg2
import pyarrow as pa
import pyarrow.csv as pacsv
import pyogrio
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError
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

Mode = Literal["append", "replace", "upsert"]
MODES: tuple[str, ...] = ("append", "replace", "upsert")
Progress = Callable[[int, int], None]  # (rows written so far, total rows)

WGS84 = CRS.from_epsg(4326)
LOCAL_TIMEZONE = "Asia/Ho_Chi_Minh"  # naive times in Vietnamese files are local time
BULK_ROWS = 100_000  # at least this many rows (and more than the table holds): rebuild indexes
CHUNK_ROWS = 50_000
READ_ONLY_KEPT_BY_DB = ("created_at", "updated_at")
SUFFIXES = {
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".gpkg": "GeoPackage",
    ".shp": "Shapefile",
    ".zip": "zipped Shapefile",
    ".fgb": "FlatGeobuf",
    ".kml": "KML",
    ".csv": "CSV",
}
CSV_OPTIONS = {
    "X_POSSIBLE_NAMES": "lon,longitude,lng,x,easting",
    "Y_POSSIBLE_NAMES": "lat,latitude,y,northing",
    "GEOM_POSSIBLE_NAMES": "wkt,geometry,geom,the_geom",
    "KEEP_GEOM_COLUMNS": "NO",
    "AUTODETECT_TYPE": "YES",
    "EMPTY_STRING_AS_NULL": "YES",
}
_POLYGONAL = {GeometryType.Polygon, GeometryType.MultiPolygon}
_LINEAR = {GeometryType.LineString, GeometryType.MultiLineString}


@dataclass
class LoadReport:
    """What a load did."""

    layer: str
    mode: str
    rows_read: int = 0
    rows_loaded: int = 0
    repaired: int = 0
    refused: int = 0
    seconds: float = 0.0
    source_crs: str | None = None
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        """Loaded rows per second."""
        return self.rows_loaded / self.seconds if self.seconds else 0.0


@dataclass
class Prepared:
    """Rows ready to COPY: the frame (geometry as hex EWKB in ``geom``) and counts."""

    frame: pd.DataFrame
    columns: list[str]
    rows_read: int
    repaired: int
    refused: int
    source_crs: str
    ignored_columns: list[str]


# -- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A file checked for reading: what GDAL opens, with which options."""

    path: Path
    target: str
    layer: str | None
    options: dict[str, Any]

    def fail(self, err: Exception) -> IngestError:
        """A GDAL error while reading, as one line naming the file."""
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return IngestError(f"{self.path}: cannot read the file: {reason}", param="file")

    def no_geometry(self) -> IngestError:
        """The file has no geometry column."""
        hint = " (a CSV needs lon/lat columns or a WKT column)" if self.path.suffix.lower() == ".csv" else ""
        return IngestError(f"{self.path}: the file has no geometry{hint}", param="file")


def open_source(path: Path | str, source_layer: str | None = None) -> Source:
    """Check that a file exists, has a known format and one layer (or a chosen one)."""
    path = Path(path)
    if not path.exists():
        raise IngestError(f"{path}: no such file", param="file")
    options: dict[str, Any] = {}
    target: str = str(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        if not any(path.glob("*.shp")):
            raise IngestError(f"{path}: a folder is read as a Shapefile, but it holds no .shp file", param="file")
    elif suffix == ".zip":
        try:
            names = zipfile.ZipFile(path).namelist()
        except zipfile.BadZipFile:
            raise IngestError(f"{path}: not a readable zip file", param="file") from None
        if not any(n.lower().endswith(".shp") for n in names):
            raise IngestError(f"{path}: the zip file holds no Shapefile (.shp)", param="file")
        target = f"/vsizip/{path}"
    elif suffix == ".csv":
        options.update(CSV_OPTIONS)
    elif suffix not in SUFFIXES:
        known = ", ".join(sorted(SUFFIXES))
        raise IngestError(f"{path}: unknown format {suffix or '(no suffix)'} (known: {known})", param="file")
    if path.is_file() and path.stat().st_size == 0:
        raise IngestError(f"{path}: the file is empty", param="file")
    source = Source(path, target, source_layer, options)
    try:
        layers = pyogrio.list_layers(target)
    except Exception as err:  # pyogrio raises several GDAL error types
        raise source.fail(err) from None
    if source_layer is None and len(layers) > 1 and suffix != ".kml":
        layer_names = ", ".join(str(n) for n in layers[:, 0])
        raise IngestError(f"{path}: holds several layers ({layer_names}); choose one with --source-layer")
    return source


def read_file(path: Path | str, source_layer: str | None = None) -> gpd.GeoDataFrame:
    """Read a whole vector file with pyogrio; a missing, unreadable or empty file is an ``IngestError``."""
    source = open_source(path, source_layer)
    try:
        frame = pyogrio.read_dataframe(source.target, layer=source_layer, use_arrow=True, **source.options)
    except Exception as err:
        raise source.fail(err) from None
    if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry.name not in frame:
        raise source.no_geometry()
    if len(frame) == 0:
        raise IngestError(f"{source.path}: the file has no features", param="file")
    return frame


def read_batches(source: Source, batch_rows: int) -> Iterator[gpd.GeoDataFrame]:
    """Read a file in batches (GDAL's Arrow stream), so a large file is loaded while it is read."""
    try:
        with pyogrio.open_arrow(source.target, layer=source.layer, batch_size=batch_rows, use_pyarrow=True,
                                **source.options) as (meta, reader):
            geometry = meta["geometry_name"] or "wkb_geometry"
            if meta["geometry_type"] is None:
                raise source.no_geometry()
            for batch in reader:
                table = pa.Table.from_batches([batch])
                geoms = shapely.from_wkb(table.column(geometry).to_numpy(zero_copy_only=False))
                frame = table.drop_columns([geometry]).to_pandas(types_mapper={pa.large_string(): pd.StringDtype(),
                                                                               pa.string(): pd.StringDtype()}.get)
                yield gpd.GeoDataFrame(frame, geometry=geoms, crs=meta["crs"])
    except IngestError:
        raise
    except Exception as err:
        raise source.fail(err) from None


# -- preparing ---------------------------------------------------------------------------------


def parse_crs(value: str | int | None, param: str = "crs") -> CRS | None:
    """A CRS from ``EPSG:9216``, ``9216`` or any PROJ string; an unknown one names the parameter."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    try:
        return CRS.from_user_input(int(text) if text.isdigit() else text)
    except CRSError:
        raise IngestError(f"{param}: unknown coordinate reference system {text!r}", param=param) from None


def _crs_label(crs: CRS) -> str:
    epsg = crs.to_epsg(min_confidence=70)
    return f"EPSG:{epsg}" if epsg else crs.name


def _first_rows(mask: np.ndarray, n: int = 3) -> str:
    rows = np.flatnonzero(mask)[:n]
    return ", ".join(str(int(r) + 1) for r in rows)


def column_slug(name: str) -> str:
    """A file's column name as a property name: lower case ASCII (diacritics folded, đ → d), ``_``."""
    folded = unicodedata.normalize("NFKD", str(name).strip().lower().replace("đ", "d"))
    ascii_name = "".join(ch for ch in folded if not unicodedata.combining(ch))
    slug = re.sub(r"[^a-z0-9_]+", "_", ascii_name).strip("_") or "column"
    return (slug if re.match(r"^[a-z_]", slug) else f"c_{slug}")[:63]


def _normalize_columns(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    geom = frame.geometry.name
    renamed = {c: column_slug(c) for c in frame.columns if c != geom}
    lowered = list(renamed.values())
    dupes = {c for c in lowered if lowered.count(c) > 1}
    if dupes:
        raise IngestError(f"columns differ only by case: {', '.join(sorted(dupes))}", param="columns")
    frame = frame.rename(columns=renamed)
    if geom != "geometry":
        frame = frame.rename_geometry("geometry")
    return frame


def _apply_mapping(frame: gpd.GeoDataFrame, mapping: dict[str, str], layer: Layer) -> gpd.GeoDataFrame:
    rename = {}
    for src, dst in mapping.items():
        src_l, dst_l = column_slug(src), dst.strip().lower()
        if src_l not in frame.columns:
            cols = ", ".join(c for c in frame.columns if c != "geometry")
            raise IngestError(f"--map {src}={dst}: the file has no column {src!r} (columns: {cols})", param="map")
        if dst_l not in layer.properties:
            known = ", ".join(layer.writable_properties)
            raise IngestError(
                f"--map {src}={dst}: layer {layer.id!r} has no property {dst!r} (properties: {known})",
                param="map",
            )
        rename[src_l] = dst_l
    frame = frame.rename(columns=rename)
    dupes = [c for c in set(frame.columns) if list(frame.columns).count(c) > 1]
    if dupes:
        raise IngestError(f"--map: two columns would both be {dupes[0]!r}", param="map")
    return frame


def _as_text(values: pd.Series) -> pd.Series:
    if pd.api.types.is_float_dtype(values) and np.all(np.mod(values.dropna(), 1) == 0):
        values = values.astype("Int64")
    out = values.astype("string")
    return out.where(values.notna(), None)


def _convert(name: str, prop: Property, values: pd.Series) -> pd.Series:
    """Convert one column to the property's type; bad values are an error naming the column and row."""
    kind = prop.type
    try:
        if kind == PropertyType.string:
            return _as_text(values)
        if kind in (PropertyType.integer, PropertyType.number):
            numbers = pd.to_numeric(values, errors="coerce")
            bad = numbers.isna() & values.notna() & (values.astype("string").str.strip() != "")
            if bad.any():
                raise IngestError(
                    f"column {name!r}: not a number in row(s) {_first_rows(bad.to_numpy())} "
                    f"(e.g. {values[bad].iloc[0]!r})",
                    param=name,
                )
            if kind == PropertyType.integer:
                frac = numbers.notna() & (np.mod(numbers.fillna(0), 1) != 0)
                if frac.any():
                    raise IngestError(
                        f"column {name!r}: not a whole number in row(s) {_first_rows(frac.to_numpy())}",
                        param=name,
                    )
                numbers = numbers.astype("Int64")
            low = prop.minimum is not None and (numbers < prop.minimum).fillna(False)
            high = prop.maximum is not None and (numbers > prop.maximum).fillna(False)
            for out_of_range, bound in ((low, f">= {prop.minimum}"), (high, f"<= {prop.maximum}")):
                if isinstance(out_of_range, pd.Series) and out_of_range.any():
                    raise IngestError(
                        f"column {name!r}: must be {bound}, row(s) {_first_rows(out_of_range.to_numpy())}",
                        param=name,
                    )
            return numbers
        if kind == PropertyType.boolean:
            truth = {"true": True, "t": True, "1": True, "yes": True, "false": False, "f": False, "0": False,
                     "no": False}
            text = values.astype("string").str.strip().str.lower()
            mapped = text.map(truth)
            bad = mapped.isna() & values.notna()
            if bad.any():
                raise IngestError(f"column {name!r}: not true/false in row(s) {_first_rows(bad.to_numpy())}",
                                  param=name)
            return mapped.astype("boolean")
        # date / datetime: kept as datetime64 (UTC); the COPY writer formats them in C++
        if pd.api.types.is_datetime64_any_dtype(values):
            stamps = values
        else:
            text = values.astype("string").str.strip()
            try:
                stamps = pd.to_datetime(text, errors="coerce", format="ISO8601")
            except (TypeError, ValueError):
                stamps = pd.to_datetime(text, errors="coerce", format="mixed")
            bad = stamps.isna() & values.notna() & (text != "")
            if bad.any():
                raise IngestError(
                    f"column {name!r}: not a date/time in row(s) {_first_rows(bad.to_numpy())} "
                    f"(e.g. {values[bad].iloc[0]!r})",
                    param=name,
                )
        if getattr(stamps.dt, "tz", None) is None:
            stamps = stamps.dt.tz_localize(LOCAL_TIMEZONE, ambiguous="NaT", nonexistent="NaT")
        stamps = stamps.dt.tz_convert("UTC")
        if kind == PropertyType.date:
            local = stamps.dt.tz_convert(LOCAL_TIMEZONE)
            return pd.Series([v.date() if pd.notna(v) else None for v in local], index=values.index, dtype=object)
        return stamps
    except (TypeError, ValueError) as err:
        raise IngestError(f"column {name!r}: cannot read as {kind.value}: {err}", param=name) from None


def _fix_geometry_types(geoms: np.ndarray, allowed: set[GeometryType]) -> np.ndarray:
    """Promote single to multi (or a one-part multi to single) where the layer needs it."""
    type_ids = shapely.get_type_id(geoms)
    out = geoms.copy()
    pairs = (
        (GeometryType.Point, GeometryType.MultiPoint, 0, 4, shapely.multipoints),
        (GeometryType.LineString, GeometryType.MultiLineString, 1, 5, shapely.multilinestrings),
        (GeometryType.Polygon, GeometryType.MultiPolygon, 3, 6, shapely.multipolygons),
    )
    for single, multi, single_id, multi_id, make_multi in pairs:
        if single not in allowed and multi in allowed:
            mask = type_ids == single_id
            if mask.any():
                out[mask] = [make_multi([g]) for g in out[mask]]
        if multi not in allowed and single in allowed:
            mask = (type_ids == multi_id) & (shapely.get_num_geometries(out) == 1)
            if mask.any():
                out[mask] = shapely.get_geometry(out[mask], 0)
    return out


def _repair(geoms: np.ndarray, allowed: set[GeometryType]) -> np.ndarray:
    """``make_valid``, keeping only the parts of the layer's dimension (polygons stay polygons)."""
    fixed = shapely.make_valid(geoms)
    want = 2 if allowed & _POLYGONAL else 1 if allowed & _LINEAR else 0
    out = []
    for g in fixed:
        if shapely.get_type_id(g) == 7:  # GeometryCollection: keep the parts of the right dimension
            parts = [p for p in shapely.get_parts(g) if shapely.get_dimensions(p) == want]
            g = shapely.union_all(parts) if parts else shapely.Point()
        out.append(g)
    return np.asarray(out, dtype=object)


@dataclass
class Plan:
    """What is decided once for a whole file: the columns to write and the source CRS."""

    layer: Layer
    columns: list[str]
    ignored: list[str]
    source_crs: CRS
    strict: bool = False
    region: tuple[float, float, float, float] | None = None

    @property
    def crs_label(self) -> str:
        """The source CRS as a user writes it."""
        return _crs_label(self.source_crs)


@dataclass
class Rows:
    """One chunk of checked rows: the data to COPY (geometry as hex EWKB in ``geom``) and counts."""

    data: pd.DataFrame
    repaired: int
    refused: int


def plan_load(
    frame: gpd.GeoDataFrame,
    layer: Layer,
    *,
    crs: CRS | None = None,
    mapping: dict[str, str] | None = None,
    strict: bool = False,
    ignore_unknown: bool = False,
    region: tuple[float, float, float, float] | None = None,
    source: str = "file",
) -> tuple[gpd.GeoDataFrame, Plan]:
    """Check a file's columns and CRS against a layer; return the renamed frame and the plan."""
    if len(frame) == 0:
        raise IngestError(f"{source}: the file has no features", param="file")
    frame = _apply_mapping(_normalize_columns(frame), mapping or {}, layer)
    writable = set(layer.writable_properties) | {layer.id_column}
    ignored = [c for c in frame.columns if c in READ_ONLY_KEPT_BY_DB and c != layer.id_column]
    unknown = [c for c in frame.columns if c != "geometry" and c not in writable and c not in ignored]
    if unknown and not ignore_unknown:
        known = ", ".join(sorted(writable))
        raise IngestError(
            f"unknown column(s) {', '.join(unknown)} for layer {layer.id!r} (it has: {known}); "
            "rename with --map SRC=DST or leave them out with --ignore-unknown",
            param="columns",
        )
    ignored += unknown
    if layer.id_column in frame.columns and layer.properties[layer.id_column].type == PropertyType.integer:
        ids = pd.to_numeric(frame[layer.id_column], errors="coerce")
        if ids.isna().any() or (np.mod(ids, 1) != 0).any():
            if not ignore_unknown:
                raise IngestError(
                    f"column {layer.id_column!r} holds values that are not whole numbers, so it cannot be the "
                    f"layer's id; rename it with --map {layer.id_column}=OTHER or leave it out with --ignore-unknown",
                    param=layer.id_column,
                )
            ignored.append(layer.id_column)
        elif ids.duplicated().any():
            raise IngestError(
                f"column {layer.id_column!r}: duplicate ids, row(s) {_first_rows(ids.duplicated().to_numpy())}",
                param=layer.id_column,
            )
    columns = [c for c in layer.properties if c in frame.columns and c not in ignored]
    missing = [n for n, p in layer.properties.items() if p.required and n not in columns]
    if missing:
        raise IngestError(
            f"layer {layer.id!r} needs column(s) {', '.join(missing)}, which the file lacks "
            "(rename one with --map SRC=DST)",
            param="columns",
        )
    source_crs = crs or frame.crs
    if source_crs is None:
        raise IngestError(
            f"{source}: the file has no coordinate reference system; give one with --crs "
            "(for example --crs EPSG:4326 for longitude/latitude, --crs EPSG:9216 for VN-2000 Kon Tum)",
            param="crs",
        )
    return frame, Plan(layer, columns, ignored, CRS(source_crs), strict, region)


_TYPE_IDS = {"Point": 0, "LineString": 1, "Polygon": 3, "MultiPoint": 4, "MultiLineString": 5, "MultiPolygon": 6}
_TYPE_NAMES = ["Point", "LineString", "LinearRing", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon",
               "GeometryCollection"]


def check_rows(frame: gpd.GeoDataFrame, plan: Plan, offset: int = 0) -> Rows:
    """Reproject, check and convert rows of a planned file; ``offset`` numbers rows in messages."""
    layer = plan.layer

    def rows_of(mask: np.ndarray, n: int = 3) -> str:
        return ", ".join(str(int(r) + 1 + offset) for r in np.flatnonzero(mask)[:n])

    geoseries = frame.geometry.set_crs(plan.source_crs, allow_override=True)
    if not plan.source_crs.equals(WGS84):
        try:
            geoseries = geoseries.to_crs(WGS84)
        except Exception as err:
            raise IngestError(f"cannot reproject from {plan.crs_label}: {err}", param="crs") from None
    geoms = np.asarray(geoseries.values, dtype=object)
    if shapely.has_z(geoms).any():
        geoms = shapely.force_2d(geoms)

    # -- geometry: empty, invalid, type, extent
    empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    finite = ~empty & np.isfinite(shapely.bounds(geoms)).all(axis=1)
    unusable = empty | ~finite
    if unusable.any() and plan.strict:
        raise IngestError(f"--strict: {int(unusable.sum())} feature(s) have no usable geometry, "
                          f"row(s) {rows_of(unusable)}", param="geometry")
    allowed = set(layer.geometry.types)
    invalid = ~unusable & ~shapely.is_valid(geoms)
    repaired = int(invalid.sum())
    if repaired:
        if plan.strict:
            reason = shapely.is_valid_reason(geoms[invalid][0])
            raise IngestError(
                f"--strict: {repaired} invalid geometr{'y' if repaired == 1 else 'ies'}, row(s) "
                f"{rows_of(invalid)} ({reason})",
                param="geometry",
            )
        geoms[invalid] = _repair(geoms[invalid], allowed)
        unusable |= shapely.is_empty(geoms)
    geoms = _fix_geometry_types(geoms, allowed)
    wrong = ~unusable & ~np.isin(shapely.get_type_id(geoms), [_TYPE_IDS[t] for t in allowed])
    if wrong.any():
        found = _TYPE_NAMES[shapely.get_type_id(geoms[wrong][0])]
        raise IngestError(
            f"wrong geometry type: {int(wrong.sum())} feature(s) are {found} (first row "
            f"{rows_of(wrong, 1)}); layer {layer.id!r} takes {', '.join(t.value for t in layer.geometry.types)}",
            param="geometry",
        )
    if plan.region is not None:
        bounds = shapely.bounds(geoms)
        xmin, ymin, xmax, ymax = plan.region
        outside = ~unusable & (
            (bounds[:, 0] < xmin) | (bounds[:, 2] > xmax) | (bounds[:, 1] < ymin) | (bounds[:, 3] > ymax)
        )
        if outside.any():
            first = int(np.flatnonzero(outside)[0])
            raise IngestError(
                f"{int(outside.sum())} feature(s) lie far outside the province (first: row {first + 1 + offset} at "
                f"{bounds[first, 0]:.4f}, {bounds[first, 1]:.4f} after reprojection from {plan.crs_label}); "
                "is the CRS right (--crs)?",
                param="geometry",
            )
    keep = ~unusable

    # -- attributes (row numbers count every row of the file, refused ones too)
    data = pd.DataFrame(index=frame.index[keep])
    kept_rows = np.flatnonzero(keep)
    for name in plan.columns:
        prop = layer.properties[name]
        converted = _convert(name, prop, frame[name][keep])
        if prop.enum is not None:
            bad = (converted.notna() & ~converted.isin(prop.enum)).to_numpy()
            if bad.any():
                samples = ", ".join(repr(v) for v in pd.unique(converted[bad])[:3])
                raise IngestError(
                    f"column {name!r}: {samples} not allowed (row {kept_rows[bad][0] + 1 + offset}); "
                    f"allowed: {', '.join(prop.enum)}",
                    param=name,
                )
        if prop.required and converted.isna().any():
            empty_rows = kept_rows[converted.isna().to_numpy()][:3] + 1 + offset
            raise IngestError(
                f"column {name!r} is required but empty in row(s) {', '.join(str(r) for r in empty_rows)}",
                param=name,
            )
        data[name] = converted
    data["geom"] = shapely.to_wkb(shapely.set_srid(geoms[keep], 4326), hex=True, include_srid=True)
    return Rows(data, repaired, int(unusable.sum()))


def prepare(
    frame: gpd.GeoDataFrame,
    layer: Layer,
    *,
    crs: CRS | None = None,
    mapping: dict[str, str] | None = None,
    strict: bool = False,
    ignore_unknown: bool = False,
    region: tuple[float, float, float, float] | None = None,
    source: str = "file",
) -> Prepared:
    """Check and convert a whole frame for a layer. Raises ``IngestError`` naming the problem."""
    frame, plan = plan_load(frame, layer, crs=crs, mapping=mapping, strict=strict, ignore_unknown=ignore_unknown,
                            region=region, source=source)
    rows = check_rows(frame, plan)
    if rows.data.empty:
        raise IngestError(f"{source}: no feature has a usable geometry", param="geometry")
    return Prepared(
        frame=rows.data,
        columns=[*plan.columns, "geom"],
        rows_read=len(frame),
        repaired=rows.repaired,
        refused=rows.refused,
        source_crs=plan.crs_label,
        ignored_columns=plan.ignored,
    )


# -- writing -----------------------------------------------------------------------------------


def _csv_chunks(frames: Iterable[pd.DataFrame], columns: Sequence[str]) -> Iterator[tuple[bytes, int]]:
    """COPY CSV (NULL = unquoted empty, strings quoted) per chunk, written by Arrow's C++ writer."""
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    for frame in frames:
        selected = frame[list(columns)]
        # Arrow writes zone-aware timestamps ~15x slower than naive ones: write UTC wall time, which
        # the COPY reads under ``SET LOCAL timezone = 'UTC'`` (see write_rows).
        aware = [c for c in selected.columns if isinstance(selected[c].dtype, pd.DatetimeTZDtype)]
        if aware:
            selected = selected.assign(**{c: selected[c].dt.tz_convert("UTC").dt.tz_localize(None) for c in aware})
        sink = io.BytesIO()
        pacsv.write_csv(pa.Table.from_pandas(selected, preserve_index=False), sink, options)
        yield sink.getvalue(), len(selected)


def _chunks_of(frame: pd.DataFrame) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), CHUNK_ROWS):
        yield frame.iloc[start : start + CHUNK_ROWS]


class _ChunkReader(io.RawIOBase):
    """A file-like object fed by a producer thread.

    Rows are checked and written as CSV while PostgreSQL parses the previous chunk. An error in
    the producer surfaces in ``read`` and so aborts the COPY.
    """

    def __init__(self, chunks: Iterator[tuple[bytes, int]], progress: Progress | None, total: int) -> None:
        self._queue: queue.Queue[tuple[bytes, int] | BaseException | None] = queue.Queue(maxsize=4)
        self._buffer = b""
        self.rows = 0
        self._total = total
        self._progress = progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(chunks,), daemon=True)
        self._thread.start()

    def _produce(self, chunks: Iterator[tuple[bytes, int]]) -> None:
        try:
            for chunk in chunks:
                while not self._stop.is_set():
                    try:
                        self._queue.put(chunk, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as err:  # handed to the reading side
            self._queue.put(err)
            return
        self._queue.put(None)

    def close(self) -> None:
        self._stop.set()
        super().close()

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        while not self._buffer:
            item = self._queue.get()
            if item is None:
                self._queue.put(None)
                return b""
            if isinstance(item, BaseException):
                raise item
            self._buffer, rows = item
            self.rows += rows
            if self._progress:
                self._progress(self.rows, self._total)
        if size is None or size < 0 or size >= len(self._buffer):
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


def _db_error(err: psycopg2.Error) -> IngestError:
    text = (getattr(err, "pgerror", None) or str(err)).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    return IngestError(f"the database refused the rows: {first.removeprefix('ERROR:').strip()}")


def _db_defaults(cur: Any, layer: Layer, columns: Sequence[str]) -> dict[str, str]:
    """Defaults of the NOT NULL columns being written, evaluated by the database once.

    COPY writes an explicit NULL where a value is empty; an INSERT would have used the default.
    """
    cur.execute(
        "SELECT column_name, column_default FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s AND is_nullable = 'NO' AND column_default IS NOT NULL "
        "AND is_identity = 'NO'",
        (layer.schema_name, layer.table_name),
    )
    defaults = {}
    for column, expression in cur.fetchall():
        if column in columns:
            cur.execute(f"SELECT ({expression})::text")
            defaults[column] = cur.fetchone()[0]
    return defaults


def _fill_defaults(frame: pd.DataFrame, defaults: dict[str, str]) -> pd.DataFrame:
    filled = {}
    for column, text in defaults.items():
        values = frame[column]
        if not values.isna().any():
            continue
        value: Any = text
        if pd.api.types.is_datetime64_any_dtype(values):
            value = pd.Timestamp(text).tz_convert("UTC")
        elif pd.api.types.is_numeric_dtype(values):
            value = pd.to_numeric(text)
        filled[column] = values.fillna(value)
    return frame.assign(**filled) if filled else frame


def write_rows(
    cur: Any,
    layer: Layer,
    columns: Sequence[str],
    frames: Iterable[pd.DataFrame],
    total: int,
    mode: Mode,
    progress: Progress | None = None,
) -> int:
    """COPY checked rows into a layer's table on an open transaction; return rows written.

    ``frames`` may be lazy: checking and CSV writing then run beside the COPY, and an error in
    any chunk aborts it (the caller's transaction rolls everything back).
    """
    table = quote_table(layer.table)
    cols = ", ".join(quote_ident(c) for c in columns)
    if mode == "upsert" and layer.id_column not in columns:
        raise IngestError(f"--mode upsert needs the id column {layer.id_column!r} in the file", param="mode")
    cur.execute("SET LOCAL timezone = 'UTC'")  # timestamps in the COPY stream are UTC wall time
    cur.execute("SET LOCAL gis_ioc.bulk = 'on'")  # one 'reload' event for the load, not one per row
    defaults = _db_defaults(cur, layer, columns)
    if mode == "replace":
        cur.execute(f"DELETE FROM {table}")
    cur.execute(f"SELECT count(*) FROM {table}")
    existing = cur.fetchone()[0]
    rebuild: list[tuple[str, str]] = []
    if mode != "upsert" and total >= BULK_ROWS and total > existing:
        cur.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i "
            "JOIN pg_class c ON c.relname = i.indexname AND c.relnamespace = to_regnamespace(i.schemaname) "
            "JOIN pg_index x ON x.indexrelid = c.oid "
            "WHERE i.schemaname = %s AND i.tablename = %s AND NOT x.indisprimary AND NOT x.indisunique",
            (layer.schema_name, layer.table_name),
        )
        rebuild = list(cur.fetchall())
        for name, _ in rebuild:
            cur.execute(f"DROP INDEX {quote_ident(layer.schema_name)}.{quote_ident(name)}")
    filled = (_fill_defaults(frame, defaults) for frame in frames)
    reader = _ChunkReader(_csv_chunks(filled, columns), progress, total)
    target = table
    if mode == "upsert":
        cur.execute(f"CREATE TEMP TABLE _gis_ioc_load (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
        target = "_gis_ioc_load"
    try:
        cur.copy_expert(f"COPY {target} ({cols}) FROM STDIN WITH (FORMAT csv)", reader, size=1 << 20)
    finally:
        reader.close()
    if reader.rows == 0:
        raise IngestError("no feature has a usable geometry: nothing to load", param="geometry")
    if mode == "upsert":
        updates = ", ".join(f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in columns if c != layer.id_column)
        cur.execute(
            f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _gis_ioc_load "
            f"ON CONFLICT ({quote_ident(layer.id_column)}) DO UPDATE SET {updates}"
        )
    for _, definition in rebuild:
        cur.execute(definition)
    if layer.id_column in columns:
        cur.execute(
            "SELECT pg_get_serial_sequence(%s, %s)", (f"{layer.schema_name}.{layer.table_name}", layer.id_column)
        )
        sequence = cur.fetchone()[0]
        if sequence:
            cur.execute(
                f"SELECT setval(%s, GREATEST((SELECT max({quote_ident(layer.id_column)}) FROM {table}), 1))",
                (sequence,),
            )
    if reader.rows >= BULK_ROWS:
        cur.execute(f"ANALYZE {table}")
    return reader.rows


@contextlib.contextmanager
def _transaction(engine: Engine) -> Iterator[Any]:
    """One psycopg2 transaction: committed at the end, rolled back on any error.

    Database errors become an ``IngestError`` carrying the database's first line.
    """
    raw: Any = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            yield cur
        raw.commit()
    except psycopg2.Error as err:
        raw.rollback()
        raise _db_error(err) from None
    except BaseException:
        raw.rollback()
        raise
    finally:
        raw.close()


def load_frame(
    engine: Engine,
    layer: Layer,
    prepared: Prepared,
    mode: Mode = "append",
    progress: Progress | None = None,
) -> int:
    """Write prepared rows in one transaction; on any error the layer is left as it was."""
    if mode not in MODES:
        raise IngestError(f"--mode: {mode!r} is not one of {', '.join(MODES)}", param="mode")
    with _transaction(engine) as cur:
        return write_rows(cur, layer, prepared.columns, _chunks_of(prepared.frame), len(prepared.frame), mode,
                          progress)


def load(
    engine: Engine,
    catalog: Catalog,
    path: Path | str,
    layer_id: str,
    *,
    crs: str | None = None,
    mode: Mode = "append",
    mapping: dict[str, str] | None = None,
    strict: bool = False,
    ignore_unknown: bool = False,
    source_layer: str | None = None,
    region: tuple[float, float, float, float] | None = None,
    progress: Progress | None = None,
) -> LoadReport:
    """Load a file into a layer (the ``gis-ioc load`` command, from Python).

    Columns and CRS are checked for the whole file first; rows are checked chunk by chunk while
    the previous chunk is copied, all in one transaction.
    """
    started = time.perf_counter()
    if mode not in MODES:
        raise IngestError(f"--mode: {mode!r} is not one of {', '.join(MODES)}", param="mode")
    layer = catalog.get(layer_id)
    source_crs = parse_crs(crs)
    source = open_source(path, source_layer)
    batches = read_batches(source, CHUNK_ROWS)
    first = next(batches, None)
    if first is None or len(first) == 0:
        raise IngestError(f"{source.path}: the file has no features", param="file")
    first, plan = plan_load(first, layer, crs=source_crs, mapping=mapping, strict=strict,
                            ignore_unknown=ignore_unknown, region=region, source=str(path))
    try:
        total = int(pyogrio.read_info(source.target, layer=source_layer, **source.options)["features"])
    except Exception:  # a count is only needed for the progress bar and the bulk decision
        total = -1
    report = LoadReport(layer=layer.id, mode=mode, source_crs=plan.crs_label, ignored_columns=plan.ignored)

    def checked() -> Iterator[pd.DataFrame]:
        offset = 0
        for number, batch in enumerate(itertools.chain([first], batches)):
            if number:
                batch = _apply_mapping(_normalize_columns(batch), mapping or {}, layer)
            rows = check_rows(batch, plan, offset=offset)
            offset += len(batch)
            report.rows_read = offset
            report.repaired += rows.repaired
            report.refused += rows.refused
            yield rows.data

    with _transaction(engine) as cur:
        report.rows_loaded = write_rows(cur, layer, [*plan.columns, "geom"], checked(), max(total, len(first)),
                                        mode, progress)
    report.seconds = time.perf_counter() - started
    return report


# -- importing a file as a new layer -----------------------------------------------------------

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
                            progress)
        cur.execute(
            "INSERT INTO layer_registry (id, definition, source) VALUES (%s, %s::jsonb, %s)",
            (layer.id, layer.model_dump_json(), source_label or str(path)),
        )
        cur.execute(f"ANALYZE {quote_table(layer.table)}")
    return LoadReport(
        layer=layer.id, mode="create", rows_read=prepared.rows_read, rows_loaded=loaded, repaired=prepared.repaired,
        refused=prepared.refused, seconds=time.perf_counter() - started, source_crs=prepared.source_crs,
    )
