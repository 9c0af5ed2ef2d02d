"""The IOC spatial operations, checked against pyproj's Geod (GeographicLib) and brute force."""

from __future__ import annotations

import json
from datetime import date

import pytest
import shapely
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pyproj import Geod
from shapely.geometry import Point, shape

from gis_ioc import analysis
from gis_ioc.catalog import Catalog
from gis_ioc.errors import InvalidInput
from gis_ioc.settings import PROJECT_ROOT, Settings
from gis_ioc.web.app import create_app

GEOD = Geod(ellps="WGS84")
CITY = (108.003, 14.350)
BEFORE, AFTER = date(2025, 6, 30), date(2025, 7, 1)


@pytest.fixture(scope="module")
def demo_catalog(demo_engine):  # type: ignore[no-untyped-def]
    return Catalog.from_folder(PROJECT_ROOT / "layers", demo_engine)


def test_locate_before_and_after_the_reform(demo_engine):
    with demo_engine.connect() as conn:
        before = analysis.locate(conn, *CITY, at=BEFORE)
        after = analysis.locate(conn, *CITY, at=AFTER)
    assert before["province"]["name"] == "Kon Tum" and before["district"]["code"] == "608"
    assert after["province"]["name"] == "Quảng Ngãi" and after["district"] is None
    assert before["commune"] and after["commune"]


def test_a_point_outside_every_unit_says_so(demo_engine):
    with demo_engine.connect() as conn:
        found = analysis.locate(conn, 105.85, 21.03)
    assert found["inside"] is False and found["commune"] is None


def test_a_point_on_a_shared_boundary_belongs_to_both_units(demo_engine):
    with demo_engine.connect() as conn:
        x, y = conn.execute(sa.text(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_LineInterpolatePoint(ST_GeometryN(ST_LineMerge("
            "ST_Intersection(ST_Boundary(a.geom), ST_Boundary(b.geom))), 1), 0.5) AS p "
            "FROM admin_units a JOIN admin_units b ON a.code = '608' AND b.code = '615' "
            "AND a.level = 'district' AND b.level = 'district') s")).one()
        found = analysis.locate(conn, x, y, at=BEFORE)
    districts = sorted(u["code"] for u in found["units"] if u["level"] == "district")
    assert districts == ["608", "615"]
    assert found["district"]["code"] == "608"  # the smallest code first, every time


def test_nearest_matches_brute_force_geodesic_distances(demo_engine, demo_catalog):
    with demo_engine.connect() as conn:
        result = analysis.nearest(conn, demo_catalog, "cameras", lon=CITY[0], lat=CITY[1], k=5,
                                  filter_text="status = 'online'")
        everything = conn.execute(sa.text(
            "SELECT id, ST_X(geom), ST_Y(geom) FROM cameras WHERE status = 'online'")).all()
    brute = sorted((GEOD.inv(*CITY, x, y)[2], i) for i, x, y in everything)[:5]
    assert [f["id"] for f in result["features"]] == [i for _, i in brute]
    for feature, (metres, _) in zip(result["features"], brute, strict=True):
        assert feature["properties"]["distance_m"] == pytest.approx(metres, rel=1e-3)
        assert feature["properties"]["status"] == "online"


def test_nearest_incidents_match_the_database_brute_force_everywhere(demo_engine, demo_catalog):
    """From 150 places in and around the province (edges and corners, where the nearest are far and a town lies
    just beyond): the same k as ordering every incident by its geodesic distance."""
    import random

    rng = random.Random(14)
    places = [(rng.uniform(107.3, 108.9), rng.uniform(13.8, 15.6)) for _ in range(150)]
    with demo_engine.connect() as conn:
        for lon, lat in places:
            found = analysis.nearest(conn, demo_catalog, "incidents", lon=lon, lat=lat, k=5)
            brute = conn.execute(sa.text(
                "SELECT id, ST_Distance(geom::geography, ST_SetSRID(ST_MakePoint(:x, :y), 4326)::geography) AS m "
                "FROM incidents ORDER BY 2, 1 LIMIT 5"), {"x": lon, "y": lat}).all()
            assert [f["id"] for f in found["features"]] == [r.id for r in brute], (lon, lat)
            assert [f["properties"]["distance_m"] for f in found["features"]] == pytest.approx(
                [r.m for r in brute], abs=0.01)


def test_nearest_from_an_incident_with_a_limit_and_k_above_the_layer(demo_engine, demo_catalog):
    with demo_engine.connect() as conn:
        hospitals = analysis.nearest(conn, demo_catalog, "infrastructure", incident=1, k=1000,
                                     filter_text="kind = 'hospital'")
        count = conn.execute(sa.text("SELECT count(*) FROM infrastructure WHERE kind = 'hospital'")).scalar()
        near = analysis.nearest(conn, demo_catalog, "cameras", incident=1, k=50, max_distance_m=2000)
    distances = [f["properties"]["distance_m"] for f in hospitals["features"]]
    assert len(distances) == count and distances == sorted(distances)
    assert all(f["properties"]["distance_m"] <= 2000 for f in near["features"])


def test_nearest_on_an_empty_layer(engine, catalog):
    with engine.connect() as conn:
        assert analysis.nearest(conn, catalog, "cameras", lon=CITY[0], lat=CITY[1], k=3)["features"] == []


def test_within_a_circle_agrees_with_geod(demo_engine, demo_catalog):
    with demo_engine.connect() as conn:
        area = analysis.area_geometry(conn, lon=CITY[0], lat=CITY[1], radius_m=1500)
        inside = analysis.within(conn, demo_catalog, "cameras", area)
        everything = conn.execute(sa.text("SELECT id, ST_X(geom), ST_Y(geom) FROM cameras")).all()
    found = {f["id"] for f in inside["features"]}
    clearly_in = {i for i, x, y in everything if GEOD.inv(*CITY, x, y)[2] < 1490}
    clearly_out = {i for i, x, y in everything if GEOD.inv(*CITY, x, y)[2] > 1510}
    assert clearly_in <= found and not (found & clearly_out)


def test_within_an_admin_unit_on_a_date(demo_engine, demo_catalog):
    with demo_engine.connect() as conn:
        area = analysis.area_geometry(conn, admin_code="608", at=BEFORE)
        inside = analysis.within(conn, demo_catalog, "infrastructure", area, "kind = 'hospital'")
        with pytest.raises(InvalidInput, match="admin_code"):
            analysis.area_geometry(conn, admin_code="608", at=AFTER)  # no districts after the reform
    names = {f["properties"]["name"] for f in inside["features"]}
    assert "Bệnh viện Đa khoa tỉnh Kon Tum" in names


def test_fov_sector_is_geodesic_and_wraps_across_north():
    sector = analysis.fov_sector(*CITY, heading_deg=350, fov_deg=60, range_m=200)
    assert sector.is_valid
    for azimuth, inside in ((10, True), (335, True), (25, False), (300, False), (170, False)):
        x, y, _ = GEOD.fwd(*CITY, azimuth, 150)
        assert sector.contains(Point(x, y)) is inside, azimuth
        assert analysis.sees(*CITY, 350, 60, 200, x, y)[0] is inside, azimuth
    area, _ = GEOD.geometry_area_perimeter(analysis.fov_sector(*CITY, 0, 90, 1000, step_deg=0.5))
    assert abs(area) == pytest.approx(3.141592653589793 * 1000**2 / 4, rel=5e-3)
    dome = analysis.fov_sector(*CITY, heading_deg=0, fov_deg=360, range_m=50)
    assert abs(GEOD.geometry_area_perimeter(dome)[0]) == pytest.approx(3.141592653589793 * 50**2, rel=5e-3)


def test_cameras_seeing_a_point(engine, catalog):
    with engine.begin() as conn:
        for name, heading, fov, status in (("north", 0, 60, "online"), ("south", 180, 60, "online"),
                                           ("dome", 0, 360, "offline")):
            conn.execute(sa.text(
                "INSERT INTO cameras (name, heading_deg, fov_deg, range_m, status, geom) "
                "VALUES (:n, :h, :f, 300, :s, ST_SetSRID(ST_MakePoint(:x, :y), 4326))"),
                {"n": name, "h": heading, "f": fov, "s": status, "x": CITY[0], "y": CITY[1]})
    x, y, _ = GEOD.fwd(*CITY, 5, 200)  # 200 m north
    with engine.connect() as conn:
        seeing = {c["name"] for c in analysis.cameras_seeing(conn, x, y)}
        online = {c["name"] for c in analysis.cameras_seeing(conn, x, y, online_only=True)}
        far = analysis.cameras_seeing(conn, *GEOD.fwd(*CITY, 5, 400)[:2])
    assert seeing == {"north", "dome"} and online == {"north"} and far == []


def test_stats_per_district_before_the_reform(demo_engine, demo_catalog):
    with demo_engine.connect() as conn:
        result = analysis.stats(conn, demo_catalog, "incidents", "district", at=BEFORE, breakdown="severity")
        total = conn.execute(sa.text("SELECT count(*) FROM incidents")).scalar()
        outline = conn.execute(sa.text("SELECT ST_AsGeoJSON(geom) FROM admin_units WHERE code = '608' "
                                       "AND level = 'district'")).scalar()
    assert len(result["units"]) == 10 and result["total"] == total
    city = next(u for u in result["units"] if u["code"] == "608")
    assert sum(city["breakdown"].values()) == city["count"]
    area, _ = GEOD.geometry_area_perimeter(shape(json.loads(outline)))
    assert city["area_km2"] == pytest.approx(abs(area) / 1e6, rel=5e-3)
    assert city["per_km2"] == pytest.approx(city["count"] / city["area_km2"], rel=1e-3)
    with demo_engine.connect() as conn, pytest.raises(InvalidInput, match="abolished"):
        analysis.stats(conn, demo_catalog, "incidents", "district", at=AFTER)


def test_stats_with_a_window_and_a_filter(demo_engine, demo_catalog):
    window = analysis.Window(start="2026-11-01T00:00:00Z", end="2026-11-15T00:00:00Z")
    with demo_engine.connect() as conn:
        result = analysis.stats(conn, demo_catalog, "incidents", "commune", window=window, filter_text="type = 'fire'")
        expected = conn.execute(sa.text(
            "SELECT count(*) FROM incidents WHERE type = 'fire' AND reported_at >= '2026-11-01Z' "
            "AND reported_at < '2026-11-15Z'")).scalar()
    assert result["total"] == expected


def test_stats_in_a_window_place_each_feature_as_the_stats_without_one(demo_engine, demo_catalog):
    """A window picks its rows by time first, then places them; a window over all time gives the same per unit."""
    everything = analysis.Window(start="1990-01-01T00:00:00Z", end=None)
    with demo_engine.connect() as conn:
        for layer, breakdown in (("incidents", "type"), ("incidents", None)):
            windowed = analysis.stats(conn, demo_catalog, layer, "commune", window=everything, breakdown=breakdown)
            plain = analysis.stats(conn, demo_catalog, layer, "commune", breakdown=breakdown)
            assert windowed["units"] == plain["units"] and windowed["total"] == plain["total"] > 0
            sql = analysis.stats(conn, demo_catalog, layer, "commune", window=everything, statement_only=True)["sql"]
            assert "picked AS MATERIALIZED" in sql


@pytest.mark.parametrize(
    ("url", "param"),
    [
        ("/analysis/locate?lon=200&lat=14", "lon"),
        ("/analysis/locate?lon=108&lat=-95", "lat"),
        ("/analysis/nearest?layer=cameras&lon=108&lat=14.3&k=0", "k"),
        ("/analysis/nearest?layer=cameras&lon=108&lat=14.3&k=1001", "k"),
        ("/analysis/nearest?layer=bridges&lon=108&lat=14.3", "layer"),
        ("/analysis/nearest?layer=cameras&incident=99999999", "incident"),
        ("/analysis/nearest?layer=cameras&lon=108&lat=14.3&filter=colour%3D'red'", "filter"),
        ("/analysis/within?layer=cameras&lon=108&lat=14.3&radius_m=-5", "radius_m"),
        ("/analysis/within?layer=cameras&admin_code=99999", "admin_code"),
        ("/analysis/within?layer=cameras&polygon=POLYGON((0 0, 1 1, 1 0, 0 1, 0 0))", "polygon"),
        ("/analysis/stats?layer=incidents&breakdown=colour", "breakdown"),
        ("/analysis/stats?layer=incidents&by=village", "by"),
    ],
)
def test_bad_input_is_400_naming_the_parameter(demo_url, tmp_path, url, param):
    with TestClient(create_app(Settings(database_url=demo_url, home=tmp_path))) as client:
        response = client.get(url)
    assert response.status_code == 400, response.text
    assert response.json()["parameter"] == param


def test_http_operations_answer_geojson(demo_url, tmp_path):
    with TestClient(create_app(Settings(database_url=demo_url, home=tmp_path))) as client:
        near = client.get(f"/analysis/nearest?layer=cameras&lon={CITY[0]}&lat={CITY[1]}&k=3").json()
        fov = client.get("/analysis/cameras/fov?limit=5").json()
        stats = client.get("/analysis/stats?layer=incidents&by=commune").json()
    assert near["type"] == "FeatureCollection" and len(near["features"]) == 3
    assert all(shapely.geometry.shape(f["geometry"]).is_valid for f in fov["features"])
    assert stats["by"] == "commune" and stats["total"] > 0


def test_query_commands(demo_url, run_cli, tmp_path):
    env = {"GIS_IOC_DATABASE_URL": demo_url}
    code, out, err = run_cli("query", "locate", "108.003", "14.35", "--at", "2025-06-30", env=env)
    assert code == 0 and "Kon Tum" in out and "608" in out, err
    code, out, _ = run_cli("query", "nearest", "cameras", "--lon", "108.003", "--lat", "14.35", "-k", "3",
                           "--filter", "status = 'online'", env=env)
    assert code == 0 and "distance_m" in out
    target = tmp_path / "hospitals.geojson"
    code, out, _ = run_cli("query", "within", "infrastructure", "--admin-code", "608", "--at", "2025-06-30",
                           "--filter", "kind = 'hospital'", "--out", str(target), env=env)
    assert code == 0 and json.loads(target.read_text())["features"]
    code, out, _ = run_cli("query", "stats", "incidents", "--by", "district", "--at", "2025-06-30", env=env)
    assert code == 0 and "Đắk Glei" in out
    sectors = tmp_path / "fov.geojson"
    code, out, _ = run_cli("query", "fov", "--out", str(sectors), "--status", "online", env=env)
    assert code == 0 and all(f["properties"]["status"] == "online" for f in json.loads(sectors.read_text())["features"])
    for args, message in ((["query", "locate", "200", "14"], "lon: 200.0"),
                          (["query", "nearest", "bridges", "--lon", "108", "--lat", "14.3"], "layer: no layer"),
                          (["query", "nearest", "cameras", "--lon", "108", "--lat", "14.3", "-k", "0"], "k: 0"),
                          (["query", "stats", "incidents", "--by", "district"], "abolished")):
        code, out, err = run_cli(*args, env=env)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def _camera(conn, name, x, y, heading=0.0, fov=360.0, range_m=100.0, status="online"):  # type: ignore[no-untyped-def]
    conn.execute(sa.text("INSERT INTO cameras (name, heading_deg, fov_deg, range_m, status, geom) VALUES "
                         "(:n, :h, :f, :r, :s, ST_SetSRID(ST_MakePoint(:x, :y), 4326))"),
                 {"n": name, "h": heading, "f": fov, "r": range_m, "s": status, "x": x, "y": y})


def test_coverage_of_a_circle_by_one_dome(engine):
    with engine.begin() as conn:
        _camera(conn, "dome", *CITY, range_m=100)
        _camera(conn, "broken", CITY[0] + 0.003, CITY[1], range_m=100, status="offline")
    with engine.connect() as conn:
        area = analysis.area_geometry(conn, lon=CITY[0], lat=CITY[1], radius_m=1000)
        everything = analysis.coverage(conn, area)
        online = analysis.coverage(conn, area, online_only=True)
    assert online["cameras"] == 1 and everything["cameras"] == 2
    assert online["covered_share"] == pytest.approx(0.01, rel=5e-3)
    assert everything["covered_share"] == pytest.approx(0.02, rel=5e-3)
    uncovered = analysis.geodesic_km2(shape(online["uncovered"]))
    assert uncovered == pytest.approx(online["area_km2"] - online["covered_km2"], rel=1e-4)


def test_coverage_per_commune(demo_engine):
    with demo_engine.connect() as conn:
        area = analysis.area_geometry(conn, admin_code="608", at=BEFORE)
        result = analysis.coverage(conn, area, by="commune", at=BEFORE)
    assert len(result["units"]) == 21
    assert all(0 <= u["covered_share"] <= 1 for u in result["units"])
    assert sum(u["covered_km2"] for u in result["units"]) == pytest.approx(result["covered_km2"], rel=1e-3)


def test_impact_of_a_flood_on_roads_and_services(engine, catalog):
    x, y = CITY
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO infrastructure (kind, name, road_class, geom) VALUES ('road', 'QL14', "
                             "'national', ST_SetSRID(ST_MakeLine(ST_MakePoint(:x0, :y), ST_MakePoint(:x1, :y)), "
                             "4326))"),
                     {"x0": x - 0.02, "x1": x + 0.02, "y": y})
        conn.execute(sa.text("INSERT INTO infrastructure (kind, name, geom) VALUES ('hospital', 'BV', "
                             "ST_SetSRID(ST_MakePoint(:x, :y), 4326))"), {"x": x, "y": y + 0.01})
        flood = conn.execute(sa.text(
            "INSERT INTO incidents (type, title, geom) VALUES ('flood', 'Ngập', ST_MakeEnvelope(:x0, :y0, :x1, :y1, "
            "4326)) RETURNING id"), {"x0": x - 0.005, "y0": y - 0.002, "x1": x + 0.005, "y1": y + 0.002}).scalar()
    with engine.connect() as conn:
        result = analysis.impact(conn, catalog, incident=flood, radius_m=2000)
    (road,) = result["roads_cut"]
    assert road["cut_m"] == pytest.approx(GEOD.inv(x - 0.005, y, x + 0.005, y)[2], rel=1e-3)
    by_name = {f["properties"]["name"]: f["properties"]["distance_m"] for f in result["layers"]["infrastructure"]}
    assert by_name["QL14"] == 0
    assert by_name["BV"] == pytest.approx(GEOD.inv(x, y + 0.002, x, y + 0.01)[2], rel=1e-3)


def test_hotspots_find_the_clusters(engine, catalog):
    rng = __import__("numpy").random.default_rng(1)
    a, b = CITY, (CITY[0] + 0.05, CITY[1] + 0.05)
    rows = [(a[0] + dx, a[1] + dy) for dx, dy in rng.normal(0, 0.0002, (10, 2))]
    rows += [(b[0] + dx, b[1] + dy) for dx, dy in rng.normal(0, 0.0002, (6, 2))]
    rows += [(CITY[0] + 0.1 * i, CITY[1] - 0.1) for i in range(-3, 4)]
    with engine.begin() as conn:
        for x, y in rows:
            conn.execute(sa.text("INSERT INTO incidents (type, title, geom) VALUES ('fire', 't', "
                                 "ST_SetSRID(ST_MakePoint(:x, :y), 4326))"), {"x": float(x), "y": float(y)})
    with engine.connect() as conn:
        dbscan = analysis.hotspots(conn, catalog, "incidents", method="dbscan", eps_m=200, min_points=5)
        grid = analysis.hotspots(conn, catalog, "incidents", method="grid", cell_m=2000, min_points=5)
        hexes = analysis.hotspots(conn, catalog, "incidents", method="h3", h3_resolution=7, min_points=5)
    assert [c["count"] for c in dbscan["clusters"]] == [10, 6]
    centre = dbscan["clusters"][0]["centroid"]["coordinates"]
    assert GEOD.inv(*a, *centre)[2] < 100
    assert shape(dbscan["clusters"][0]["hull"]).buffer(1e-9).contains(Point(*centre))
    assert grid["clusters"][0]["count"] >= 10 - 2 and hexes["clusters"][0]["count"] >= 10 - 2


def test_stats_through_lineage_match_where_incidents_lie(demo_engine, demo_catalog):
    with demo_engine.connect() as conn:
        spatial = analysis.stats(conn, demo_catalog, "incidents", "commune", at=AFTER)
        lineage = analysis.stats(conn, demo_catalog, "incidents", "commune", at=AFTER, through_lineage=True)
        historic = conn.execute(sa.text("SELECT count(*) FROM incidents WHERE reported_at < '2025-07-01'")).scalar()
    assert historic > 0  # pre-reform incidents recorded with old commune codes are carried over
    assert {u["code"]: u["count"] for u in lineage["units"]} == {u["code"]: u["count"] for u in spatial["units"]}
    with demo_engine.connect() as conn, pytest.raises(InvalidInput, match="through_lineage"):
        analysis.stats(conn, demo_catalog, "cameras", "commune", at=AFTER, through_lineage=True)


@pytest.mark.parametrize(
    ("url", "param"),
    [
        ("/analysis/hotspots?method=kmeans", "method"),
        ("/analysis/hotspots?eps_m=-1", "eps_m"),
        ("/analysis/hotspots?min_points=0", "min_points"),
        ("/analysis/hotspots?layer=bridges", "layer"),
        ("/analysis/impact?radius_m=100", "incident"),
        ("/analysis/impact?incident=1&radius_m=-3", "radius_m"),
        ("/analysis/impact?incident=99999999", "incident"),
        ("/analysis/cameras/coverage?admin_code=608&at=2025-01-01&by=village", "by"),
        ("/analysis/cameras/coverage", "area"),
    ],
)
def test_more_bad_input_is_400_naming_the_parameter(demo_url, tmp_path, url, param):
    with TestClient(create_app(Settings(database_url=demo_url, home=tmp_path))) as client:
        response = client.get(url)
    assert response.status_code == 400, response.text
    assert response.json()["parameter"] == param


def test_more_operations_over_http(demo_url, tmp_path):
    with TestClient(create_app(Settings(database_url=demo_url, home=tmp_path))) as client:
        coverage = client.get("/analysis/cameras/coverage?admin_code=608&at=2025-01-01&by=commune").json()
        hot = client.get("/analysis/hotspots?method=grid&limit=3").json()
        impact = client.get("/analysis/impact?incident=1&radius_m=3000").json()
        lineage = client.get("/analysis/stats?layer=incidents&by=commune&through_lineage=true").json()
    assert 0 < coverage["covered_share"] < 1 and coverage["units"]
    assert len(hot["clusters"]) == 3 and hot["clusters"][0]["rank"] == 1
    assert "infrastructure" in impact["layers"]
    assert lineage["through_lineage"] is True and lineage["total"] > 0


def test_an_incident_outside_every_unit(engine, catalog):
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO admin_units (code, level, unit_type, name, valid_from, geom) VALUES "
                             "('62', 'province', 'tỉnh', 'Kon Tum', '2008-01-01', "
                             "ST_Multi(ST_MakeEnvelope(107.9, 14.3, 108.1, 14.4, 4326)))"))
        outside = conn.execute(sa.text(
            "INSERT INTO incidents (type, title, geom) VALUES ('fire', 'ngoài tỉnh', "
            "ST_SetSRID(ST_MakePoint(108.3, 14.9), 4326)) RETURNING id, commune_code")).one()
    assert outside.commune_code is None
    with engine.connect() as conn:
        where = conn.execute(sa.text("SELECT ST_X(geom), ST_Y(geom) FROM incidents WHERE id = :i"),
                             {"i": outside.id}).one()
        assert analysis.locate(conn, *where)["inside"] is False
        counted = analysis.stats(conn, catalog, "incidents", "province", at=BEFORE)
        near = analysis.nearest(conn, catalog, "incidents", incident=outside.id, k=3)
    assert counted["total"] == 0 and counted["units"][0]["count"] == 0
    assert near["features"] == []  # the incident itself is not its own neighbour


def test_a_filter_compiled_once_gives_each_caller_its_own_values():
    """filter_sql keeps what it compiled per layer and filter; a caller adding to the values changes no other's."""
    from gis_ioc.analysis_common import filter_sql

    layers = Catalog.from_folder(PROJECT_ROOT / "layers")
    cameras = layers.builtin["cameras"]
    first_sql, first = filter_sql(cameras, "status = 'online'")
    first["on"] = "added by a caller"
    again_sql, again = filter_sql(cameras, "status = 'online'")
    assert again_sql == first_sql and "on" not in again and list(again.values()) == ["online"]
    with pytest.raises(InvalidInput):
        filter_sql(cameras, "status = ")


@pytest.mark.parametrize("text, said", [
    ("\u0800" * 2000, "begins with { or a WKT type such as POLYGON, not '\u0800"),  # GEOS would quote 6 KB of it
    ("POLYGON((" + "\u00e0" * 3000, "the WKT could not be read"),  # ...cut mid-character: not a codec's message
    ("SRID=3405;POLYGON((0 0, 1 0, 1 1, 0 0))", "SRID=3405: give longitude, latitude"),
    ("POINT(107.9 14.4)", "a Point is not an area"),
    ("POLYGON((107 14, 107.1 14", "ParseException"),
])
def test_an_area_that_is_not_one_is_said_plainly(text, said):
    with pytest.raises(InvalidInput, match="^polygon: ") as refused:
        analysis.area_polygon(text)
    assert said in str(refused.value) and len(str(refused.value)) < 200 and "codec" not in str(refused.value)


def test_an_area_in_ewkt_as_postgis_writes_it_is_read():
    shape_ = analysis.area_polygon("SRID=4326;POLYGON((107.9 14.3, 108.0 14.3, 108.0 14.4, 107.9 14.3))")
    assert shape_.geom_type == "Polygon" and shape_.bounds == (107.9, 14.3, 108.0, 14.4)
