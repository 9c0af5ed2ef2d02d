"""OGC API – Features (Parts 1, 2 and 3) against the demo province, through the app and real clients."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from urllib.parse import quote

import geopandas as gpd
import httpx
import pyogrio
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pyproj import Geod, Transformer

from gis_ioc.settings import Settings
from gis_ioc.web.app import create_app

from .conftest import served

CITY = (108.003, 14.350)
BBOX = "107.95,14.30,108.06,14.40"


@pytest.fixture(scope="module")
def client(demo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=demo_url, home=tmp_path_factory.mktemp("home")))
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def server(demo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with served(demo_url, tmp_path_factory.mktemp("home")) as url:
        yield url


def _count(engine, sql: str, **params) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar())


def _all_pages(client: TestClient, url: str) -> list[dict]:  # type: ignore[type-arg]
    features = []
    while url:
        page = client.get(url).json()
        features += page["features"]
        url = next((link["href"] for link in page["links"] if link["rel"] == "next"), None)
    return features


# -- Part 1: core ---------------------------------------------------------------------------------


def test_landing_and_conformance(client):
    landing = client.get("/").json()
    rels = {link["rel"] for link in landing["links"]}
    assert {"service-desc", "conformance", "data", "self"} <= rels
    classes = client.get("/conformance").json()["conformsTo"]
    assert "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core" in classes
    assert "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter" in classes
    assert "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/create-replace-delete" in classes  # issue 11
    assert client.get(next(li["href"] for li in landing["links"] if li["rel"] == "service-desc")).status_code == 200


def test_collections_describe_every_layer(client, demo_engine):
    body = client.get("/collections").json()
    layers = {c["id"]: c for c in body["collections"]}
    assert {k for k in layers if "." not in k} == {"admin_units", "cameras", "incidents", "infrastructure"}
    assert {k for k in layers if "." in k} == {"incidents.points", "incidents.polygons", "infrastructure.points",
                                               "infrastructure.lines", "infrastructure.polygons"}
    incidents = client.get("/collections/incidents").json()
    xmin, ymin, xmax, ymax = incidents["extent"]["spatial"]["bbox"][0]
    assert 107.3 <= xmin < xmax <= 108.6 and 13.9 <= ymin < ymax <= 15.45
    assert incidents["extent"]["temporal"]["interval"][0][0].startswith("2025-")
    assert "http://www.opengis.net/def/crs/EPSG/0/9216" in incidents["crs"]
    queryables = client.get("/collections/incidents/queryables").json()
    assert queryables["properties"]["severity"]["enum"][0] == "extreme"
    assert queryables["properties"]["reported_at"]["format"] == "date-time"


def test_paging_is_stable_and_complete(client, demo_engine):
    features = _all_pages(client, "/collections/cameras/items?limit=40")
    ids = [f["id"] for f in features]
    with demo_engine.connect() as conn:
        expected = [r[0] for r in conn.execute(sa.text("SELECT id FROM cameras ORDER BY id"))]
    assert ids == expected
    first = client.get("/collections/cameras/items?limit=40").json()
    assert first["numberMatched"] == len(expected) and first["numberReturned"] == 40
    second = client.get("/collections/cameras/items?limit=40&offset=40").json()
    assert any(link["rel"] == "prev" for link in second["links"])


def test_one_feature_and_unknown_ones(client):
    feature = client.get("/collections/cameras/items/1").json()
    assert feature["type"] == "Feature" and feature["id"] == 1 and feature["geometry"]["type"] == "Point"
    assert client.get("/collections/cameras/items/999999").status_code == 404
    assert client.get("/collections/cameras/items/abc").status_code == 404
    missing = client.get("/collections/bridges/items")
    assert missing.status_code == 404 and missing.json()["code"] == "layer_not_found"


def test_bbox_datetime_and_property_filters(client, demo_engine):
    page = client.get(f"/collections/incidents/items?bbox={BBOX}&limit=10000").json()
    expected = _count(demo_engine, "SELECT count(*) FROM incidents WHERE "
                                   "ST_Intersects(geom, ST_MakeEnvelope(107.95, 14.30, 108.06, 14.40, 4326))")
    assert page["numberReturned"] == page["numberMatched"] == expected > 0
    interval = "2026-11-01T00:00:00Z/2026-11-15T00:00:00Z"
    page = client.get(f"/collections/incidents/items?datetime={interval}&limit=1").json()
    assert page["numberMatched"] == _count(
        demo_engine, "SELECT count(*) FROM incidents WHERE reported_at BETWEEN '2026-11-01Z' AND '2026-11-15Z'")
    open_end = client.get("/collections/incidents/items?datetime=2026-11-20T00:00:00Z/..&limit=1").json()
    assert open_end["numberMatched"] == _count(
        demo_engine, "SELECT count(*) FROM incidents WHERE reported_at >= '2026-11-20Z'")
    online = client.get("/collections/cameras/items?status=online&limit=10000").json()
    assert {f["properties"]["status"] for f in online["features"]} == {"online"}
    assert online["numberMatched"] == _count(demo_engine, "SELECT count(*) FROM cameras WHERE status = 'online'")


def test_sortby_and_properties(client):
    page = client.get("/collections/incidents/items?sortby=-reported_at&properties=severity,reported_at"
                      "&limit=50").json()
    times = [f["properties"]["reported_at"] for f in page["features"]]
    assert times == sorted(times, reverse=True)
    assert set(page["features"][0]["properties"]) == {"severity", "reported_at"}


def test_bbox_crs_and_output_crs(client):
    to_3857 = Transformer.from_crs(4326, 3857, always_xy=True)
    x0, y0 = to_3857.transform(107.95, 14.30)
    x1, y1 = to_3857.transform(108.06, 14.40)
    in_3857 = client.get(f"/collections/cameras/items?bbox={x0},{y0},{x1},{y1}&bbox-crs="
                         "http://www.opengis.net/def/crs/EPSG/0/3857&limit=10000").json()
    in_crs84 = client.get(f"/collections/cameras/items?bbox={BBOX}&limit=10000").json()
    assert {f["id"] for f in in_3857["features"]} == {f["id"] for f in in_crs84["features"]}

    lon, lat = client.get("/collections/cameras/items/1").json()["geometry"]["coordinates"]
    for uri, expect in (
        ("http://www.opengis.net/def/crs/EPSG/0/4326", (lat, lon)),
        ("http://www.opengis.net/def/crs/EPSG/0/3857", to_3857.transform(lon, lat)),
        ("http://www.opengis.net/def/crs/EPSG/0/9216", Transformer.from_crs(4326, 9216, always_xy=True)
         .transform(lon, lat)),
    ):
        response = client.get(f"/collections/cameras/items/1?crs={uri}")
        assert response.headers["content-crs"] == f"<{uri}>"
        assert response.json()["geometry"]["coordinates"] == pytest.approx(list(expect), abs=0.01)


CQL_CASES = [
    ("severity = 'extreme' AND status <> 'closed'",
     "severity = 'extreme' AND status <> 'closed'"),
    ("title LIKE 'Cháy%'", "title LIKE 'Cháy%'"),
    ("type IN ('fire','flood')", "type IN ('fire','flood')"),
    ("reported_at BETWEEN TIMESTAMP('2026-11-01T00:00:00Z') AND TIMESTAMP('2026-11-10T00:00:00Z')",
     "reported_at BETWEEN '2026-11-01Z' AND '2026-11-10Z'"),
    ("verified_at IS NULL", "verified_at IS NULL"),
    ("NOT (severity = 'minor')", "NOT (severity = 'minor')"),
    ("S_INTERSECTS(geom, POLYGON((107.95 14.30, 108.06 14.30, 108.06 14.40, 107.95 14.40, 107.95 14.30)))",
     "ST_Intersects(geom, ST_MakeEnvelope(107.95, 14.30, 108.06, 14.40, 4326))"),
    ("S_WITHIN(geom, BBOX(107.95, 14.30, 108.06, 14.40))",
     "ST_Within(geom, ST_MakeEnvelope(107.95, 14.30, 108.06, 14.40, 4326))"),
    ("T_AFTER(reported_at, TIMESTAMP('2026-11-20T00:00:00Z'))", "reported_at > '2026-11-20Z'"),
    ("T_BEFORE(reported_at, TIMESTAMP('2025-04-01T00:00:00Z'))", "reported_at < '2025-04-01Z'"),
    ("T_INTERSECTS(reported_at, INTERVAL('2026-11-01T00:00:00Z', '2026-11-02T00:00:00Z'))",
     "reported_at BETWEEN '2026-11-01Z' AND '2026-11-02Z'"),
]


@pytest.mark.parametrize(("cql", "sql"), CQL_CASES)
def test_cql2_text_matches_the_same_sql(client, demo_engine, cql, sql):
    page = client.get(f"/collections/incidents/items?filter={quote(cql)}&limit=1").json()
    assert page["numberMatched"] == _count(demo_engine, f"SELECT count(*) FROM incidents WHERE {sql}")


def test_cql2_json_and_text_agree(client):
    text = client.get("/collections/incidents/items?filter=" + quote("type = 'fire' AND severity = 'severe'")
                      + "&limit=1").json()
    expr = {"op": "and", "args": [{"op": "=", "args": [{"property": "type"}, "fire"]},
                                  {"op": "=", "args": [{"property": "severity"}, "severe"]}]}
    as_json = client.get(f"/collections/incidents/items?filter-lang=cql2-json&filter={quote(json.dumps(expr))}"
                         "&limit=1").json()
    assert as_json["numberMatched"] == text["numberMatched"] > 0


def test_s_contains_finds_the_commune_of_a_point(client):
    cql = f"S_CONTAINS(geom, POINT({CITY[0]} {CITY[1]})) AND level = 'commune' AND valid_to IS NULL"
    page = client.get(f"/collections/admin_units/items?filter={quote(cql)}").json()
    assert page["numberReturned"] == 1


def test_s_dwithin_counts_metres_on_the_ellipsoid(client):
    cql = f"S_DWITHIN(geom, POINT({CITY[0]} {CITY[1]}), 1500)"
    inside = client.get(f"/collections/cameras/items?filter={quote(cql)}&limit=10000").json()["features"]
    everything = client.get("/collections/cameras/items?limit=10000").json()["features"]
    geod = Geod(ellps="WGS84")

    def metres(f: dict) -> float:  # type: ignore[type-arg]
        return geod.inv(CITY[0], CITY[1], *f["geometry"]["coordinates"])[2]

    assert inside and all(metres(f) <= 1500.5 for f in inside)
    assert {f["id"] for f in everything if metres(f) <= 1499.5} <= {f["id"] for f in inside}


def test_output_formats(client):
    csv = client.get(f"/collections/cameras/items?bbox={BBOX}&f=csv&limit=10000")
    assert csv.headers["content-type"].startswith("text/csv")
    header = csv.text.splitlines()[0].split(",")
    assert "wkt" in header and "name" in header
    gpkg = client.get(f"/collections/cameras/items?bbox={BBOX}&f=gpkg&limit=10000")
    frame = pyogrio.read_dataframe(io.BytesIO(gpkg.content))
    assert len(frame) == len(csv.text.splitlines()) - 1 > 0
    page = client.get("/collections/incidents/items?limit=20", headers={"Accept": "text/html"})
    assert page.headers["content-type"].startswith("text/html") and "<svg" in page.text
    for url in ("/?f=html", "/collections?f=html", "/collections/cameras?f=html", "/collections/cameras/items/1?f=html",
                "/conformance?f=html"):
        assert client.get(url).headers["content-type"].startswith("text/html"), url


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("bbox=1,2,3", "bbox"),
        ("bbox=108,15,107,14", "bbox"),
        ("datetime=yesterday", "datetime"),
        ("datetime=2026-11-20T00:00:00Z/2026-11-01T00:00:00Z", "datetime"),
        ("filter=severity%20%3D", "filter"),
        ("filter=colour%20%3D%20'red'", "filter"),
        ("filter-lang=sql&filter=a", "filter-lang"),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("limit=10001", "limit"),
        ("crs=EPSG:2154", "crs"),
        ("bbox=1,2,3,4&bbox-crs=urn:nope", "bbox-crs"),
        ("sortby=colour", "sortby"),
        ("properties=colour", "properties"),
        ("colour=red", "colour"),
        ("severity=catastrophic", "severity"),
        ("f=xml", "f"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(client, query, param):
    response = client.get(f"/collections/incidents/items?{query}")
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_input" and body["parameter"] == param
    assert param in body["description"]


def test_health_and_ready(client):
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/ready").json() == {"ready": True}


# -- real clients -----------------------------------------------------------------------------------


def test_owslib_lists_collections_and_pages_items(server, demo_engine):
    from owslib.ogcapi.features import Features

    service = Features(server)
    ids = {c["id"] for c in service.collections()["collections"]}
    assert {"admin_units", "cameras", "incidents", "infrastructure"} <= ids
    first = service.collection_items("cameras", limit=25)
    second = service.collection_items("cameras", limit=25, offset=25)
    assert first["numberReturned"] == second["numberReturned"] == 25
    assert not {f["id"] for f in first["features"]} & {f["id"] for f in second["features"]}
    assert first["numberMatched"] == _count(demo_engine, "SELECT count(*) FROM cameras")


def test_gdal_reads_a_collection_with_the_right_count(server, demo_engine):
    frame = pyogrio.read_dataframe(f"OAPIF:{server}", layer="cameras")
    assert len(frame) == _count(demo_engine, "SELECT count(*) FROM cameras")
    assert frame.crs.equals("OGC:CRS84")


def test_geopandas_reads_an_items_url(server):
    frame = gpd.read_file(f"{server}/collections/infrastructure/items?kind=hospital&limit=1000")
    assert len(frame) > 0 and set(frame["kind"]) == {"hospital"}


def test_number_matched_is_exact_or_left_out_never_estimated(client, demo_engine, monkeypatch):
    from gis_ioc import queries

    monkeypatch.setattr(queries, "COUNT_BOUND", 100)  # as if the demo were large
    total = _count(demo_engine, "SELECT count(*) FROM incidents")
    whole = client.get("/collections/incidents/items?limit=5").json()
    assert whole["numberMatched"] == total  # a whole layer: counted within the budget
    part = client.get("/collections/incidents/items?limit=5&status=closed").json()
    assert "numberMatched" not in part and "numberMatchedIsEstimate" not in part  # large selection: none
    few = client.get("/collections/incidents/items?limit=5&severity=extreme&status=new").json()
    assert few["numberMatched"] == _count(demo_engine, "SELECT count(*) FROM incidents WHERE severity = 'extreme' "
                                                       "AND status = 'new'") <= 100


def test_a_first_page_with_few_matches_is_one_statement_and_the_same_page(demo_engine, monkeypatch):
    """The one-statement first page gives what the page and count statements give, then the cursor goes on."""
    from sqlalchemy import event

    from gis_ioc import features, queries
    from gis_ioc.catalog import Catalog
    from gis_ioc.settings import PROJECT_ROOT

    incidents = Catalog.from_folder(PROJECT_ROOT / "layers").get("incidents")
    sent: list[str] = []

    def heard(conn, cursor, statement, *rest) -> None:  # type: ignore[no-untyped-def]
        sent.append(statement)

    event.listen(demo_engine, "before_cursor_execute", heard)
    asked = [{"bbox": "107.9,14.3,108.1,14.45", "limit": "7"},
             {"bbox": "107.9,14.3,108.1,14.45", "limit": "7", "sortby": "-severity,reported_at"},
             {"bbox": "107.9,14.3,108.1,14.45", "limit": "7", "severity": "extreme", "crs":
              "http://www.opengis.net/def/crs/EPSG/0/4326"},
             {"bbox": "107.0,13.0,107.01,13.01", "limit": "7"},  # none
             {"severity": "extreme", "limit": "5"}]
    try:
        with demo_engine.connect() as conn:
            for params in asked:
                req = queries.parse_items(incidents, params)
                monkeypatch.setattr(queries, "FEW_MATCHES", 0)  # as before: the page, then the count
                sent.clear()
                before = features.items_page(conn, incidents, req)
                assert len(sent) == (1 if before.matched == before.returned else 2), params
                monkeypatch.setattr(queries, "FEW_MATCHES", 1_000_000)
                sent.clear()
                after = features.items_page(conn, incidents, req)
                assert len(sent) == 1, params
                assert json.loads(after.features) == json.loads(before.features), params
                assert (after.returned, after.matched, after.next_cursor) == \
                       (before.returned, before.matched, before.next_cursor), params
                if before.next_cursor:  # the next page follows from the cursor either gave
                    following = features.items_page(conn, incidents, queries.parse_items(
                        incidents, {**params, "cursor": after.next_cursor}))
                    seen = {f["id"] for f in json.loads(after.features)}
                    assert following.returned and not seen & {f["id"] for f in json.loads(following.features)}
            assert before.matched == _count(demo_engine, "SELECT count(*) FROM incidents WHERE severity = 'extreme'")
            # more matches than the few it reads: the page and the count from the table, the same as before
            monkeypatch.setattr(queries, "FEW_MATCHES", 10)
            req = queries.parse_items(incidents, asked[0])
            sent.clear()
            many = features.items_page(conn, incidents, req)
            assert len(sent) == 3 and many.matched == _count(
                demo_engine, "SELECT count(*) FROM incidents WHERE ST_Intersects(geom, "
                "ST_MakeEnvelope(107.9, 14.3, 108.1, 14.45, 4326))") > 10
    finally:
        event.remove(demo_engine, "before_cursor_execute", heard)


def test_a_pages_etag_follows_its_layer_file(demo_url, tmp_path):
    """A client's cached page must not be confirmed (304) after its layer's file changed what a page holds."""
    import shutil

    from gis_ioc.settings import PROJECT_ROOT

    edited = tmp_path / "layers"
    shutil.copytree(PROJECT_ROOT / "layers", edited)
    cameras = edited / "cameras.yaml"
    cameras.write_text(cameras.read_text(encoding="utf-8").replace("title: ", "title: Edited ", 1), encoding="utf-8")
    tags = []
    for folder in (PROJECT_ROOT / "layers", PROJECT_ROOT / "layers", edited):
        settings = Settings(database_url=demo_url, home=tmp_path / "home", layers_dir=folder)
        with TestClient(create_app(settings)) as c:
            tags.append(c.get("/collections/cameras/items?limit=3").headers["etag"])
    assert tags[0] == tags[1] != tags[2]


def test_a_features_etag_follows_its_layer_file(demo_url, tmp_path):
    """A feature kept by a client is not confirmed (304) after its layer's file changed what it shows."""
    import shutil

    from gis_ioc.settings import PROJECT_ROOT

    edited = tmp_path / "layers"
    shutil.copytree(PROJECT_ROOT / "layers", edited)
    cameras = edited / "cameras.yaml"
    cameras.write_text(cameras.read_text(encoding="utf-8").replace("title: ", "title: Edited ", 1), encoding="utf-8")
    kept = None
    answers = []
    for folder in (PROJECT_ROOT / "layers", PROJECT_ROOT / "layers", edited):
        settings = Settings(database_url=demo_url, home=tmp_path / "home", layers_dir=folder)
        with TestClient(create_app(settings)) as c:
            if kept is None:
                fid = c.get("/collections/cameras/items?limit=1").json()["features"][0]["id"]
                kept = c.get(f"/collections/cameras/items/{fid}").headers["etag"]
            answers.append(c.get(f"/collections/cameras/items/{fid}", headers={"If-None-Match": kept}).status_code)
    assert answers == [304, 304, 200]


def test_a_big_page_is_sent_as_it_is_read_and_holds_what_small_pages_hold(server):
    big = httpx.get(f"{server}/collections/incidents/items?limit=2500", timeout=60,
                    headers={"Accept-Encoding": "identity"})
    assert big.status_code == 200 and big.headers["content-type"].startswith("application/geo+json")
    assert "content-length" not in big.headers and big.headers.get("transfer-encoding") == "chunked"
    body = big.json()
    assert body["type"] == "FeatureCollection" and body["numberReturned"] == len(body["features"]) == 2500
    small: list[dict] = []  # type: ignore[type-arg]
    url = f"{server}/collections/incidents/items?limit=1000"
    while len(small) < 3000:
        page = httpx.get(url, timeout=60).json()
        small += page["features"]
        url = next(link["href"] for link in page["links"] if link["rel"] == "next")
    assert [f["id"] for f in body["features"]] == [f["id"] for f in small[:2500]]
    assert body["features"][1234] == small[1234]
    following = next(link["href"] for link in body["links"] if link["rel"] == "next")
    assert httpx.get(following, timeout=60).json()["features"][0] == small[2500]


def test_a_bbox_that_is_a_point_finds_what_lies_there(client, demo_engine):
    with demo_engine.connect() as conn:
        points = conn.execute(sa.text(
            "SELECT id, ST_X(p), ST_Y(p) FROM (SELECT id, ST_PointOnSurface(geom) AS p FROM admin_units "
            "WHERE level = 'commune' AND valid_to IS NULL ORDER BY id LIMIT 20) u")).all()
    for unit_id, x, y in points:
        found = client.get(f"/collections/admin_units/items?bbox={x},{y},{x},{y}&limit=100").json()["features"]
        ids = {f["id"] for f in found}
        assert unit_id in ids, (unit_id, ids)
        assert any(f["properties"]["level"] != "commune" for f in found)  # the former district or province too
    unit_id, x, y = points[0]
    east, north = Transformer.from_crs(4326, 9216, always_xy=True).transform(x, y)
    projected = client.get(f"/collections/admin_units/items?bbox={east},{north},{east},{north}&limit=100"
                           "&bbox-crs=http://www.opengis.net/def/crs/EPSG/0/9216").json()["features"]
    assert unit_id in {f["id"] for f in projected}


def test_a_cql2_syntax_error_is_one_line_saying_where(client):
    response = client.get("/collections/incidents/items", params={"filter": "title LIKE"})
    assert response.status_code == 400
    description = response.json()["description"]
    assert "\n" not in description and "-->" not in description and "|" not in description
    assert "character 11" in description and "expected a value" in description
