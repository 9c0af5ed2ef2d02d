"""Preparing rows: columns against the catalog, CRS, validity repair, types, extent; EWKB for COPY."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError

from gis_ioc import limits
from gis_ioc.catalog import GeometryType, Layer, Property, PropertyType
from gis_ioc.errors import IngestError
from gis_ioc.ingest import crs_check, derive
from gis_ioc.ingest.derive import CommuneLookup

WGS84 = CRS.from_epsg(4326)
LOCAL_TIMEZONE = "Asia/Ho_Chi_Minh"  # naive times in Vietnamese files are local time
READ_ONLY_KEPT_BY_DB = ("created_at", "updated_at")
_POLYGONAL = {GeometryType.Polygon, GeometryType.MultiPolygon}
_LINEAR = {GeometryType.LineString, GeometryType.MultiLineString}


@dataclass
class Prepared:
    """Rows ready to COPY: the frame (geometry as EWKB in ``geom``) and counts."""

    frame: pd.DataFrame
    columns: list[str]
    rows_read: int
    repaired: int
    refused: int
    source_crs: str
    ignored_columns: list[str]


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


def fold(text: str) -> str:
    """Vietnamese text without case or diacritics (đ → d): "Đắk Hà" → "dak ha"."""
    decomposed = unicodedata.normalize("NFKD", text.lower().replace("đ", "d"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def column_slug(name: str) -> str:
    """A file's column name as a property name: lower case ASCII (diacritics folded, đ → d), ``_``."""
    ascii_name = fold(str(name).strip())
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


def _apply_constants(frame: gpd.GeoDataFrame, constants: dict[str, str] | None) -> gpd.GeoDataFrame:
    """Set a column to one value on every row (``--set level=district``), over what the file has."""
    if not constants:
        return frame
    return frame.assign(**constants)


def conform(frame: gpd.GeoDataFrame, layer: Layer, mapping: dict[str, str] | None,
            constants: dict[str, str] | None) -> gpd.GeoDataFrame:
    """A batch of a file with the layer's column names: normalised, renamed by ``--map``, given ``--set`` values."""
    return _apply_constants(_apply_mapping(_normalize_columns(frame), mapping or {}, layer), constants)


def check_constants(constants: dict[str, str] | None, layer: Layer) -> dict[str, str]:
    """``--set`` names writable properties; their values are checked with the rows like any other value."""
    checked = {}
    for name, value in (constants or {}).items():
        key = name.strip().lower()
        if key not in layer.writable_properties:
            known = ", ".join(layer.writable_properties)
            raise IngestError(f"--set {name}={value}: layer {layer.id!r} has no property {name!r} one can set "
                              f"(properties: {known})", param="set")
        checked[key] = value
    return checked


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
            text = _as_text(values)
            long = (text.str.len() > limits.MAX_TEXT_CHARS).fillna(False)
            if long.any():
                raise IngestError(f"column {name!r}: text over {limits.MAX_TEXT_CHARS:,} characters in row(s) "
                                  f"{_first_rows(long.to_numpy())}", param=name)
            return text
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
            # a date begins with its year: words pandas reads ("now", "today") are refused, not read in UTC
            text = text.where(~text.str.match(r"^[^0-9]").fillna(False), "not a date")
            try:
                stamps = pd.to_datetime(text, errors="coerce", format="ISO8601")
            except (TypeError, ValueError, OverflowError):
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
        years = stamps.dt.year
        outside = ((years < limits.MIN_YEAR) | (years > limits.MAX_YEAR)).fillna(False)
        if outside.any():
            raise IngestError(f"column {name!r}: years {limits.MIN_YEAR}–{limits.MAX_YEAR} only, row(s) "
                              f"{_first_rows(outside.to_numpy())} (e.g. {values[outside].iloc[0]!s:.40})", param=name)
        if kind == PropertyType.date:
            local = stamps.dt.tz_convert(LOCAL_TIMEZONE)
            return pd.Series([v.date() if pd.notna(v) else None for v in local], index=values.index, dtype=object)
        return stamps
    except (TypeError, ValueError, OverflowError) as err:
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
    communes: CommuneLookup | None = None  # derive commune_code as the table's trigger would
    area: Any = None  # today's province (ingest.crs_check): a file mostly outside it had its CRS checked

    @property
    def copy_columns(self) -> list[str]:
        """The columns the COPY writes: the file's, the derived ones, the geometry."""
        derived = [derive.COLUMN] if self.communes is not None and derive.COLUMN not in self.columns else []
        return [*self.columns, *derived, "geom"]

    @property
    def crs_label(self) -> str:
        """The source CRS as a user writes it."""
        return _crs_label(self.source_crs)


@dataclass
class Rows:
    """One chunk of checked rows: the data to COPY (geometry as EWKB in ``geom``) and counts."""

    data: pd.DataFrame
    repaired: int
    refused: int


def plan_load(
    frame: gpd.GeoDataFrame,
    layer: Layer,
    *,
    crs: CRS | None = None,
    mapping: dict[str, str] | None = None,
    constants: dict[str, str] | None = None,
    strict: bool = False,
    ignore_unknown: bool = False,
    region: tuple[float, float, float, float] | None = None,
    source: str = "file",
) -> tuple[gpd.GeoDataFrame, Plan]:
    """Check a file's columns and CRS against a layer; return the renamed frame and the plan."""
    if len(frame) == 0:
        raise IngestError(f"{source}: the file has no features", param="file")
    frame = conform(frame, layer, mapping, constants)  # constants as check_constants returns them
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
        outside = ((ids < limits.MIN_FEATURE_ID) | (ids > limits.MAX_FEATURE_ID)).to_numpy()
        if ids.isna().any() or (np.mod(ids, 1) != 0).any():
            if not ignore_unknown:
                raise IngestError(
                    f"column {layer.id_column!r} holds values that are not whole numbers, so it cannot be the "
                    f"layer's id; rename it with --map {layer.id_column}=OTHER or leave it out with --ignore-unknown",
                    param=layer.id_column,
                )
            ignored.append(layer.id_column)
        elif outside.any():
            raise IngestError(
                f"column {layer.id_column!r}: ids must be between {limits.MIN_FEATURE_ID} and "
                f"{limits.MAX_FEATURE_ID:,} (row(s) {_first_rows(outside)}); to let the layer number the rows, "
                f"rename the column with --map {layer.id_column}=OTHER and leave it out with --ignore-unknown",
                param=layer.id_column,
            )
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


_HEX_PAIRS = np.array([ord(f"{b:02X}"[0]) | ord(f"{b:02X}"[1]) << 8 for b in range(256)], dtype="<u2")
_EWKB_POINT = np.dtype([("order", "u1"), ("type", "<u4"), ("srid", "<u4"), ("x", "<f8"), ("y", "<f8")])  # 25 bytes


def ewkb(geoms: np.ndarray, srid: int = 4326) -> pd.api.extensions.ExtensionArray:
    """Geometries as EWKB with their SRID, what COPY reads into a ``geometry`` column (binary, or as hex text).

    Points, which most big files hold, are written straight from their coordinates (a million in 0.1 s,
    against 2.8 s through shapely's writer); any other geometry goes through shapely.
    """
    if len(geoms) and bool((shapely.get_type_id(geoms) == 0).all()) and not shapely.is_empty(geoms).any():
        xy = shapely.get_coordinates(geoms)
        record = np.empty(len(geoms), dtype=_EWKB_POINT)
        record["order"], record["type"], record["srid"] = 1, 0x20000001, srid  # little endian, Point | SRID flag
        record["x"], record["y"] = xy[:, 0], xy[:, 1]
        offsets = np.arange(0, (len(geoms) + 1) * _EWKB_POINT.itemsize, _EWKB_POINT.itemsize, dtype=np.int32)
        array = pa.Array.from_buffers(pa.binary(), len(geoms), [None, pa.py_buffer(offsets),
                                                                pa.py_buffer(record.view(np.uint8))])
    else:
        array = pa.array(shapely.to_wkb(shapely.set_srid(geoms, srid), include_srid=True), pa.binary())
    return pd.array(array, dtype=pd.ArrowDtype(pa.binary()))


def hex_text(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Binary values as upper-case hex text (EWKB as COPY's text formats take it), two digits per byte at once."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if array.null_count or array.offset:
        return pa.array([None if v is None else v.hex().upper() for v in array.to_pylist()], pa.string())
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32, count=len(array) + 1)
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8) if array.buffers()[2] else np.empty(0, np.uint8)
    text = _HEX_PAIRS[data[offsets[0]:offsets[-1]]]
    doubled = ((offsets - offsets[0]) * 2).astype(np.int32)
    return pa.Array.from_buffers(pa.string(), len(array), [None, pa.py_buffer(doubled), pa.py_buffer(text)])


_TYPE_IDS = {"Point": 0, "LineString": 1, "Polygon": 3, "MultiPoint": 4, "MultiLineString": 5, "MultiPolygon": 6}
_TYPE_NAMES = ["Point", "LineString", "LinearRing", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon",
               "GeometryCollection"]


def check_rows(frame: gpd.GeoDataFrame, plan: Plan, offset: int = 0) -> Rows:
    """Reproject, check and convert rows of a planned file; ``offset`` numbers rows in messages."""
    layer = plan.layer

    def rows_of(mask: np.ndarray, n: int = 3) -> str:
        return ", ".join(str(int(r) + 1 + offset) for r in np.flatnonzero(mask)[:n])

    geoseries = frame.geometry.set_crs(plan.source_crs, allow_override=True)
    as_read = np.asarray(geoseries.values, dtype=object)
    if not plan.source_crs.equals(WGS84):
        try:
            geoseries = geoseries.to_crs(WGS84)
        except Exception as err:
            raise IngestError(f"cannot reproject from {plan.crs_label}: {err}", param="crs") from None
    geoms = np.asarray(geoseries.values, dtype=object)
    if shapely.has_z(geoms).any():
        geoms = shapely.force_2d(geoms)
    if offset == 0:  # the first chunk decides whether the CRS is doubted
        crs_check.check(plan.area, as_read, geoms, plan.source_crs, plan.crs_label)

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
    if plan.communes is not None:
        derive.fill(data, geoms[keep], plan.communes, layer.datetime_column)
    data["geom"] = ewkb(geoms[keep])
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
