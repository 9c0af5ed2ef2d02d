"""Vector tiles: one SQL statement per tile over one or several layers, clustered at low zoom, cached.

Tiles are keyed by the layers' versions (``layer_versions``, bumped by the database on any change), so an
API write, an ingest or plain SQL invalidates that layer's tiles at once. Cached tiles live in memory and
on disk under ``GIS_IOC_HOME/tiles``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gis_ioc import cql2_sql, db, queries
from gis_ioc.catalog import Catalog, Layer, definition_digest, quote_ident, quote_table
from gis_ioc.errors import InvalidInput, NotFound
from gis_ioc.tile_cache import GZIP_LEVEL, Tile, TileCache
from gis_ioc.tile_cells import FreshCells, finest_cells, fresh_cells, wait_for_cells

__all__ = ["GZIP_LEVEL", "Tile", "TileCache"]  # the cache's own module holds them; the tiles module offers them too

EXTENT = 4096
# a point's symbol is drawn up to 14 px from its centre (an active incident at zoom 15: radius 11, a 2.5-px ring):
# the tile beside it must carry the point too, or each tile draws only its own part of the circle
BUFFER = 256
# a cluster symbol is up to 22 px across a 256-px tile: the tiles beside it must carry it too, or each draws
# only its own half and the wall shows clusters cut straight at tile borders
CLUSTER_BUFFER = 384
MAX_ZOOM = 22
WORLD_M = 40_075_016.685578488
# what a tile holds, as this code makes it: bump it when the tile statements change their output, so tiles kept
# on disk by an older release are made again rather than served until their layer next changes
TILE_FORMAT = 2


def check_tile(z: int, x: int, y: int) -> None:
    """z/x/y inside WebMercatorQuad, or a 400 naming the parameter."""
    if not 0 <= z <= MAX_ZOOM:
        raise InvalidInput(f"z: {z} is not between 0 and {MAX_ZOOM}", param="z")
    top = 2**z - 1
    if not 0 <= x <= top:
        raise InvalidInput(f"x: {x} is not between 0 and {top} at zoom {z}", param="x")
    if not 0 <= y <= top:
        raise InvalidInput(f"y: {y} is not between 0 and {top} at zoom {z}", param="y")


def layer_ids(names: str) -> list[str]:
    """The layer ids of a comma-separated list, as given."""
    return [n.strip() for n in names.split(",") if n.strip()]


def resolve_layers(catalog: Catalog, conn: Connection, names: str) -> list[Layer]:
    """Layers named in a comma-separated list (an unknown one is a 404)."""
    ids = layer_ids(names)
    if not ids:
        raise InvalidInput("layers: name at least one layer", param="layers")
    if len(set(ids)) != len(ids):
        raise InvalidInput("layers: a layer is named twice", param="layers")
    return [catalog.get(layer_id.removesuffix(".labels"), conn).labels() if layer_id.endswith(".labels")
            else catalog.get(layer_id, conn) for layer_id in ids]


def _tile_properties(layer: Layer) -> list[str]:
    wanted = [layer.style.color_by, layer.style.label, *layer.tiles.properties]
    return [p for p in dict.fromkeys(wanted) if p and p in layer.properties and p != layer.id_column]


def _conditions(layer: Layer, params: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """Item filters (property values, ``filter``, ``datetime``) as SQL on alias ``t``."""
    allowed = {k: v for k, v in params.items() if k not in ("f",)}
    for name in allowed:
        if name in ("bbox", "bbox-crs", "limit", "offset", "sortby", "properties", "crs"):
            raise InvalidInput(f"{name}: not a tile parameter (tiles take property filters, filter and datetime)",
                               param=name)
    req = queries.parse_items(layer, allowed)
    table = queries.table_of(layer).alias("t")
    where = queries.conditions(layer, req, table)  # type: ignore[arg-type]
    if not where:
        return "TRUE", {}
    return cql2_sql.compile_where(sa.and_(*where))


def _table_literal(layer: Layer) -> str:
    """The layer's table name as the text ``tile_cells.layer_table`` holds, for a SQL string literal."""
    return layer.table.replace("'", "''")


def _cells_sql(layer: Layer, z: int, x: int, y: int) -> str:
    """Clusters of a low-zoom tile from the pre-aggregated cells (a few thousand rows, not every feature)."""
    cells = finest_cells(layer)
    assert cells is not None and layer.tiles.cluster_below_zoom is not None
    factor = 2 ** (layer.tiles.cluster_below_zoom - 1 - z)  # below 1 (a dense tile at high zoom): one per cell
    per_tile = cells / 2**z
    margin = per_tile * CLUSTER_BUFFER / EXTENT
    x0, x1 = math.floor(x * per_tile - margin) - 1, math.ceil((x + 1) * per_tile + margin) + 1
    y0, y1 = math.floor(y * per_tile - margin) - 1, math.ceil((y + 1) * per_tile + margin) + 1
    if factor >= 1:  # whole clusters only: the tiles on both sides of a border make the same one
        group = int(factor)
        x0, y0 = x0 // group * group, y0 // group * group
        x1, y1 = (x1 // group + 1) * group - 1, (y1 // group + 1) * group - 1
    table = _table_literal(layer)
    # the most frequent value, ties to the first in order as mode() in _clusters_sql: never to the order the rows
    # came in, which changes with the plan (a tile made again would differ from the cached one)
    colour = (f", (array_agg(category ORDER BY n DESC, category))[1] AS {quote_ident(layer.style.color_by)}"
              if layer.style.color_by else "")
    return (
        "SELECT ST_AsMVTGeom(ST_Transform(ST_SetSRID(ST_MakePoint(sum(s_lon) / sum(n), sum(s_lat) / sum(n)), 4326), "
        f"3857), env.e, {EXTENT}, {CLUSTER_BUFFER}, true) AS geom, sum(n)::bigint AS count, true AS cluster{colour} "
        "FROM ("
        f"SELECT floor(cx / {factor}) AS gx, floor(cy / {factor}) AS gy, category, sum(n) AS n, "
        "sum(sum_lon) AS s_lon, sum(sum_lat) AS s_lat FROM tile_cells "
        f"WHERE layer_table = '{table}' AND cx BETWEEN {x0} AND {x1} AND cy BETWEEN {y0} AND {y1} "
        "GROUP BY 1, 2, 3) g, env GROUP BY env.e, gx, gy"
    )


def _clusters_sql(layer: Layer, z: int, x: int, y: int, where: str) -> str:
    """Clusters of a filtered low-zoom tile, made from the features (the cells hold every feature, unfiltered).

    Each cluster is a whole grid cell: the tile reads every cell within ``CLUSTER_BUFFER`` of its edges in full,
    so the tiles on both sides of a border make the same cluster (same count, same place) and neither cuts it.
    """
    geom = f"t.{quote_ident(layer.geometry.column)}"
    point = geom if layer.points_only else f"ST_PointOnSurface({geom})"
    cell = WORLD_M / 2**z * layer.tiles.cluster_cell_px / 256
    size = WORLD_M / 2**z
    margin = size * CLUSTER_BUFFER / EXTENT
    west, north = -WORLD_M / 2 + x * size, WORLD_M / 2 - y * size
    x0, x1 = math.floor((west - margin) / cell) * cell, (math.floor((west + size + margin) / cell) + 1) * cell
    y0, y1 = math.floor((north - size - margin) / cell) * cell, (math.floor((north + margin) / cell) + 1) * cell
    box = f"ST_MakeEnvelope({x0!r}, {y0!r}, {x1!r}, {y1!r}, 3857)"
    colour = quote_ident(layer.style.color_by) if layer.style.color_by else ""
    mode = f", mode() WITHIN GROUP (ORDER BY t.{colour}) AS {colour}" if colour else ""
    return (f"SELECT ST_AsMVTGeom(ST_Centroid(ST_Collect(p.m)), env.e, {EXTENT}, {CLUSTER_BUFFER}, true) AS geom, "
            f"count(*) AS count, true AS cluster{mode} "
            f"FROM {quote_table(layer.table)} t CROSS JOIN env "
            f"CROSS JOIN LATERAL (SELECT ST_Transform({point}, 3857) AS m) p "
            f"WHERE {geom} && ST_Transform({box}, 4326) AND p.m && {box} AND {where} "
            f"GROUP BY env.e, floor(ST_X(p.m) / {cell!r}), floor(ST_Y(p.m) / {cell!r})")


def layer_sql(layer: Layer, z: int, where: str, xy: tuple[int, int], cells: bool = False) -> str:
    """The part of the tile statement for one layer (tile ``z``/``xy``).

    An ``ST_AsMVT`` of its features, or of grid clusters with counts below ``cluster_below_zoom`` (from the
    pre-aggregated cells when ``cells``).
    """
    geom = f"t.{quote_ident(layer.geometry.column)}"
    table = quote_table(layer.table)
    name = layer.id.replace("'", "''")
    props = _tile_properties(layer)
    cluster = layer.tiles.cluster_below_zoom
    cells_xy = xy if cells else None
    if layer.part == "labels":  # one point per feature, only in the tile that holds it (no buffer: no repeats)
        columns = "".join(f", t.{quote_ident(p)}" for p in props)
        inner = (f"SELECT ST_AsMVTGeom(ST_Transform(l.p, 3857), env.e, {EXTENT}, 0, true) AS geom, "
                 f"t.{quote_ident(layer.id_column)} AS id{columns} FROM {table} t, env, "
                 f"LATERAL (SELECT ST_PointOnSurface({geom}) AS p) l "
                 f"WHERE {geom} && env.e4326 AND ST_Transform(l.p, 3857) && env.e AND {where}")
    elif cluster is not None and z < cluster and cells_xy is not None:
        inner = _cells_sql(layer, z, *cells_xy)
    elif cluster is not None and z < cluster:
        inner = _clusters_sql(layer, z, *xy, where)
    elif cells_xy is not None:
        # At or above the cluster zoom a tile holds single features, unless it holds more than max_features
        # (a city centre: 101,029 incidents in one z13 tile of the scale-100 demo): then it shows every one
        # of them as clusters of the finest cells rather than an arbitrary max_features of them.
        plain = layer_sql(layer, z, where, xy)
        finest = finest_cells(layer)
        assert finest is not None
        per_tile = finest / 2**z
        x, y = cells_xy
        x0, x1 = math.floor(x * per_tile), math.ceil((x + 1) * per_tile) - 1
        y0, y1 = math.floor(y * per_tile), math.ceil((y + 1) * per_tile) - 1
        count = (f"SELECT coalesce(sum(n), 0) FROM tile_cells WHERE layer_table = '{_table_literal(layer)}' "
                 f"AND cx BETWEEN {x0} AND {x1} AND cy BETWEEN {y0} AND {y1}")
        clustered = (f"(SELECT coalesce(ST_AsMVT(q, '{name}', {EXTENT}, 'geom'), ''::bytea) "
                     f"FROM ({_cells_sql(layer, z, x, y)}) q)")
        return f"(CASE WHEN ({count}) > {layer.tiles.max_features} THEN {clustered} ELSE {plain} END)"
    else:
        columns = "".join(f", t.{quote_ident(p)}" for p in props)
        shape = f"ST_Transform({geom}, 3857)"
        if not layer.points_only:
            tolerance = WORLD_M / 2**z / EXTENT  # one tile pixel: finer detail is not drawn
            shape = f"ST_Simplify({shape}, {tolerance!r}, true)"
        inner = (f"SELECT ST_AsMVTGeom({shape}, env.e, {EXTENT}, {BUFFER}, true) AS geom, "
                 f"t.{quote_ident(layer.id_column)} AS id{columns} FROM {table} t, env "
                 f"WHERE {geom} && env.e4326 AND {where} LIMIT {layer.tiles.max_features}")
    return f"(SELECT coalesce(ST_AsMVT(q, '{name}', {EXTENT}, 'geom'), ''::bytea) FROM ({inner}) q)"


def tile_statement(layers: list[Layer], z: int, x: int, y: int, params: Mapping[str, str],
                   cell_tables: frozenset[str] = frozenset()) -> tuple[str, dict[str, Any]]:
    """One statement for the whole tile: every layer's MVT concatenated, and the values of its filters.

    Unfiltered low-zoom clusters of layers in ``cell_tables`` come from the pre-aggregated cells. The tile's
    z/x/y are written into the statement, so an unfiltered tile has no bound values at all (``run_tile``).
    """
    parts: list[str] = []
    bind: dict[str, Any] = {}
    for index, layer in enumerate(layers):
        where, values = _conditions(layer, params) if params else ("TRUE", {})
        where = f"({where}) AND {layer.events_only()}"  # a report merged into another incident is not drawn again
        renamed = {}
        for key in sorted(values, key=len, reverse=True):  # :status_10 before :status_1
            new = f"l{index}_{key}"
            where = where.replace(f":{key}", f":{new}")
            renamed[new] = values[key]
        bind.update(renamed)
        use_cells = not params and layer.table in cell_tables  # low zoom: clusters; high zoom: when dense
        parts.append(layer_sql(layer, z, where, (x, y), use_cells))
    check_tile(z, x, y)  # integers in range: written into the statement as they are
    zxy = f"{int(z)}, {int(x)}, {int(y)}"
    sql = (f"WITH env AS (SELECT ST_TileEnvelope({zxy}) AS e, "
           f"ST_Transform(ST_TileEnvelope({zxy}, margin => {BUFFER / EXTENT!r}), 4326) AS e4326) "
           f"SELECT {' || '.join(parts)}")
    return sql, bind


def versions(conn: Connection, layers: list[Layer]) -> list[int]:
    """The current version of each layer (bumped by the database on any change)."""
    found = conn.execute(sa.text("SELECT table_name, version FROM layer_versions WHERE table_name = ANY(:t)"),
                         {"t": [layer.table for layer in layers]}).all()
    rows: dict[str, int] = {str(row[0]): int(row[1]) for row in found}
    return [int(rows.get(layer.table, 0)) for layer in layers]


def tile_key(layers: list[Layer], z: int, x: int, y: int, params: Mapping[str, str], layer_versions: list[int]) -> str:
    """A cache key: the layers' versions (a folder on disk), then a digest of the rest.

    The rest: the versions, the layers' definitions and ``TILE_FORMAT`` (a layer file edited or a newer release
    makes new tiles), the tile and the filters.
    """
    tag = "+".join(f"{lyr.table}@{v}" for lyr, v in zip(layers, layer_versions, strict=True))
    text = "|".join([f"f{TILE_FORMAT}", ",".join(f"{lyr.id}@{v}:{definition_digest(lyr)}"
                                                 for lyr, v in zip(layers, layer_versions, strict=True)),
                     f"{z}/{x}/{y}", "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "f")])
    return f"{tag}/{hashlib.sha256(text.encode()).hexdigest()[:40]}"


def known_layers(catalog: Catalog, names: str, known: Mapping[str, int] | None) -> list[Layer] | None:
    """The layers of ``names`` when the cache can be asked without the database.

    That is built-in layers whose versions the listener knows; None when it cannot (no versions, an imported
    layer, a name ``resolve_layers`` refuses).
    """
    if known is None:
        return None
    ids = layer_ids(names)
    bases = [i.removesuffix(".labels") for i in ids]
    if not ids or any(b not in catalog.builtin for b in bases) or len(set(ids)) != len(ids):
        return None  # resolve_layers says what is wrong, or finds an imported layer
    try:
        layers = [catalog.builtin[b].labels() if i.endswith(".labels") else catalog.builtin[b]
                  for i, b in zip(ids, bases, strict=True)]
    except NotFound:
        return None
    if any(layer.table not in known for layer in layers):
        return None
    return layers


def cached_tile(catalog: Catalog, cache: TileCache | None, names: str, z: int, x: int, y: int,
                params: Mapping[str, str], known: Mapping[str, int] | None) -> Tile | None:
    """A cached tile found without the database: built-in layers, versions as the listener last heard them.

    None when that cannot be told here (no cache, no versions, an imported layer, not cached yet).
    """
    if cache is None:
        return None
    layers = known_layers(catalog, names, known)
    if layers is None:
        return None
    check_tile(z, x, y)
    assert known is not None
    return cache.get(tile_key(layers, z, x, y, params, [known[layer.table] for layer in layers]))


def tile_statement_with_versions(layers: list[Layer], z: int, x: int, y: int, params: Mapping[str, str],
                                 cell_tables: frozenset[str] = frozenset()) -> tuple[str, dict[str, Any]]:
    """``tile_statement`` and, in the same snapshot, the layers' versions it was made from (its cache key)."""
    sql, bind = tile_statement(layers, z, x, y, params, cell_tables)
    tables = ", ".join(f"'{_table_literal(layer)}'" for layer in layers)
    return (f"{sql}, ARRAY(SELECT coalesce((SELECT v.version FROM layer_versions v WHERE v.table_name = u.t), 0) "
            f"FROM unnest(ARRAY[{tables}]::text[]) WITH ORDINALITY u(t, n) ORDER BY u.n) AS versions"), bind


def run_tile(conn: Connection, sql: str, bind: Mapping[str, Any]) -> tuple[Any, ...]:
    """The one row of a tile statement: through SQLAlchemy when it has filter values, else on the driver's cursor.

    An unfiltered tile (nearly every tile a map asks for) skips SQLAlchemy's text parsing and result set-up:
    0.6 ms of CPU a tile of the bench list, a third of what the server spent on an uncached tile beside the
    database's own work.
    """
    if bind:
        return tuple(conn.execute(sa.text(sql), bind).one())
    return db.one_row(conn, sql)


def get_tile(conn: Connection, catalog: Catalog, cache: TileCache | None, names: str, z: int, x: int, y: int,
             params: Mapping[str, str], known: Mapping[str, int] | None = None,
             seen: FreshCells | None = None, rebuild: bool = True) -> Tile:
    """A tile, from the cache when the layers have not changed since it was made.

    ``known``: the versions as the listener heard them, when the caller has looked in the cache with them
    already. A tile is made in one statement that also reads the versions it is cached under (one snapshot:
    never older data under a newer version).
    """
    check_tile(z, x, y)
    layers = resolve_layers(catalog, conn, names)
    if params and len(layers) > 1:
        raise InvalidInput("filters apply to a tile of one layer; ask for each layer's tiles on their own",
                           param="layers")
    if cache is not None and known_layers(catalog, names, known) is None:
        found = cache.get(tile_key(layers, z, x, y, params, versions(conn, layers)))
        if found is not None:
            return found
    cell_tables = frozenset() if params else fresh_cells(conn, layers, known, seen, rebuild)
    data, made_from = run_tile(conn, *tile_statement_with_versions(layers, z, x, y, params, cell_tables))
    if cell_tables and known is not None and any(
            known.get(lyr.table) != v for lyr, v in zip(layers, made_from, strict=True) if lyr.table in cell_tables):
        # the layer changed since the versions the cells were trusted at (a bulk load may have left them
        # stale): ask the database, and make the tile again
        cell_tables = fresh_cells(conn, layers, rebuild=rebuild)
        data, made_from = run_tile(conn, *tile_statement_with_versions(layers, z, x, y, params, cell_tables))
    key = tile_key(layers, z, x, y, params, [int(v) for v in made_from])
    if cache is None:
        return Tile.made(key, bytes(data or b""))
    return cache.put(key, bytes(data or b""))


def tilejson(base_url: str, layers: list[Layer], conn: Connection) -> dict[str, Any]:
    """TileJSON 3.0.0 for one or several layers."""
    names = ",".join(layer.id for layer in layers)
    bounds = conn.execute(sa.text(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(geom) AS e FROM ("
        + " UNION ALL ".join(f"SELECT {quote_ident(layer.geometry.column)} AS geom FROM {quote_table(layer.table)}"
                             for layer in layers) + ") g) s")).one()
    box = [round(v, 6) for v in bounds] if bounds[0] is not None else [-180, -85.05, 180, 85.05]
    vector_layers = []
    for layer in layers:
        fields = {p: layer.properties[p].description or layer.properties[p].type.value for p in _tile_properties(layer)}
        fields["id"] = "feature id"
        if layer.tiles.cluster_below_zoom is not None:
            fields["count"] = f"features in a cluster (below zoom {layer.tiles.cluster_below_zoom})"
            fields["cluster"] = "true for a cluster"
        vector_layers.append({"id": layer.id, "description": layer.title, "minzoom": layer.style.min_zoom,
                              "maxzoom": layer.style.max_zoom, "fields": fields})
    return {
        "tilejson": "3.0.0",
        "name": names,
        "tiles": [f"{base_url}/tiles/{names}/{{z}}/{{x}}/{{y}}.mvt"],
        "minzoom": 0,
        "maxzoom": MAX_ZOOM,
        "bounds": box,
        "center": [round((box[0] + box[2]) / 2, 5), round((box[1] + box[3]) / 2, 5), 9],
        "vector_layers": vector_layers,
    }


def style_document(folder: Path, name: str, base_url: str) -> dict[str, Any]:
    """A MapLibre style from ``folder``, relative URLs (``/tiles/…``) made absolute against ``base_url``."""
    if not name.replace("-", "").replace("_", "").isalnum():
        raise NotFound(f"name: no style {name!r}", param="name")
    path = folder / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.json")))
        raise NotFound(f"name: no style {name!r} (styles: {known})", param="name")
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))

    def absolute(url: str) -> str:
        return base_url + url if url.startswith("/") else url

    for source in doc.get("sources", {}).values():
        if "url" in source:
            source["url"] = absolute(source["url"])
        if "tiles" in source:
            source["tiles"] = [absolute(u) for u in source["tiles"]]
    for key in ("glyphs", "sprite"):
        if isinstance(doc.get(key), str):
            doc[key] = absolute(doc[key])
    return doc


WALL_LAYERS = "infrastructure,cameras"  # the wall's base data tiles (maps.BASE_LAYERS); incidents come apart


def warm(engine: Any, catalog: Catalog, cache: TileCache, wanted_tiles: list[tuple[str, dict[str, str]]],
         bbox: tuple[float, float, float, float], zooms: list[int], stop: threading.Event) -> int:
    """Make the tiles a wall asks for first (the province at zooms 8–11) before anyone asks: run at start.

    ``wanted_tiles`` are (layers, query) pairs, as a wall asks for them (``maps.wall_tiles``).

    Also rebuilds stale pre-aggregated cells (after a bulk load), so the first viewer does not wait for it.
    Returns how many tiles it made; stops early when ``stop`` is set. Errors are logged, never raised.
    """
    import morecantile

    log = logging.getLogger("gis_ioc.tiles")
    made = 0
    try:
        wanted = list(morecantile.tms.get("WebMercatorQuad").tiles(*bbox, zooms))
        for t in wanted:
            for names, params in wanted_tiles:
                if stop.is_set():
                    return made
                def make(names: str = names, params: dict[str, str] = params, t: Any = t) -> Tile:
                    with engine.connect() as conn:
                        return get_tile(conn, catalog, cache, names, t.z, t.x, t.y, params)

                wait_for_cells(make)  # a wall's request may be rebuilding the cells: after it
                made += 1
    except Exception as err:  # a warm-up must never take the server down
        log.warning("tile warm-up stopped after %d tiles: %s", made, err)
    return made
