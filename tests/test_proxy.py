"""The documented deployment's reverse proxy (gis_ioc.proxy): a real nginx in front of a served gis-ioc.

nginx keeps tiles as long as their Cache-Control allows and no longer, a client that asks past caches or
carries a key goes to gis-ioc (and a keyed answer is never kept), every other path passes through.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from sqlalchemy.engine import Engine

from gis_ioc import auth, proxy

from .conftest import free_port, served
from .factories import CITY
from .test_tiles import tile_of

Z = 14


@pytest.fixture
def front(db_url: str, engine: Engine, tmp_path: Path) -> Iterator[SimpleNamespace]:
    key = auth.create_key(engine, "proxy-operator", "operator")
    with served(db_url, tmp_path / "home") as base:
        upstream = base.removeprefix("http://")
        with proxy.running([upstream], free_port()) as url, httpx.Client(base_url=url, timeout=30) as client:
            yield SimpleNamespace(client=client, base=base, key=key)


def _tile(front: SimpleNamespace, path: str, **headers: str) -> httpx.Response:
    response = front.client.get(path, headers={"Accept-Encoding": "gzip", **headers})
    assert response.status_code == 200, response.text
    return response


def test_nginx_keeps_tiles_for_as_long_as_they_allow_and_a_fresh_ask_sees_a_write_at_once(
        front: SimpleNamespace) -> None:
    x, y = tile_of(*CITY, Z)
    path = f"/tiles/incidents/{Z}/{x}/{y}.mvt"
    first = _tile(front, path)
    again = _tile(front, path)
    assert (first.headers["x-cache-status"], again.headers["x-cache-status"]) == ("MISS", "HIT")
    assert again.headers["etag"] == first.headers["etag"] and again.content == first.content
    assert "max-age=5" in again.headers["cache-control"]
    # the OGC API – Tiles path of the same tile is kept too
    ogc = f"/collections/incidents/tiles/WebMercatorQuad/{Z}/{y}/{x}"
    stored_at = time.monotonic()
    assert [_tile(front, ogc).headers["x-cache-status"] for _ in range(2)] == ["MISS", "HIT"]

    feature = {"type": "Feature", "geometry": {"type": "Point", "coordinates": list(CITY)},
               "properties": {"type": "traffic_accident", "title": "behind the proxy", "source": "app"}}
    written = front.client.post("/collections/incidents/items", json=feature,
                                headers={"Authorization": f"Bearer {front.key}"})
    assert written.status_code == 201, written.text

    fresh = _tile(front, path, **{"Cache-Control": "no-cache"})  # the wall's fetch after a live change
    assert fresh.headers["x-cache-status"] == "BYPASS"
    assert fresh.headers["etag"] != first.headers["etag"]
    assert len(fresh.content) > len(first.content)  # the new incident (httpx has undone the gzip)
    kept = _tile(front, path)  # the fresh answer replaced the kept one
    assert kept.headers["x-cache-status"] == "HIT" and kept.headers["etag"] == fresh.headers["etag"]

    # a keyed read goes to gis-ioc, and its answer is not kept for the next client
    keyed = _tile(front, ogc, **{"X-API-Key": front.key})
    assert keyed.headers["x-cache-status"] == "BYPASS"
    assert keyed.headers["etag"] == fresh.headers["etag"]
    stale = _tile(front, ogc)
    assert stale.headers["etag"] == first.headers["etag"]  # kept from before the write: within its 5 s
    # nginx's clock counts whole seconds and an entry lives while valid_sec (stored second + max-age) is not
    # below it: one stored at second s expires when the clock reads s + 6, up to 6 s after it was stored
    time.sleep(max(0.0, stored_at + 6.3 - time.monotonic()))
    expired = _tile(front, ogc)  # past max-age: served once more while nginx revalidates it
    assert expired.headers["x-cache-status"] in ("STALE", "UPDATING", "EXPIRED", "REVALIDATED")
    deadline = time.monotonic() + 10
    while _tile(front, ogc).headers["etag"] != fresh.headers["etag"]:
        assert time.monotonic() < deadline, "nginx went on serving the tile from before the write"
        time.sleep(0.2)


def test_everything_else_passes_through_nginx_uncached(front: SimpleNamespace) -> None:
    health = front.client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert "x-cache-status" not in health.headers
    missing = front.client.get("/tiles/no_such_layer/1/0/0.mvt")
    assert missing.status_code == 404 and missing.json()["parameter"]
    with front.client.stream("GET", "/events", timeout=10) as events:
        assert events.status_code == 200
        assert events.headers["content-type"].startswith("text/event-stream")
