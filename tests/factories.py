"""Small, valid sample frames for each built-in layer, and writers for each file format."""

from __future__ import annotations

import zipfile
from pathlib import Path

import geopandas as gpd
import pandas as pd
from shapely.geometry import LineString, MultiPolygon, Point, Polygon

CITY = (108.003, 14.350)


def square(x: float, y: float, d: float = 0.01) -> Polygon:
    return Polygon([(x, y), (x + d, y), (x + d, y + d), (x, y + d)])


def sample(layer: str) -> gpd.GeoDataFrame:
    """Three rows a user could load into ``layer``."""
    x, y = CITY
    if layer == "admin_units":
        data = {
            "code": ["23281", "23284", "23287"],
            "level": ["commune"] * 3,
            "unit_type": ["phường", "xã", "xã"],
            "name": ["Quyết Thắng", "Đắk Cấm", "Ia Chim"],
            "parent_code": ["608"] * 3,
            "valid_from": ["2008-01-01"] * 3,
        }
        geoms = [MultiPolygon([square(x + i * 0.01, y)]) for i in range(3)]
    elif layer == "cameras":
        data = {
            "name": ["CAM Ngã tư A", "CAM QL14 km2", "CAM Chợ"],
            "heading_deg": [0.0, 90.5, 271.0],
            "fov_deg": [60.0, 90.0, 360.0],
            "range_m": [120.0, 200.0, 50.0],
            "status": ["online", "offline", "maintenance"],
            "zone": ["Nội thị"] * 3,
        }
        geoms = [Point(x + i * 0.001, y) for i in range(3)]
    elif layer == "incidents":
        data = {
            "type": ["traffic_accident", "fire", "medical"],
            "severity": ["severe", "moderate", "minor"],
            "title": ["Va chạm xe máy", "Cháy nhà", "Cấp cứu"],
            "source": ["113", "114", "115"],
            "reported": ["2026-11-20T08:00:00+07:00", "2026-11-21T09:30:00+07:00", "2026-11-22T10:00:00+07:00"],
        }
        geoms = [Point(x + i * 0.001, y + 0.001) for i in range(3)]
    elif layer == "infrastructure":
        data = {"kind": ["road", "road", "road"], "name": ["QL14", "QL24", "ĐT671"],
                "road_class": ["national", "national", "provincial"]}
        geoms = [LineString([(x, y + i * 0.01), (x + 0.02, y + i * 0.01 + 0.005)]) for i in range(3)]
    else:  # pragma: no cover
        raise KeyError(layer)
    frame = gpd.GeoDataFrame(pd.DataFrame(data), geometry=geoms, crs=4326)
    if layer == "incidents":
        frame = frame.rename(columns={"reported": "reported_at"})
    return frame


def write(frame: gpd.GeoDataFrame, fmt: str, folder: Path, name: str = "data") -> Path:
    """Write a frame as GeoJSON, GeoPackage, zipped Shapefile, CSV (lon/lat or WKT), FlatGeobuf or KML."""
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "geojson":
        path = folder / f"{name}.geojson"
        frame.to_file(path, driver="GeoJSON", engine="pyogrio")
    elif fmt == "gpkg":
        path = folder / f"{name}.gpkg"
        frame.to_file(path, driver="GPKG", engine="pyogrio")
    elif fmt == "fgb":
        path = folder / f"{name}.fgb"
        frame.to_file(path, driver="FlatGeobuf", engine="pyogrio")
    elif fmt == "kml":
        path = folder / f"{name}.kml"
        frame.to_file(path, driver="KML", engine="pyogrio")
    elif fmt == "shp.zip":
        shp_dir = folder / f"{name}_shp"
        shp_dir.mkdir()
        frame.to_file(shp_dir / f"{name}.shp", driver="ESRI Shapefile", engine="pyogrio", encoding="UTF-8")
        path = folder / f"{name}.zip"
        with zipfile.ZipFile(path, "w") as zf:
            for part in shp_dir.iterdir():
                zf.write(part, part.name)
    elif fmt == "csv":
        path = folder / f"{name}.csv"
        table = pd.DataFrame(frame.drop(columns=frame.geometry.name))
        if (frame.geom_type == "Point").all():
            table["lon"], table["lat"] = frame.geometry.x, frame.geometry.y
        else:
            table["wkt"] = frame.geometry.to_wkt()
        table.to_csv(path, index=False)
    else:  # pragma: no cover
        raise KeyError(fmt)
    return path
