"""Tile archives: the tiles the server makes over an area and zooms, written into one PMTiles v3 file.

For a wall or a laptop with no server to ask (``gis-ioc tiles export``); the tiles are made by the same
statements as the server's (``gis_ioc.tiles``), clusters at low zoom and all.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from gis_ioc.catalog import Catalog
from gis_ioc.errors import InvalidInput
from gis_ioc.tile_cells import fresh_cells
from gis_ioc.tiles import MAX_ZOOM, resolve_layers, run_tile, tile_statement, tilejson


def parse_zooms(text: str) -> list[int]:
    """``8-14`` or ``10`` or ``8,10,12`` as a list of zooms (400 naming ``zooms`` otherwise)."""
    try:
        if "-" in text:
            low, high = (int(v) for v in text.split("-", 1))
            zooms = list(range(low, high + 1))
        else:
            zooms = sorted({int(v) for v in text.split(",")})
    except ValueError:
        raise InvalidInput(f"zooms: {text!r} is not a range like 8-14", param="zooms") from None
    if not zooms or zooms[0] < 0 or zooms[-1] > MAX_ZOOM:
        raise InvalidInput(f"zooms: {text!r} is not within 0-{MAX_ZOOM}", param="zooms")
    return zooms


def export_pmtiles(conn: Connection, catalog: Catalog, names: str, bbox: tuple[float, float, float, float],
                   zooms: list[int], out: Path, progress: Any = None, max_tiles: int = 200_000) -> dict[str, Any]:
    """Write the tiles of ``names`` over ``bbox`` at ``zooms`` into a PMTiles v3 archive (gzip MVT).

    The tiles are the ones the server makes (clusters at low zoom and all); empty tiles are left out. The
    archive is written beside ``out`` and renamed into place, so a failed export leaves nothing behind.
    """
    import morecantile
    from pmtiles.tile import Compression, TileType, zxy_to_tileid
    from pmtiles.writer import Writer

    layers = resolve_layers(catalog, conn, names)
    west, south, east, north = bbox
    if not (-180 <= west < east <= 180 and -85.06 <= south < north <= 85.06):
        raise InvalidInput(f"bbox: {bbox} is not minlon,minlat,maxlon,maxlat in degrees", param="bbox")
    tms = morecantile.tms.get("WebMercatorQuad")
    wanted = sorted(((t.z, t.x, t.y) for t in tms.tiles(west, south, east, north, zooms)),
                    key=lambda t: zxy_to_tileid(*t))
    if len(wanted) > max_tiles:
        raise InvalidInput(f"zooms: {len(wanted):,} tiles is over {max_tiles:,}; narrow the bbox or the zooms",
                           param="zooms")
    cells = fresh_cells(conn, layers)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    written = size = 0
    try:
        with partial.open("wb") as f:
            writer = Writer(f)
            for done, (z, x, y) in enumerate(wanted, 1):
                data = bytes(run_tile(conn, *tile_statement(layers, z, x, y, {}, cells))[0] or b"")
                if data:
                    packed = gzip.compress(data, compresslevel=6, mtime=0)
                    writer.write_tile(zxy_to_tileid(z, x, y), packed)
                    written += 1
                    size += len(packed)
                if progress is not None:
                    progress(done, len(wanted))
            if not written:
                raise InvalidInput(f"bbox: no features of {names} in {bbox} at zooms {zooms[0]}-{zooms[-1]}",
                                   param="bbox")
            meta = tilejson("", layers, conn)
            writer.finalize(
                {"tile_type": TileType.MVT, "tile_compression": Compression.GZIP,
                 "min_lon_e7": int(west * 1e7), "min_lat_e7": int(south * 1e7),
                 "max_lon_e7": int(east * 1e7), "max_lat_e7": int(north * 1e7),
                 "center_zoom": zooms[0], "center_lon_e7": int((west + east) / 2 * 1e7),
                 "center_lat_e7": int((south + north) / 2 * 1e7)},
                {"name": names, "description": "gis-ioc vector tiles", "format": "pbf", "type": "overlay",
                 "vector_layers": meta["vector_layers"]})
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return {"tiles": written, "empty": len(wanted) - written, "bytes": out.stat().st_size, "tile_bytes": size,
            "zooms": [zooms[0], zooms[-1]], "out": str(out)}
