"""A file read in the wrong CRS is refused, naming the CRS that would fit (and the layer is left as it was)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import Transformer
from sqlalchemy.engine import Engine

from gis_ioc import db, ingest
from gis_ioc.catalog import Catalog
from gis_ioc.errors import IngestError
from gis_ioc.settings import Settings

from .conftest import PROJECT_ROOT, demo_copy, table_snapshot


@pytest.fixture(scope="module")
def province(server_url: str, demo_url: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Engine, Catalog, Settings]]:
    with demo_copy(server_url, demo_url, "gis_ioc_test_crs") as url:
        engine = db.make_engine(url, pool_size=2)
        try:
            yield engine, Catalog.from_folder(PROJECT_ROOT / "layers", engine), \
                Settings(database_url=url, home=tmp_path_factory.mktemp("home"))
        finally:
            engine.dispose()


def _cameras_across_the_province(engine: Engine, n: int = 60) -> np.ndarray:
    """Longitudes and latitudes of ``n`` points inside today's province, spread over it."""
    with engine.connect() as conn:
        wkb = conn.exec_driver_sql("SELECT ST_AsBinary(geom) FROM admin_units WHERE level = 'province' "
                                   "AND valid_to IS NULL").scalar_one()
    area = shapely.from_wkb(bytes(wkb))
    xmin, ymin, xmax, ymax = area.bounds
    rng = np.random.default_rng(9217)
    found: list[tuple[float, float]] = []
    while len(found) < n:
        x, y = rng.uniform(xmin, xmax), rng.uniform(ymin, ymax)
        if shapely.contains_xy(area, x, y):
            found.append((x, y))
    return np.array(found)


def _file(points: np.ndarray, crs: int, declared: int | str, tmp_path: Path, name: str) -> Path:
    x, y = points[:, 0], points[:, 1]
    if crs != 4326:
        x, y = Transformer.from_crs(4326, crs, always_xy=True).transform(x, y)
    frame = gpd.GeoDataFrame({"name": [f"CAM {i}" for i in range(len(x))]},
                             geometry=gpd.points_from_xy(x, y), crs=declared)
    path = tmp_path / f"{name}.gpkg"
    frame.to_file(path)
    return path


def test_the_neighbouring_tm3_zone_is_named(province, tmp_path):
    engine, catalog, settings = province
    before = table_snapshot(engine, "cameras")
    path = _file(_cameras_across_the_province(engine), 9217, 9216, tmp_path, "vung_ben")  # 9217 data, 9216 .prj
    with pytest.raises(IngestError, match=r"read as EPSG:9216 .*read as EPSG:9217 .*--crs EPSG:9217"):
        ingest.load(engine, catalog, path, "cameras", region=settings.region_extent)
    assert table_snapshot(engine, "cameras") == before
    report = ingest.load(engine, catalog, path, "cameras", crs="EPSG:9217", region=settings.region_extent)
    assert report.rows_loaded == 60


def test_metres_declared_as_degrees_are_named(province, tmp_path):
    engine, catalog, settings = province
    path = _file(_cameras_across_the_province(engine), 9216, 4326, tmp_path, "met_la_do")
    with pytest.raises(IngestError, match=r"read as EPSG:9216 .*--crs EPSG:9216"):
        ingest.load(engine, catalog, path, "cameras", region=settings.region_extent)


def test_swapped_longitude_and_latitude_are_named(province, tmp_path):
    engine, catalog, settings = province
    points = _cameras_across_the_province(engine)
    path = _file(points[:, ::-1].copy(), 4326, 4326, tmp_path, "dao_truc")
    with pytest.raises(IngestError, match=r"latitude, longitude \(swapped\)"):
        ingest.load(engine, catalog, path, "cameras", region=settings.region_extent)
