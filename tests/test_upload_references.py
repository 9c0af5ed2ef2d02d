"""Files that point elsewhere: each format carrying a reference to a local file and to a URL.

A file is opened only with the driver its suffix names, and nothing it refers to is read or fetched: the
load is refused (or reads the file's own features only), the layer is as it was, no secret leaks into a
row, and a web server on loopback sees no request.
"""

from __future__ import annotations

import http.server
import sqlite3
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import geopandas as gpd
import pytest
import shapely
import sqlalchemy as sa

from gis_ioc import ingest
from gis_ioc.errors import IngestError

from .conftest import table_snapshot
from .factories import CITY

SECRET = "s3cr3t-line-of-a-private-file"
SUFFIXES = [".geojson", ".json", ".kml", ".gpkg", ".fgb", ".csv"]


@pytest.fixture
def web() -> Iterator[SimpleNamespace]:
    """A web server on loopback that counts the requests it gets (none is expected)."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            seen.append(self.path)
            body = f"name,lon,lat\n{SECRET},{CITY[0]},{CITY[1]}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_address[1]}", seen=seen)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A private CSV on the server's disk, shaped as a camera register would be."""
    path = tmp_path / "private" / "secret.csv"
    path.parent.mkdir()
    path.write_text(f"name,lon,lat\n{SECRET},{CITY[0]},{CITY[1]}\n")
    return path


def _vrt(source: str) -> str:
    return (f'<OGRVRTDataSource><OGRVRTLayer name="secret"><SrcDataSource>{source}</SrcDataSource>'
            '<GeometryType>wkbPoint</GeometryType><GeometryField encoding="PointFromColumns" x="lon" y="lat"/>'
            '</OGRVRTLayer></OGRVRTDataSource>')


def _load_refused(engine, catalog, settings, path: Path, layer: str = "cameras") -> IngestError:  # type: ignore[no-untyped-def]
    before = table_snapshot(engine, layer)
    with pytest.raises(IngestError) as err:
        ingest.load(engine, catalog, path, layer, crs="EPSG:4326", region=settings.region_extent)
    assert err.value.param == "file"
    assert table_snapshot(engine, layer) == before
    with engine.connect() as conn:
        leaked = conn.execute(sa.text(f"SELECT count(*) FROM {layer} WHERE name LIKE :s"), {"s": f"%{SECRET}%"})
        assert leaked.scalar_one() == 0
    return err.value


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_vrt_under_any_suffix_is_refused_and_reads_no_local_file(engine, catalog, settings, tmp_path, secret,
                                                                   suffix):
    path = tmp_path / f"cameras{suffix}"
    path.write_text(_vrt(f"CSV:{secret}"))
    err = _load_refused(engine, catalog, settings, path)
    assert "OGR_VRT" in err.message and "refused" in err.message


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_vrt_under_any_suffix_fetches_no_url(engine, catalog, settings, tmp_path, web, suffix):
    path = tmp_path / f"cameras{suffix}"
    path.write_text(_vrt(f"CSV:/vsicurl/{web.url}/cameras.csv"))
    _load_refused(engine, catalog, settings, path)
    assert web.seen == []


def test_a_gdal_pipeline_in_json_is_refused(engine, catalog, settings, tmp_path, secret):
    path = tmp_path / "cameras.json"
    path.write_text('{"type": "gdal_streamed_alg", "command_line": "gdal vector pipeline ! read '
                    f'{secret} ! write --of stream streamed_dataset", "relative_paths_relative_to_this_file": false}}')
    err = _load_refused(engine, catalog, settings, path)
    assert "GDALG" in err.message


def test_a_geojson_crs_link_is_not_fetched(engine, catalog, settings, tmp_path, web):
    path = tmp_path / "cameras.geojson"
    path.write_text('{"type": "FeatureCollection", "crs": {"type": "link", "properties": {"href": '
                    f'"{web.url}/crs.wkt", "type": "ogcwkt"}}}}, "features": [{{"type": "Feature", "properties": '
                    f'{{"name": "a"}}, "geometry": {{"type": "Point", "coordinates": [{CITY[0]}, {CITY[1]}]}}}}]}}')
    try:
        ingest.load(engine, catalog, path, "cameras", crs="EPSG:4326", region=settings.region_extent)
    except IngestError:
        pass  # refused or loaded: either way nothing is fetched
    assert web.seen == []


def test_kml_network_links_and_remote_styles_are_not_fetched(engine, catalog, settings, tmp_path, web):
    path = tmp_path / "cameras.kml"
    path.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<kml xmlns="http://www.opengis.net/kml/2.2"><Document>
<NetworkLink><name>more</name><Link><href>{web.url}/more.kml</href></Link></NetworkLink>
<Placemark><name>Camera A</name><styleUrl>{web.url}/style.kml#s</styleUrl>
<Point><coordinates>{CITY[0]},{CITY[1]}</coordinates></Point></Placemark>
</Document></kml>""")
    report = ingest.load(engine, catalog, path, "cameras", region=settings.region_extent, ignore_unknown=True)
    assert report.rows_loaded == 1
    assert web.seen == []
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM cameras")).scalars().all() == ["Camera A"]


def _geopackage(path: Path) -> Path:
    gpd.GeoDataFrame({"name": ["Camera A"]}, geometry=[shapely.Point(*CITY)], crs=4326).to_file(
        path, layer="cameras", driver="GPKG")
    return path


@pytest.mark.parametrize(("statement", "what"), [
    ("CREATE VIEW camera_view AS SELECT * FROM cameras", "view"),
    ("CREATE VIRTUAL TABLE words USING fts5(body)", "virtual table"),
    ("CREATE TRIGGER wipe AFTER INSERT ON cameras BEGIN DELETE FROM cameras; END", "trigger"),
])
def test_a_geopackage_holding_sql_is_refused(engine, catalog, settings, tmp_path, statement, what):
    path = _geopackage(tmp_path / "cameras.gpkg")
    with sqlite3.connect(path) as conn:
        conn.execute(statement)
    err = _load_refused(engine, catalog, settings, path)
    assert f"holds a {what}" in err.message


def test_a_plain_geopackage_with_its_spatial_index_loads(engine, catalog, settings, tmp_path):
    path = _geopackage(tmp_path / "cameras.gpkg")
    with sqlite3.connect(path) as conn:  # the R-tree index and its triggers, as GDAL writes them
        kinds = {row[0] for row in conn.execute("SELECT type FROM sqlite_master")}
    assert "trigger" in kinds
    assert ingest.load(engine, catalog, path, "cameras", region=settings.region_extent).rows_loaded == 1


def test_a_zipped_shapefile_is_read_alone(engine, catalog, settings, tmp_path, secret):
    folder = tmp_path / "shp"
    folder.mkdir()
    gpd.GeoDataFrame({"name": ["Camera A"]}, geometry=[shapely.Point(*CITY)], crs=4326).to_file(
        folder / "cameras.shp")
    archive = tmp_path / "cameras.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for part in folder.iterdir():
            zipped.write(part, part.name)
        zipped.writestr("secret.vrt", _vrt(f"CSV:{secret}"))
    assert ingest.load(engine, catalog, archive, "cameras", region=settings.region_extent).rows_loaded == 1
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM cameras")).scalars().all() == ["Camera A"]


def test_a_vrt_posing_as_the_shapefile_of_a_zip_is_refused(engine, catalog, settings, tmp_path, secret):
    archive = tmp_path / "cameras.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("cameras.shp", _vrt(f"CSV:{secret}"))
    _load_refused(engine, catalog, settings, archive)
