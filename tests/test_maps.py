"""Map views over HTTP and from the CLI, OGC API – Tiles paths, MapLibre styles, PMTiles export.

What a browser does with the views is in ``test_browser.py``.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from datetime import date

import morecantile
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pmtiles.reader import MmapSource, Reader

from gis_ioc import analysis, maps, planning
from gis_ioc.catalog import Catalog
from gis_ioc.settings import PROJECT_ROOT, Settings
from gis_ioc.web.app import create_app

CITY_Z12 = morecantile.tms.get("WebMercatorQuad").tile(108.003, 14.350, 12)  # Kon Tum city
ASSET = re.compile(r'<(?:script|link)[^>]*(?:src|href)="(?!data:)([^"]+)"')


@pytest.fixture(scope="module")
def client(demo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(database_url=demo_url, home=tmp_path_factory.mktemp("home")))) as c:
        yield c


def _an_active_incident(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT id FROM incidents WHERE status = 'in_progress' AND GeometryType(geom) = 'POINT' "
            "ORDER BY id LIMIT 1")).scalar_one())


@pytest.mark.parametrize("path", ["/views/wall", "/views/choropleth?layer=incidents&level=commune&window=30d",
                                  "/views/choropleth?level=district&window=7d&measure=per_km2"])
def test_views_take_every_library_from_the_server(client, path):
    page = client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = ASSET.findall(page.text)
    assert assets, "the page loads Leaflet"
    for url in assets:
        assert url.startswith("/static/"), f"{url} is not served by gis-ioc"
        assert client.get(url).status_code == 200
    assert "cdn" not in page.text.lower() and "unpkg" not in page.text


def test_the_wall_kpis_match_the_database(client, demo_engine):
    kpi = client.get("/views/wall/kpi.json").json()
    with demo_engine.connect() as conn:
        active = dict(conn.execute(sa.text(
            "SELECT severity, count(*) FROM incidents WHERE status IN ('new', 'verified', 'dispatched', "
            "'in_progress', 'reopened') GROUP BY 1")).all())
        online, total = conn.execute(sa.text(
            "SELECT count(*) FILTER (WHERE status = 'online'), count(*) FROM cameras")).one()
    assert kpi["active_total"] == sum(active.values()) > 0
    assert {s: n for s, n in kpi["active_by_severity"].items() if n} == active
    assert kpi["cameras"] == {"online": online, "total": total, "online_pct": round(100 * online / total, 1)}
    # no districts since 2025-07-01: the 24 h counts are by today's communes (the ten with most), in the last 24 h
    # or, when those hold nothing (the demo's reports end at its reference time), the 24 h up to the latest report
    with demo_engine.connect() as conn:
        window = conn.execute(sa.text(
            "SELECT count(*) FROM incidents WHERE reported_at >= :a AND reported_at <= :b"),
            {"a": kpi["window"]["from"], "b": kpi["window"]["to"]}).scalar()
        communes = dict(conn.execute(sa.text(  # each incident in the commune of today that holds it
            "SELECT a.code, count(*) FROM incidents i JOIN admin_units a ON a.level = 'commune' AND a.valid_to IS NULL "
            "AND ST_Contains(a.geom, ST_PointOnSurface(i.geom)) WHERE i.reported_at >= :a AND i.reported_at <= :b "
            "GROUP BY 1"),
            {"a": kpi["window"]["from"], "b": kpi["window"]["to"]}).all())
    assert kpi["window_total"] == window > 0
    top = kpi["top_communes"]
    assert 0 < len(top) <= 10 and [d["count"] for d in top] == sorted((d["count"] for d in top), reverse=True)
    assert all(communes[d["code"]] == d["count"] for d in top)
    assert top[0]["count"] == max(communes.values())


def test_the_incident_view_lists_cameras_and_infrastructure_with_distances(client, demo_engine, demo_url):
    incident = _an_active_incident(demo_engine)
    page = client.get(f"/views/incidents/{incident}")
    assert page.status_code == 200
    catalog = Catalog.from_folder(PROJECT_ROOT / "layers", demo_engine)
    with demo_engine.connect() as conn:
        near = analysis.nearest(conn, catalog, "cameras", incident=incident, k=5, filter_text="status = 'online'")
        reach = analysis.impact(conn, catalog, incident=incident, radius_m=2000)
    for camera in near["features"]:
        assert f"{camera['properties']['distance_m']:,.0f} m" in page.text
        assert camera["properties"]["name"] in page.text
    side = page.text.split('id="gis-incident"', 1)[1]
    assert "<td>—</td>" not in side  # a camera that does not see it says why
    assert "sees it" in side or "out of range" in side or "looks elsewhere" in side
    for feature in reach["layers"]["infrastructure"]:
        assert f"{feature['properties']['distance_m']:,.0f} m" in page.text


@pytest.mark.parametrize("path", ["/views/incidents/999999999", "/views/nothing",
                                  "/views/wall/more"])
def test_unknown_views_and_incidents_are_404_pages(client, path):
    page = client.get(path)
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "Not found" in page.text


@pytest.mark.parametrize("path", ["/views/incidents/abc", "/views/incidents/%C2%B2", "/views/incidents/0",
                                  "/views/incidents/" + "9" * 5000])
def test_malformed_incident_ids_are_400_naming_them(client, path):
    response = client.get(path)
    assert response.status_code == 400 and response.json()["parameter"] == "incident_id"


@pytest.mark.parametrize("query, param", [("level=province", "level"), ("window=30", "window"),
                                          ("window=-3d", "window"), ("measure=mean", "measure"),
                                          ("layer=nope", "layer")])
def test_bad_choropleth_parameters_are_400_naming_them(client, query, param):
    response = client.get(f"/views/choropleth?{query}")
    assert response.status_code in (400, 404)
    assert response.json()["parameter"] == param


def test_render_writes_self_contained_pages(run_cli, demo_url, demo_engine, tmp_path):
    env = {"GIS_IOC_DATABASE_URL": demo_url, "GIS_IOC_HOME": str(tmp_path / "home")}
    incident = _an_active_incident(demo_engine)
    for name, extra in (("wall", ["--server", "http://wall.example:8000"]), ("incident", ["--incident", str(incident)]),
                        ("choropleth", ["--level", "commune"])):
        out = tmp_path / f"{name}.html"
        code, stdout, stderr = run_cli("render", name, "--out", str(out), *extra, env=env)
        assert code == 0, stderr
        text = out.read_text()
        assert not ASSET.findall(text), "libraries are inside the file"
        assert "L.map(" in text and "GisIocViews" in text
    wall = (tmp_path / "wall.html").read_text()
    assert "http://wall.example:8000/tiles/infrastructure,cameras/{z}/{x}/{y}.mvt" in wall
    assert "http://wall.example:8000/tiles/incidents/{z}/{x}/{y}.mvt?filter={filter}" in wall
    code, _, stderr = run_cli("render", "incident", "--incident", "999999999", "--out", str(tmp_path / "x.html"),
                              env=env)
    assert code == 1 and stderr.startswith("gis-ioc: error: incident 999999999") and "Traceback" not in stderr
    code, _, stderr = run_cli("render", "map", "--out", str(tmp_path / "x.html"), env=env)
    assert code == 2 and "name" in stderr and not (tmp_path / "x.html").exists()


def test_class_breaks():
    assert planning.class_breaks([]) == []
    assert planning.class_breaks([5, 5, 5]) == [5]
    breaks = planning.class_breaks(list(range(1, 101)))
    assert breaks == [20, 40, 60, 80, 100]


# -- OGC API – Tiles and styles -------------------------------------------------------------------------


def test_ogc_tiles_paths(client):
    assert "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt" in client.get("/conformance").json()["conformsTo"]
    collection = client.get("/collections/incidents").json()
    tilesets_href = next(link["href"] for link in collection["links"] if link["rel"].endswith("tilesets-vector"))
    tilesets = client.get(tilesets_href).json()["tilesets"]
    assert tilesets[0]["dataType"] == "vector"
    tileset = client.get("/collections/incidents/tiles/WebMercatorQuad").json()
    assert tileset["tileMatrixSetURI"].endswith("/WebMercatorQuad")
    template = next(link["href"] for link in tileset["links"] if link["rel"] == "item")
    assert template.endswith("/collections/incidents/tiles/WebMercatorQuad/{tileMatrix}/{tileRow}/{tileCol}")
    assert "severity" in tileset["layers"][0]["propertiesSchema"]["properties"]
    tms = client.get("/tileMatrixSets/WebMercatorQuad").json()
    assert tms["id"] == "WebMercatorQuad" and len(tms["tileMatrices"]) >= 20
    # the OGC path (row = y, column = x) gives the very tile of /tiles/{layer}/{z}/{x}/{y}.mvt
    z, x, y = CITY_Z12.z, CITY_Z12.x, CITY_Z12.y
    ogc = client.get(f"/collections/incidents/tiles/WebMercatorQuad/{z}/{y}/{x}", headers={"Accept-Encoding": "x"})
    plain = client.get(f"/tiles/incidents/{z}/{x}/{y}.mvt", headers={"Accept-Encoding": "x"})
    assert ogc.status_code == 200 and ogc.content == plain.content and ogc.content
    filtered = client.get(f"/collections/incidents/tiles/WebMercatorQuad/14/{y * 4}/{x * 4}?severity=extreme")
    assert filtered.status_code == 200


@pytest.mark.parametrize("path, status, param", [
    ("/collections/incidents/tiles/WorldCRS84Quad", 404, "tileMatrixSetId"),
    ("/collections/nope/tiles/WebMercatorQuad", 404, "layer"),
    ("/collections/incidents/tiles/WebMercatorQuad/3/9/1", 400, "y"),
    ("/collections/incidents/tiles/WebMercatorQuad/23/0/0", 400, "tile_matrix"),
    ("/collections/incidents/tiles/WebMercatorQuad/10/400/800?filter=severity%20%3D", 400, "filter"),
    ("/tileMatrixSets/Nope", 404, "tileMatrixSetId"),
    ("/styles/nope.json", 404, "name"),
])
def test_bad_ogc_tile_requests(client, path, status, param):
    response = client.get(path)
    assert response.status_code == status and response.json()["parameter"] == param


def test_the_wall_style_fits_the_tiles(client):
    listed = client.get("/styles").json()["styles"]
    assert "wall" in [s["id"] for s in listed]
    style = client.get("/styles/wall.json").json()
    assert style["version"] == 8
    source = style["sources"]["gis-ioc"]
    assert source["url"].startswith("http://testserver/tiles/")
    tilejson = client.get(source["url"].replace("http://testserver", "")).json()
    fields = {layer["id"]: set(layer["fields"]) | {"level", "name"} for layer in tilejson["vector_layers"]}
    for layer in style["layers"]:
        if layer["type"] == "background":
            continue
        assert layer["source-layer"] in fields, layer["id"]
        used = set(re.findall(r'\["get", "(\w+)"\]', json.dumps(layer)))
        assert used <= fields[layer["source-layer"]] | {"count"}, (layer["id"], used)


# -- PMTiles ---------------------------------------------------------------------------------------------


def test_pmtiles_export_holds_the_servers_tiles(run_cli, client, demo_url, tmp_path):
    out = tmp_path / "kontum.pmtiles"
    env = {"GIS_IOC_DATABASE_URL": demo_url, "GIS_IOC_HOME": str(tmp_path / "home")}
    code, stdout, stderr = run_cli("tiles", "export", "--layers", "incidents,cameras", "--bbox",
                                   "107.9,14.3,108.1,14.45", "--zooms", "10-13", "--out", str(out), env=env)
    assert code == 0, stderr
    with out.open("rb") as f:
        reader = Reader(MmapSource(f))
        header = reader.header()
        assert (header["min_zoom"], header["max_zoom"]) == (10, 13)
        assert [layer["id"] for layer in reader.metadata()["vector_layers"]] == ["incidents", "cameras"]
        z, x, y = CITY_Z12.z, CITY_Z12.x, CITY_Z12.y
        stored = reader.get(z, x, y)
    served = client.get(f"/tiles/incidents,cameras/{z}/{x}/{y}.mvt", headers={"Accept-Encoding": "x"}).content
    assert stored is not None and gzip.decompress(stored) == served


def test_a_failed_export_writes_nothing(run_cli, demo_url, tmp_path):
    env = {"GIS_IOC_DATABASE_URL": demo_url, "GIS_IOC_HOME": str(tmp_path / "home")}
    for args, param in ((["--zooms", "8-30"], "zooms"), (["--layers", "nope"], "layer"),
                        (["--bbox", "1,2,3"], "bbox"), (["--bbox", "100,10,100.1,10.1"], "bbox")):
        code, _, stderr = run_cli("tiles", "export", "--out", str(tmp_path / "x.pmtiles"), *args, env=env)
        assert code != 0 and stderr.startswith("gis-ioc: error:") and param in stderr, stderr
        assert "Traceback" not in stderr
    assert list(tmp_path.glob("*.pmtiles*")) == [] and list(tmp_path.glob(".x.pmtiles*")) == []


def test_the_district_date_follows_the_data(demo_engine):
    with demo_engine.connect() as conn:
        assert maps._districts_on(conn) == date(2025, 6, 30)


def test_a_basemap_only_when_one_is_configured(demo_url, tmp_path):
    with TestClient(create_app(Settings(database_url=demo_url, home=tmp_path / "home"))) as plain:
        assert "L.tileLayer(" not in plain.get("/views/wall").text
    basemap = "http://tiles.ioc.local/osm/{z}/{x}/{y}.png"
    settings = Settings(database_url=demo_url, home=tmp_path / "home", basemap_url=basemap,
                        basemap_attribution="© OpenStreetMap contributors")
    with TestClient(create_app(settings)) as client:
        page = client.get("/views/wall").text
    assert basemap in page and "OpenStreetMap contributors" in page
