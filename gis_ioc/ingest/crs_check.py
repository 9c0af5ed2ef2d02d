"""A likely CRS mistake, named with the CRS that would fit.

A file that lands mostly outside the province after reprojection was probably read in the wrong
CRS: VN-2000 data in the neighbouring TM-3 zone (EPSG:9217 declared as Kon Tum's 9216: about 80 km
east, often still within the loose region box), metres declared as degrees, longitude and latitude
swapped. The first chunk's coordinates, as the file has them, are tried in the usual Vietnamese CRSs;
when one puts them inside the province, the load is refused naming it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer

from gis_ioc.errors import IngestError
from gis_ioc.ingest.derive import anchors

SAMPLE = 2_000  # features tried per candidate CRS
INSIDE = 0.5  # below this share inside the province, the declared CRS is doubted
FITS = 0.9  # a candidate fits when at least this share lands inside
# VN-2000 provincial TM-3 zones, VN-2000 UTM 48N/49N, WGS 84 UTM 48N/49N, VN-2000 and WGS 84 geographic
CANDIDATES = [*range(9205, 9219), 3405, 3406, 32648, 32649, 4756, 4326]


def province_area(cur: Any, region: tuple[float, float, float, float] | None) -> Any:
    """Today's province outline from ``admin_units`` (a little widened), else the region box, else None."""
    cur.execute("SELECT ST_AsBinary(ST_Union(geom)) FROM admin_units WHERE level = 'province' AND valid_to IS NULL")
    found = cur.fetchone()
    if found and found[0] is not None:
        area = shapely.buffer(shapely.from_wkb(bytes(found[0])), 0.02)  # ~2 km: border posts, river banks
    elif region is not None:
        area = shapely.box(*region)
    else:
        return None
    shapely.prepare(area)
    return area


def _share_inside(area: Any, x: np.ndarray, y: np.ndarray, crs: CRS) -> float:
    try:
        lon, lat = Transformer.from_crs(crs, 4326, always_xy=True).transform(x, y, errcheck=False)
    except Exception:  # a candidate that cannot take these numbers does not fit
        return 0.0
    ok = np.isfinite(lon) & np.isfinite(lat)
    if not ok.any():
        return 0.0
    return float(shapely.contains_xy(area, lon[ok], lat[ok]).sum()) / len(x)


def check(area: Any, source: Any, lonlat: np.ndarray, declared: CRS, label: str) -> None:
    """Refuse a first chunk that lies mostly outside ``area`` when another CRS would put it inside.

    ``source`` are the chunk's geometries as the file has them, ``lonlat`` the same reprojected.
    """
    usable = ~(shapely.is_missing(lonlat) | shapely.is_empty(lonlat))
    if area is None or not usable.any():
        return
    step = max(1, int(usable.sum()) // SAMPLE)
    picked = np.flatnonzero(usable)[::step][:SAMPLE]
    here = shapely.get_coordinates(anchors(lonlat[picked]))
    if float(shapely.contains_xy(area, here[:, 0], here[:, 1]).sum()) / len(picked) >= INSIDE:
        return
    raw = shapely.get_coordinates(anchors(source[picked]))
    x, y = raw[:, 0], raw[:, 1]
    best, best_share = None, 0.0
    for code in CANDIDATES:
        candidate = CRS.from_epsg(code)
        if candidate.equals(declared):
            continue
        share = _share_inside(area, x, y, candidate)
        if share > best_share:
            best, best_share = candidate, share
    if declared.is_geographic and _share_inside(area, y, x, declared) >= FITS:
        raise IngestError(f"the coordinates look like latitude, longitude (swapped): read as {label} most features "
                          "lie outside the province, swapped they lie inside it; swap them in the file",
                          param="crs")
    if best is not None and best_share >= FITS:
        code = best.to_epsg()
        raise IngestError(
            f"most features lie outside the province when read as {label} ({declared.name}); read as EPSG:{code} "
            f"({best.name}) {best_share:.0%} lie inside it: if that is the file's CRS, load it with --crs "
            f"EPSG:{code}",
            param="crs",
        )
