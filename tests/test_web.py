"""The HTTP service as far as this stage goes: health and the layer list with counts."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient

from gis_ioc.settings import Settings
from gis_ioc.web.app import create_app


def test_health_and_layer_list_on_the_demo(demo_url, demo_engine, tmp_path):
    app = create_app(Settings(database_url=demo_url, home=tmp_path))
    with TestClient(app) as client:
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "ok" and health.json()["postgis"].startswith("3.")
        listing = client.get("/collections")
        assert listing.status_code == 200
        layers = {c["id"]: c for c in listing.json()["collections"]}
        landing = client.get("/").json()
        assert any(link["rel"] == "data" for link in landing["links"])
    assert {k for k in layers if "." not in k} == {"admin_units", "cameras", "incidents", "infrastructure"}
    assert {k for k in layers if "." in k} == {"incidents.points", "incidents.polygons", "infrastructure.points",
                                               "infrastructure.lines", "infrastructure.polygons"}
    with demo_engine.connect() as conn:
        for layer_id, entry in layers.items():
            if "." in layer_id:  # a per-geometry view: counted by its items, not in the listing
                assert "numberOfFeatures" not in entry
                continue
            expected = conn.execute(sa.text(f"SELECT count(*) FROM {layer_id}")).scalar()
            assert entry["numberOfFeatures"] == expected > 0
            assert entry["countIsEstimate"] is False
    assert "not surveyed" in layers["admin_units"]["note"]


def test_health_says_unavailable_when_the_database_goes(db_url, server_url, tmp_path):
    import psycopg2
    from sqlalchemy.engine import make_url

    app = create_app(Settings(database_url=db_url, home=tmp_path))
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        name = make_url(db_url).database
        admin = psycopg2.connect(make_url(server_url).set(database="postgres").render_as_string(hide_password=False))
        admin.autocommit = True
        admin.cursor().execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        admin.cursor().execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        try:
            response = client.get("/health")
            assert response.status_code == 503
            assert response.json()["status"] == "unavailable"
        finally:
            admin.cursor().execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
            admin.close()


def test_an_imported_layer_appears_in_the_running_service(db_url, engine, catalog, settings, tmp_path):
    from gis_ioc import ingest

    from .factories import sample, write

    app = create_app(Settings(database_url=db_url, home=tmp_path))
    with TestClient(app) as client:
        before = {c["id"] for c in client.get("/collections").json()["collections"]}
        ingest.import_layer(engine, catalog, write(sample("cameras"), "gpkg", tmp_path), "camera_plan",
                            region=settings.region_extent)
        after = {c["id"]: c for c in client.get("/collections").json()["collections"]}
    assert "camera_plan" not in before
    assert after["camera_plan"]["numberOfFeatures"] == 3 and after["camera_plan"]["source"] == "imported"


def test_cors_lets_other_origins_read_and_write_with_a_key(settings):
    """Issue 11: MapLibre on another origin reads tiles, styles and items; a page there may write with a key."""
    from fastapi.testclient import TestClient

    from gis_ioc.web.app import create_app

    with TestClient(create_app(settings)) as client:
        page = "https://maps.example.org"
        for path in ("/collections/cameras/items?limit=1", "/styles/wall.json", "/tiles/cameras.json",
                     "/tiles/cameras/8/204/116.mvt"):
            response = client.get(path, headers={"Origin": page})
            assert response.headers["access-control-allow-origin"] == "*", path
        exposed = client.get("/collections/cameras/items?limit=1", headers={"Origin": page}).headers
        assert {"etag", "content-crs", "location"} <= {h.strip().lower() for h in
                                                       exposed["access-control-expose-headers"].split(",")}
        preflight = client.options("/collections/incidents/items", headers={
            "Origin": page, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert preflight.status_code == 200
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        plain = client.options("/collections/incidents/items")  # no preflight: the guard's Allow
        assert plain.status_code == 204 and plain.headers["allow"] == "GET, HEAD, POST, OPTIONS"
    with TestClient(create_app(settings.model_copy(update={"cors_origins": ""}))) as closed:
        assert "access-control-allow-origin" not in closed.get("/collections", headers={"Origin": page}).headers


def test_gzip_deflates_with_isal_at_levels_1_to_3_and_zlib_above():
    """The answers' gzip (web.compress): ISA-L's compressor for levels 1-3, zlib's for 4-9, one gzip format."""
    import gzip
    import json
    import zlib

    from isal import isal_zlib

    from gis_ioc.web.compress import compressor

    page = json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": i, "geometry": {"type": "Point", "coordinates": [107.9 + i / 1e4, 14.3]},
         "properties": {"kind": "flood", "status": "new"}} for i in range(2000)]}).encode()
    for level, kind in ((1, isal_zlib.Compress), (3, isal_zlib.Compress), (6, type(zlib.compressobj()))):
        made = compressor(level)
        assert isinstance(made, kind)
        packed = made.compress(page) + made.flush()
        assert gzip.decompress(packed) == page and len(packed) * 5 < len(page)


def test_a_streamed_answer_is_gzipped_in_pieces_that_join_up():
    """A streamed answer (more_body) is flushed piece by piece (Z_SYNC_FLUSH) and the pieces make one gzip stream."""
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from gis_ioc.web.compress import GZip

    pieces = [f"{i},{'x' * 300}\n".encode() for i in range(50)]

    async def rows(request):  # type: ignore[no-untyped-def]
        async def each():  # type: ignore[no-untyped-def]
            for piece in pieces:
                yield piece
        return StreamingResponse(each(), media_type="text/csv")

    app = Starlette(routes=[Route("/rows", rows)])
    app.add_middleware(GZip, minimum_size=1024, compresslevel=1)
    with TestClient(app) as client:
        answer = client.get("/rows", headers={"Accept-Encoding": "gzip"})
        assert answer.headers["content-encoding"] == "gzip" and answer.content == b"".join(pieces)
        assert "content-encoding" not in client.get("/rows", headers={"Accept-Encoding": "identity"}).headers


def test_json_pages_are_gzipped_for_clients_that_accept_it(settings, engine, catalog):
    """Issue 11: a page of features is a sixth of its size when the client accepts gzip; tiles keep their own."""
    from fastapi.testclient import TestClient

    from gis_ioc import demo
    from gis_ioc.web.app import create_app

    demo.load_demo(engine, catalog, scale=0.05)
    with TestClient(create_app(settings)) as client:
        plain = client.get("/collections/incidents/items?limit=500", headers={"Accept-Encoding": "identity"})
        packed = client.get("/collections/incidents/items?limit=500", headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in plain.headers
        assert packed.headers["content-encoding"] == "gzip" and "Accept-Encoding" in packed.headers["vary"]
        assert packed.num_bytes_downloaded * 4 < plain.num_bytes_downloaded
        assert packed.json()["features"] == plain.json()["features"]  # httpx unpacks it
        assert packed.headers["etag"] == plain.headers["etag"]
        tile = client.get("/tiles/incidents/8/204/116.mvt", headers={"Accept-Encoding": "gzip"})
        assert tile.headers["content-encoding"] == "gzip"
        assert tile.content and not tile.content.startswith(b"\x1f\x8b")  # gzipped once, not twice
