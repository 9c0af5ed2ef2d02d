"""MapLibre GL JS (npm, as a web developer's page loads it) draws our style from another origin.

A page served from its own port (another origin; CORS as a browser enforces it, web security on)
loads ``/styles/wall.json`` from the server in Debian's Chromium with WebGL (SwiftShader). What it
renders is compared with SQL: every incident point in view is drawn once as a circle, every incident
area in view as an area (never as a ring of dots), today's communes only, labels from the server's
own glyphs.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, sync_playwright

from gis_ioc.settings import PROJECT_ROOT

from .conftest import free_port, served

DIST = PROJECT_ROOT / "build" / "npm" / "node_modules" / "maplibre-gl" / "dist"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
        "--ignore-gpu-blocklist", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--disable-quic"]
PAGE = """<!doctype html><html><head><meta charset="utf-8"><link rel="stylesheet" href="maplibre-gl.css">
<style>html, body, #map { margin: 0; width: 1024px; height: 768px; }</style></head>
<body><div id="map"></div><script type="module">
import * as maplibregl from "./maplibre-gl.mjs";
const q = new URLSearchParams(location.search);
window.errors = [];
const map = new maplibregl.Map({container: "map", style: q.get("server") + "/styles/wall.json",
  center: [Number(q.get("lon")), Number(q.get("lat"))], zoom: Number(q.get("zoom")), fadeDuration: 0});
map.on("error", e => window.errors.push(String((e.error && e.error.message) || e)));
map.once("idle", () => { window.ready = true; });
window.map = map;
</script></body></html>"""
RENDERED = """() => {
  const b = map.getBounds(), inView = c => c[0] >= b.getWest() && c[0] <= b.getEast()
    && c[1] >= b.getSouth() && c[1] <= b.getNorth();
  const out = {bounds: [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()], layers: {}, kinds: {}, labels: [],
               labelIds: []};
  for (const f of map.queryRenderedFeatures()) {
    const id = f.layer.id;
    (out.kinds[id] ||= {})[f.geometry.type] = true;
    if (id.startsWith("incidents-") && f.geometry.type === "Point" && !inView(f.geometry.coordinates)) continue;
    (out.layers[id] ||= new Set()).add(f.properties.id ?? f.properties.name);
    if (id === "communes-label") { out.labels.push(f.properties.name); out.labelIds.push(f.properties.id); }
  }
  for (const k in out.layers) out.layers[k] = [...out.layers[k]];
  for (const k in out.kinds) out.kinds[k] = Object.keys(out.kinds[k]);
  return out;
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The page, on an origin of its own (a port the gis-ioc server does not use)."""
    if not DIST.is_dir():
        pytest.fail(f"maplibre-gl is not installed in {DIST.parent} (`make setup` installs it from npm)")
    root = tmp_path_factory.mktemp("site")
    (root / "index.html").write_text(PAGE)
    for file in DIST.iterdir():
        if file.suffix in (".mjs", ".css"):
            (root / file.name).symlink_to(file)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined,method-assign]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def server(demo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with served(demo_url, tmp_path_factory.mktemp("maplibre-home")) as url:
        yield url


@pytest.fixture(scope="module")
def page(site: str) -> Iterator[Page]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed at /usr/bin/chromium (`make setup` installs it)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser.new_page(viewport={"width": 1024, "height": 768})
        browser.close()


def _draw(page: Page, site: str, server: str, lon: float, lat: float, zoom: float) -> dict:  # type: ignore[type-arg]
    page.goto(f"{site}/index.html?server={server}&lon={lon}&lat={lat}&zoom={zoom}")
    page.wait_for_function("window.ready === true || window.errors.length > 0", timeout=60_000)
    assert page.evaluate("window.errors") == []
    result: dict = page.evaluate(RENDERED)  # type: ignore[type-arg]
    return result


def _ids(engine: sa.Engine, query: str, bounds: list[float]) -> set[int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(query), dict(zip(("w", "s", "e", "n"), bounds, strict=True)))
        return {int(r[0]) for r in rows}


ENVELOPE = "ST_MakeEnvelope(:w, :s, :e, :n, 4326)"


def test_the_city_at_zoom_14_draws_every_incident_once_in_its_own_shape(page, site, server, demo_engine):
    drawn = _draw(page, site, server, 108.003, 14.35, 14)
    bounds = drawn["bounds"]
    points = _ids(demo_engine, f"SELECT id FROM incidents WHERE ST_Dimension(geom) = 0 "
                               f"AND ST_Intersects(geom, {ENVELOPE})", bounds)
    circles = {k: v for k, v in drawn["layers"].items() if k.startswith("incidents-")}
    assert len(points) > 100 and set().union(*circles.values()) == points
    assert sum(len(v) for v in circles.values()) == len(points)  # each once, in its severity's colour
    for severity in ("minor", "moderate", "severe", "extreme"):
        with demo_engine.connect() as conn:
            expected = conn.execute(sa.text(f"SELECT count(*) FROM incidents WHERE severity = :severity AND "
                                            f"ST_Dimension(geom) = 0 AND ST_Intersects(geom, {ENVELOPE})"),
                                    {"severity": severity, **dict(zip(("w", "s", "e", "n"), bounds, strict=True))})
            assert len(circles.get(f"incidents-{severity}", [])) == expected.scalar_one(), severity
    assert {k for layer in circles for k in drawn["kinds"][layer]} == {"Point"}  # an area is never a ring of dots
    inside = _ids(demo_engine, f"SELECT id FROM incidents WHERE ST_Dimension(geom) = 2 "
                               f"AND ST_Within(geom, {ENVELOPE})", bounds)
    touching = _ids(demo_engine, f"SELECT id FROM incidents WHERE ST_Dimension(geom) = 2 "
                                 f"AND ST_Intersects(geom, {ENVELOPE})", bounds)
    areas = set(drawn["layers"]["incident-areas"])
    assert inside and inside <= areas <= touching
    assert drawn["kinds"]["incident-areas"] in (["Polygon"], ["MultiPolygon"], ["Polygon", "MultiPolygon"])


def test_the_province_at_zoom_10_shows_todays_communes_with_their_names(page, site, server, demo_engine):
    drawn = _draw(page, site, server, 107.95, 14.5, 10)
    bounds = drawn["bounds"]
    current = _ids(demo_engine, f"SELECT id FROM admin_units WHERE level = 'commune' AND valid_to IS NULL "
                                f"AND ST_Intersects(geom, {ENVELOPE})", bounds)
    within = _ids(demo_engine, f"SELECT id FROM admin_units WHERE level = 'commune' AND valid_to IS NULL "
                               f"AND ST_Within(geom, {ENVELOPE})", bounds)
    fills = set(drawn["layers"]["communes-fill"])
    assert within and within <= fills <= current  # no pre-reform commune or district drawn over today's
    assert "districts-line" not in drawn["layers"]  # no district is in force since 1 July 2025
    with demo_engine.connect() as conn:
        names = set(conn.execute(sa.text("SELECT name FROM admin_units WHERE valid_to IS NULL")).scalars())
    assert drawn["labels"] and set(drawn["labels"]) <= names
    assert len(drawn["labelIds"]) == len(set(drawn["labelIds"]))  # each commune named once, not once per tile
    assert any(set(label) - set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ") for label in
               drawn["labels"])  # Vietnamese letters, from the server's glyphs


def test_glyphs_are_served_for_vietnamese_and_bad_ranges_are_refused(server):
    import httpx

    block = httpx.get(f"{server}/fonts/DejaVu Sans Book/7680-7935.pbf")  # ạ ả ấ … ỹ
    assert block.status_code == 200 and block.headers["content-type"] == "application/x-protobuf"
    assert len(block.content) > 50_000
    assert httpx.get(f"{server}/fonts/DejaVu Sans Book/1-256.pbf").status_code == 400
    assert httpx.get(f"{server}/fonts/Comic Sans/0-255.pbf").status_code == 404
