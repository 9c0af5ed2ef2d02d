"""The layer catalog: built-in layers from ``layers/*.yaml`` plus layers registered in the database.

One registry for all: the API, the tiles, ingest and the analysis find every layer here.
Imported layers live in the ``layer_registry`` table, so every server process sees a new one
at once.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

import sqlalchemy as sa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy.engine import Connection, Engine

from gis_ioc.errors import CatalogError, LayerNotFound, NotFound

T = TypeVar("T")

LAYER_ID = r"^[a-z][a-z0-9_]{0,62}$"
IMPORTED_SCHEMA = "user_layers"


class PropertyType(StrEnum):
    """Types a layer property can have (JSON Schema names, plus date and datetime)."""

    string = "string"
    integer = "integer"
    number = "number"
    boolean = "boolean"
    date = "date"
    datetime = "datetime"


class GeometryType(StrEnum):
    """Simple-feature geometry types."""

    Point = "Point"
    LineString = "LineString"
    Polygon = "Polygon"
    MultiPoint = "MultiPoint"
    MultiLineString = "MultiLineString"
    MultiPolygon = "MultiPolygon"


JSON_SCHEMA_TYPES: dict[PropertyType, dict[str, str]] = {
    PropertyType.string: {"type": "string"},
    PropertyType.integer: {"type": "integer"},
    PropertyType.number: {"type": "number"},
    PropertyType.boolean: {"type": "boolean"},
    PropertyType.date: {"type": "string", "format": "date"},
    PropertyType.datetime: {"type": "string", "format": "date-time"},
}

# A mixed-geometry layer is also published as one collection per kind of geometry (``incidents.polygons``):
# GDAL and QGIS give a collection one geometry type, taken from its first page.
PARTS: dict[str, tuple[int, tuple[GeometryType, ...]]] = {
    "points": (0, (GeometryType.Point, GeometryType.MultiPoint)),
    "lines": (1, (GeometryType.LineString, GeometryType.MultiLineString)),
    "polygons": (2, (GeometryType.Polygon, GeometryType.MultiPolygon)),
}


class Property(BaseModel):
    """One exposed column of a layer."""

    model_config = ConfigDict(extra="forbid")

    type: PropertyType
    description: str = ""
    title: str | None = None
    enum: list[str] | None = None
    required: bool = False
    read_only: bool = False
    server_owned: bool = Field(default=False, description="Kept by the service: a file may bring it (history), "
                                                         "an API client may not write it")
    minimum: float | None = None
    maximum: float | None = None


class Geometry(BaseModel):
    """The geometry column and the types it may hold."""

    model_config = ConfigDict(extra="forbid")

    column: str = "geom"
    types: Annotated[list[GeometryType], Field(min_length=1)]


class Style(BaseModel):
    """Default map style of a layer."""

    model_config = ConfigDict(extra="forbid")

    color: str = Field(default="#3388ff", pattern=r"^#[0-9a-fA-F]{6}$")
    color_by: str | None = None
    colors: dict[str, Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")]] = Field(default_factory=dict)
    icon: str | None = None
    label: str | None = None
    min_zoom: int = Field(default=0, ge=0, le=24)
    max_zoom: int = Field(default=22, ge=0, le=24)
    opacity: float = Field(default=0.8, ge=0, le=1)

    @model_validator(mode="after")
    def _zoom_order(self) -> Style:
        if self.min_zoom > self.max_zoom:
            raise ValueError("min_zoom is above max_zoom")
        return self


class TileOptions(BaseModel):
    """How a layer goes into vector tiles."""

    model_config = ConfigDict(extra="forbid")

    cluster_below_zoom: int | None = Field(default=None, ge=0, le=24,
                                           description="Below this zoom, points are grid clusters with counts")
    cluster_cell_px: int = Field(default=48, ge=8, le=256, description="Cluster cell size in screen pixels")
    properties: list[str] = Field(default_factory=list, description="Properties in tiles besides style ones")
    max_features: int = Field(default=20_000, ge=1, le=200_000, description="Features per layer and tile")


class DuplicateRule(BaseModel):
    """How near, in space and time, a report of a kind may be to an active one and be the same event."""

    model_config = ConfigDict(extra="forbid")

    distance_m: float = Field(gt=0, le=50_000)
    window_h: float = Field(gt=0, le=24 * 30)
    kinds: list[str] | None = Field(default=None, description="Kinds it may duplicate (default: its own)")


class Duplicates(BaseModel):
    """Possible duplicate reports: active features of a compatible kind, near in space and time."""

    model_config = ConfigDict(extra="forbid")

    kind_column: str = "type"
    status_column: str = "status"
    active: list[str] = Field(min_length=1, description="Statuses of the features a new report may repeat")
    rules: dict[str, DuplicateRule] = Field(description="By kind; 'default' for the kinds not listed")
    merged_column: str | None = Field(default=None, description="Where a report merged into another feature names "
                                      "it (gis_ioc.merge); such rows are not counted as events")
    reports_column: str | None = Field(default=None, description="How many reports were merged into a feature")


class Network(BaseModel):
    """A line layer as a source of the routable road network (gis_ioc.routing): which rows, how fast."""

    model_config = ConfigDict(extra="forbid")

    where: dict[str, str] = Field(default_factory=dict, description="Property values of the rows that are roads "
                                  "(kind: road)")
    class_column: str | None = Field(default=None, description="The road class, which sets the speed")
    speeds_kmh: dict[str, float] = Field(default_factory=dict, description="Speed by road class, km/h")
    default_speed_kmh: float = Field(default=30, gt=0, le=200, description="For a class not listed")
    speed_column: str | None = Field(default=None, description="A segment's own speed, km/h (overrides its class)")
    oneway_column: str | None = Field(default=None, description="True: only in the line's own direction")
    level_column: str | None = Field(default=None, description="Grade level (1 a bridge or flyover, -1 a tunnel, "
                                     "0 or empty the ground): lines of different levels cross without meeting, and "
                                     "meet only at a vertex both have (a ramp)")
    name_column: str | None = Field(default="name", description="The road's name in the steps of a route")
    off_road_kmh: float = Field(default=5, gt=0, le=50, description="From a point to the road (the last leg)")
    max_off_road_m: float = Field(default=5000, gt=0, le=100_000, description="Farther from any road: refused")

    @model_validator(mode="after")
    def _speeds(self) -> Network:
        if any(not 0 < v <= 200 for v in self.speeds_kmh.values()):
            raise ValueError("speeds_kmh: each speed is above 0 and at most 200 km/h")
        return self


class Layer(BaseModel):
    """A geographic layer: a table, the properties it exposes, and how it is drawn."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=LAYER_ID)
    title: str = Field(min_length=1)
    description: str = ""
    table: str = Field(pattern=r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")
    geometry: Geometry
    id_column: str = "id"
    datetime_column: str | None = None
    valid_to_column: str | None = Field(default=None, description="With datetime_column, the period a row is in "
                                        "force ([from, to), empty = current): a replace touches only the period "
                                        "its file covers")
    natural_key: list[str] = Field(default_factory=list, description="The columns that identify a feature for "
                                   "people and files (upsert and replace match rows by them)")
    duplicates: Duplicates | None = None
    network: Network | None = Field(default=None, description="Its lines are roads of the routing network")
    properties: dict[str, Property]
    style: Style = Field(default_factory=Style)
    tiles: TileOptions = Field(default_factory=TileOptions)
    source: Literal["builtin", "imported"] = "builtin"
    attribution: str | None = None
    keywords: list[str] = Field(default_factory=list)
    part: Literal["points", "lines", "polygons", "labels"] | None = Field(
        default=None, description="Set by the service on the views of a layer (per geometry; label points in "
                                  "tiles), never in a file")

    @model_validator(mode="after")
    def _names_known(self) -> Layer:
        names = set(self.properties)
        for column in self.properties:
            if not re.match(r"^[a-z_][a-z0-9_]{0,62}$", column):
                raise ValueError(f"property name {column!r} is not a lower-case SQL identifier")
        if self.id_column not in names:
            raise ValueError(f"id_column {self.id_column!r} is not one of the properties")
        if self.datetime_column and self.datetime_column not in names:
            raise ValueError(f"datetime_column {self.datetime_column!r} is not one of the properties")
        if self.datetime_column and self.properties[self.datetime_column].type not in (
            PropertyType.datetime,
            PropertyType.date,
        ):
            raise ValueError(f"datetime_column {self.datetime_column!r} is not a date or datetime property")
        for column in [*self.natural_key, *([self.valid_to_column] if self.valid_to_column else [])]:
            if column not in names:
                raise ValueError(f"natural_key/valid_to_column: {column!r} is not one of the properties")
        if self.network:
            net = self.network
            network_columns: list[str | None] = [*net.where, net.class_column, net.speed_column, net.oneway_column,
                                                 net.level_column, net.name_column]
            for column_name in network_columns:
                if column_name is not None and column_name not in names:
                    raise ValueError(f"network: {column_name!r} is not one of the properties")
        if self.duplicates:
            columns = (self.duplicates.kind_column, self.duplicates.status_column, self.duplicates.merged_column,
                       self.duplicates.reports_column)
            for named in columns:
                if named is not None and named not in names:
                    raise ValueError(f"duplicates: {named!r} is not one of the properties")
            if not self.datetime_column:
                raise ValueError("duplicates needs datetime_column (when a report was made)")
        if self.valid_to_column and not self.datetime_column:
            raise ValueError("valid_to_column needs datetime_column (where the period starts)")
        for column in self.tiles.properties:
            if column not in names:
                raise ValueError(f"tiles.properties: {column!r} is not one of the properties")
        for field in ("color_by", "label"):
            value = getattr(self.style, field)
            if value and value not in names:
                raise ValueError(f"style.{field} {value!r} is not one of the properties")
        return self

    @property
    def merged_column(self) -> str | None:
        """The column naming the feature a merged report repeats (``gis_ioc.merge``), if the layer has one."""
        return self.duplicates.merged_column if self.duplicates else None

    def events_only(self, alias: str = "t") -> str:
        """SQL: the rows that are events of their own (not reports merged into another), for counts and the wall."""
        column = self.merged_column
        return f"{alias}.{quote_ident(column)} IS NULL" if column else "TRUE"

    @property
    def schema_name(self) -> str:
        """Schema of the table."""
        return self.table.split(".")[0]

    @property
    def table_name(self) -> str:
        """Table name without schema."""
        return self.table.split(".")[1]

    @property
    def base_id(self) -> str:
        """The layer a per-geometry view belongs to (its own id otherwise)."""
        return self.id.rsplit(".", 1)[0] if self.part else self.id

    @property
    def dimension(self) -> int | None:
        """0, 1 or 2 for a per-geometry view (the features it keeps), None for a whole layer."""
        return PARTS[self.part][0] if self.part in PARTS else None

    def labels(self) -> Layer:
        """The label points of a polygon layer's tiles (``admin_units.labels``).

        One point per feature, in the one tile that holds it, so a map labels each unit once instead of
        once per tile it crosses.
        """
        from gis_ioc.errors import NotFound

        if self.part or not self.style.label or not set(self.geometry.types) <= set(PARTS["polygons"][1]):
            raise NotFound(f"layer {self.id!r} has no label points (a polygon layer with a style label has)",
                           param="layers")
        return self.model_copy(update={"id": f"{self.id}.labels", "part": "labels",
                                       "title": f"{self.title} — label points"})

    @property
    def as_multi(self) -> bool:
        """Whether a per-geometry view serves its geometries as Multi* (the layer holds both forms)."""
        return self.part is not None and any(t.value.startswith("Multi") for t in self.geometry.types)

    @property
    def served_types(self) -> list[str]:
        """The geometry types a client gets (a view holding both forms serves the Multi* one)."""
        if self.as_multi:
            return [f"Multi{self.geometry.types[-1].value.removeprefix('Multi')}"]
        return [t.value for t in self.geometry.types]

    def parts(self) -> list[Layer]:
        """The per-geometry views of a layer that holds more than one kind of geometry (else none)."""
        if self.part:
            return []
        kinds = [(part, [t for t in types if t in self.geometry.types]) for part, (_dim, types) in PARTS.items()]
        kinds = [(part, types) for part, types in kinds if types]
        if len(kinds) < 2:
            return []
        return [self.model_copy(update={
            "id": f"{self.id}.{part}", "title": f"{self.title} — {part}", "part": part,
            "description": f"The {part} of {self.id!r}, each as {'Multi' if len(types) > 1 else ''}"
                           f"{types[-1].value.removeprefix('Multi')} (for clients that give a layer one "
                           f"geometry type). Read-only: write to {self.id!r}.",
            "geometry": Geometry(column=self.geometry.column, types=types),
        }) for part, types in kinds]

    @property
    def points_only(self) -> bool:
        """Whether every feature is a single point (else a point on its surface stands for it)."""
        return [t.value for t in self.geometry.types] == ["Point"]

    def feature_key(self, feature_id: str) -> Any:
        """A feature id from a URL, typed like the id column; one that cannot exist is a 404."""
        if self.properties[self.id_column].type != PropertyType.integer:
            return feature_id
        try:
            return int(feature_id)
        except ValueError:
            raise NotFound(f"layer {self.id!r} has no feature {feature_id!r}", param="featureId") from None

    @property
    def writable_properties(self) -> dict[str, Property]:
        """Properties a file may set."""
        return {k: v for k, v in self.properties.items() if not v.read_only}

    @property
    def api_writable_properties(self) -> dict[str, Property]:
        """Properties an API client may set (not the ones the service keeps: stamps, derived codes)."""
        return {k: v for k, v in self.properties.items() if not v.read_only and not v.server_owned}

    def property(self, name: str, param: str = "property") -> Property:
        """A property by name; an unknown one is an error naming the parameter."""
        from gis_ioc.errors import InvalidInput

        try:
            return self.properties[name]
        except KeyError:
            known = ", ".join(self.properties)
            raise InvalidInput(
                f"{param}: layer {self.id!r} has no property {name!r} (it has: {known})", param=param
            ) from None


def _format_errors(source: str, err: ValidationError) -> list[str]:
    out = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        out.append(f"{source}: {where}: {e['msg']}")
    return out


def parse_layer(data: Any, source: str) -> Layer:
    """Validate one layer definition; errors name the source and the field."""
    if not isinstance(data, dict):
        raise CatalogError(f"{source}: a layer file holds a mapping (id, title, table, …)")
    try:
        return Layer.model_validate(data)
    except ValidationError as err:
        raise CatalogError("\n".join(_format_errors(source, err))) from None


def load_layer_file(path: Path) -> Layer:
    """Read and validate one ``layers/*.yaml`` file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        raise CatalogError(f"{path}: {where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    layer = parse_layer(data, str(path))
    if layer.id != path.stem:
        raise CatalogError(f"{path}: id: {layer.id!r} differs from the file name {path.stem!r}")
    return layer


def validate_folder(folder: Path) -> tuple[list[Layer], list[str]]:
    """Validate every layer file of a folder; return the layers and every problem found."""
    layers, problems = [], []
    files = sorted(folder.glob("*.yaml"))
    if not files:
        problems.append(f"{folder}: no layer files (*.yaml)")
    for path in files:
        try:
            layers.append(load_layer_file(path))
        except CatalogError as err:
            problems.extend(str(err).splitlines())
    seen: dict[str, str] = {}
    for layer in layers:
        if layer.table in seen:
            problems.append(f"{folder}/{layer.id}.yaml: table: {layer.table} is also layer {seen[layer.table]}")
        seen[layer.table] = layer.id
    return layers, problems


class Catalog:
    """Built-in layers plus those registered in the database."""

    def __init__(self, builtin: list[Layer], engine: Engine | None = None) -> None:
        self.builtin = {layer.id: layer for layer in builtin}
        self.engine = engine

    @classmethod
    def from_folder(cls, folder: Path, engine: Engine | None = None) -> Catalog:
        """Load and validate ``layers/``; an invalid file stops everything with its message."""
        layers, problems = validate_folder(folder)
        if problems:
            raise CatalogError("\n".join(problems))
        return cls(layers, engine)

    def _imported(self, conn: Connection | None = None, layer_id: str | None = None) -> list[Layer]:
        if conn is None:
            if self.engine is None:
                return []
            with self.engine.connect() as c:
                return self._imported(c, layer_id)
        query = "SELECT id, definition FROM layer_registry"
        params: dict[str, str] = {}
        if layer_id is not None:
            query += " WHERE id = :id"
            params["id"] = layer_id
        rows = conn.execute(sa.text(query + " ORDER BY id"), params)
        return [parse_layer(row.definition, f"layer_registry[{row.id}]") for row in rows]

    def layers(self, conn: Connection | None = None) -> list[Layer]:
        """Every layer: built-in first, then imported ones by id."""
        return [*self.builtin.values(), *self._imported(conn)]

    def get(self, layer_id: str, conn: Connection | None = None) -> Layer:
        """One layer by id; an unknown id raises ``LayerNotFound``."""
        if layer_id in self.builtin:
            return self.builtin[layer_id]
        if re.match(LAYER_ID, layer_id):
            found = self._imported(conn, layer_id)
            if found:
                return found[0]
        known = ", ".join(layer.id for layer in self.layers(conn))
        raise LayerNotFound(f"no layer {layer_id!r} (layers: {known})", param="layer")

    def collection(self, collection_id: str, conn: Connection | None = None) -> Layer:
        """A layer, or one of its per-geometry views (``incidents.polygons``); unknown ones raise ``LayerNotFound``."""
        base, dot, part = collection_id.rpartition(".")
        if not dot:
            return self.get(collection_id, conn)
        layer = self.get(base, conn)
        for view in layer.parts():
            if view.part == part:
                return view
        kinds = ", ".join(v.id for v in layer.parts()) or "none: its features have one kind of geometry"
        raise LayerNotFound(f"collection {collection_id!r} does not exist (views of {base!r}: {kinds})",
                            param="layer")

    def counts(self, conn: Connection) -> list[tuple[Layer, FeatureCount]]:
        """Every layer with its feature count and the note on where its data came from.

        Counts are exact up to ``EXACT_COUNT_LIMIT`` rows, else the planner's estimate (said so).
        """
        rows = conn.execute(sa.text("SELECT layer_id, note FROM layer_notes"))
        notes: dict[str, str] = {row[0]: row[1] for row in rows}
        return [(layer, self._count(conn, layer, notes.get(layer.id))) for layer in self.layers(conn)]

    def count(self, conn: Connection, layer: Layer) -> FeatureCount:
        """One layer's feature count and note (see ``counts``)."""
        note = conn.execute(sa.text("SELECT note FROM layer_notes WHERE layer_id = :l"), {"l": layer.id}).scalar()
        return self._count(conn, layer, note)

    @staticmethod
    def _count(conn: Connection, layer: Layer, note: str | None) -> FeatureCount:
        estimate = conn.execute(
            sa.text("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(:t)"), {"t": layer.table}
        ).scalar()
        if estimate is not None and estimate > EXACT_COUNT_LIMIT:
            return FeatureCount(int(estimate), True, note)
        exact = conn.execute(sa.text(f"SELECT count(*) FROM {quote_table(layer.table)}")).scalar()
        return FeatureCount(int(exact or 0), False, note)

EXACT_COUNT_LIMIT = 2_000_000


@dataclass(frozen=True)
class FeatureCount:
    """How many features a layer has, whether that is an estimate, and the data's note."""

    value: int
    estimated: bool
    note: str | None = None


def quote_ident(name: str) -> str:
    """An identifier quoted for SQL (names come from the catalog, never from a request)."""
    return '"' + name.replace('"', '""') + '"'


def quote_table(table: str) -> str:
    """``schema.table`` quoted for SQL (names come from the catalog, never from a request)."""
    return ".".join(quote_ident(part) for part in table.split("."))


def layer_json_schema() -> dict[str, Any]:
    """JSON Schema of a layer file (for editors and documentation)."""
    return Layer.model_json_schema()


class PerLayer(Generic[T]):
    """Values made from a layer object, kept for the ``size`` layer objects (and keys) used last.

    Keyed by the object itself: an imported layer, read again per request, is a new object with its own values.
    Each entry holds its layer, so the id it is found by is not another object's while it is kept.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._kept: OrderedDict[tuple[int, Hashable], tuple[Layer, T]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, layer: Layer, key: Hashable, make: Callable[[], T]) -> T:
        """The value kept for ``layer`` and ``key``, else ``make()`` (kept; an error is raised and not kept)."""
        at = (id(layer), key)
        with self._lock:
            found = self._kept.get(at)
            if found is not None:
                self._kept.move_to_end(at)
                return found[1]
        value = make()
        with self._lock:
            self._kept[at] = (layer, value)
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
        return value


_DEFINITIONS: PerLayer[str] = PerLayer(64)  # built-in layers stay; an imported one is read again per request


def definition_digest(layer: Layer) -> str:
    """A digest of a layer's definition (its file or its imported record).

    Edit the file, and what is cached under it (tiles, the ETags of pages) changes. Remembered per layer object
    (a dump and a hash cost ~40 µs, a cached tile's whole answer ~300 µs).
    """
    return _DEFINITIONS.get(layer, None, lambda: hashlib.sha256(layer.model_dump_json().encode()).hexdigest()[:16])
