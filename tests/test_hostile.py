"""What a hostile or clumsy client sends, replayed against a served process (issue 10 and our own finds).

Each case asserts the status, the JSON error naming the parameter, a database left as it was, and a
server that still answers. Replay these whenever a route changes.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlparse

import httpx
import psycopg2
import pytest
import sqlalchemy as sa

from gis_ioc import analysis, auth, db, limits
from gis_ioc.catalog import Catalog
from gis_ioc.errors import Busy, InvalidInput, QueryTimeout, from_database
from gis_ioc.settings import PROJECT_ROOT
from gis_ioc.web.deps import heavy_work

from .conftest import demo_copy, served, table_snapshot
from .factories import CITY

TABLES = ("incidents", "cameras", "infrastructure", "admin_units", "audit_log", "api_keys")
SEND_STALL_S = 3  # the served copy drops a connection whose client reads nothing for this long


@pytest.fixture(scope="module")
def hostile(server_url: str, demo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """A served copy of the demo, its engine, and keys of each role."""
    with demo_copy(server_url, demo_url, "gis_ioc_test_hostile") as url:
        engine = db.make_engine(url, pool_size=2)
        keys = {role: auth.create_key(engine, f"hostile-{role}", role) for role in auth.ROLES}
        home = tmp_path_factory.mktemp("home")
        log = home / "server.log"
        with served(url, home, env={"GIS_IOC_HEADER_TIMEOUT_S": "1", "GIS_IOC_SEND_STALL_S": str(SEND_STALL_S)},
                    log=log) as base:
            yield SimpleNamespace(url=base, engine=engine, keys=keys, log=log, db_url=url)
        engine.dispose()


@pytest.fixture
def unchanged(hostile: SimpleNamespace) -> Iterator[None]:
    """The database is exactly as it was after the test, and the server still answers."""
    before = {t: table_snapshot(hostile.engine, t) for t in TABLES if t != "api_keys"}
    yield
    after = {t: table_snapshot(hostile.engine, t) for t in TABLES if t != "api_keys"}
    assert after == before
    assert httpx.get(f"{hostile.url}/health", timeout=10).status_code == 200


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _refused(response: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"code", "description", "request_id"}
    assert body["request_id"] == response.headers["x-request-id"]
    if param is not None:
        assert body["parameter"] == param, body
    return dict(body)


DEEP_PARENS = "(" * 2000 + "id = 1" + ")" * 2000
NOT_2000 = "NOT " * 2000 + "id = 1"
NOT_5000 = "NOT " * 5000 + "id = 1"


@pytest.mark.parametrize("filter_text", [DEEP_PARENS, NOT_2000, NOT_5000, "id = " + "-" * 5000 + "1",
                                         "id = " + "+".join(["1"] * 3000), "1 + 1 + " * 2000 + "1 = 1"],
                         ids=["parentheses", "not-2000", "not-5000", "minus-chain", "plus-chain", "sum-chain"])
@pytest.mark.parametrize("path", ["/collections/incidents/items", f"/analysis/nearest?layer=cameras&lon={CITY[0]}"
                                  f"&lat={CITY[1]}", "/tiles/incidents/12/3276/1882.mvt"])
def test_a_deeply_nested_filter_is_a_400_not_a_dead_server(hostile, unchanged, path, filter_text):
    sep = "&" if "?" in path else "?"
    response = httpx.get(f"{hostile.url}{path}{sep}filter={quote(filter_text)}", timeout=30)
    _refused(response, 400, "filter")


def test_a_deeply_nested_cql2_json_filter_is_a_400(hostile, unchanged):
    depth = 500  # within the size limit: a JSON parser would recurse 1,000 levels
    text = '{"op":"not","args":[' * depth + '{"op":"=","args":[{"property":"id"},1]}' + "]}" * depth
    assert len(text) < limits.MAX_FILTER_CHARS
    response = httpx.get(f"{hostile.url}/collections/incidents/items", params={"filter": text,
                                                                               "filter-lang": "cql2-json"})
    _refused(response, 400, "filter")


@pytest.mark.parametrize("filter_text", ["reported_at > 5", "id = 'abc'", "id BETWEEN 'a' AND 5",
                                         "id IN (1,'x',TRUE)", "reported_at > DATE('2026-02-30')",
                                         "title LIKE 5", "S_INTERSECTS(geom, POLYGON((0 0, 1 1, 1 0, 0 1, 0 0)))",
                                         "S_INTERSECTS(geom, BBOX(1, 2))", "S_DWITHIN(geom, POINT(108 14), 1e12)",
                                         "severity IN ()", "T_BEFORE(reported_at, INTERVAL('x', '..'))",
                                         "geom = 5", "nope = 1"])
def test_a_filter_of_the_wrong_kinds_is_a_400_naming_filter(hostile, unchanged, filter_text):
    response = httpx.get(f"{hostile.url}/collections/incidents/items", params={"filter": filter_text})
    _refused(response, 400, "filter")


@pytest.mark.parametrize("path, param", [
    ("/collections/incidents/items?bbox=-1e9,-1e9,1e9,1e9&bbox-crs=http://www.opengis.net/def/crs/EPSG/0/9216",
     "bbox"),
    ("/collections/incidents/items?bbox=-1e9,-1e9,-1e9,-1e9&bbox-crs=http://www.opengis.net/def/crs/EPSG/0/9216",
     "bbox"),
    ("/collections/incidents/items?offset=1000000000", "offset"),
    ("/collections/incidents/items?limit=0", "limit"),
    ("/collections/incidents/items?filter-lang=cql2-text", "filter-lang"),
    ("/collections/incidents/items?cursor=bm90IGEgY3Vyc29y", "cursor"),
    ("/analysis/hotspots?layer=incidents&eps_m=1000000000", "eps_m"),
    ("/analysis/hotspots?layer=incidents&min_points=99999999999", "min_points"),
    ("/analysis/hotspots?layer=incidents&method=h3&h3_resolution=15", "h3_resolution"),
    ("/analysis/hotspots?layer=incidents&method=grid&cell_m=0.001", "cell_m"),
    ("/analysis/stats?layer=incidents&breakdown=title", "breakdown"),
    ("/analysis/within?layer=incidents&lon=107.9&lat=14.5&radius_m=7e6", "radius_m"),
    ("/analysis/within?layer=incidents&lon=107.9&lat=14.5&radius_m=1e12", "radius_m"),
    ("/analysis/nearest?layer=cameras&lon=108&lat=14.3&k=100000", "k"),
    ("/analysis/nearest?layer=cameras&lon=nan&lat=14.3", "lon"),
    ("/analysis/impact?incident=1&radius_m=inf", "radius_m"),
    ("/analysis/cameras/coverage?polygon=" + quote(json.dumps({"type": "Polygon", "coordinates": [
        [[-180, -90], [180, -90], [180, 90], [-180, 90], [-180, -90]]]})), "polygon"),
    ("/views/choropleth?window=99999999999d", "window"),
    ("/views/incidents/%C2%B2", "incident_id"),
    ("/views/incidents/" + "9" * 5000, "incident_id"),
    ("/tiles/incidents/99/0/0.mvt", "z"),
    ("/collections/incidents/items?title=a%00b", "title"),
    # the routes of stop 16
    ("/search?q=" + "x" * 201, "q"),
    ("/search?q=dak&limit=51", "limit"),
    ("/search?q=dak&types=" + "unit," * 30, "types"),
    ("/search?q=dak&near=200,14", "near"),
    ("/search?q=%00", "q"),
    ("/collections/incidents/duplicates?lon=200&lat=14.3&type=fire", "lon"),
    ("/collections/incidents/duplicates?lon=108&lat=14.3&type=fire&at=2026-11-30T08:00:00", "at"),
    ("/collections/incidents/duplicates?lon=108&lat=14.3&type=" + "f" * 64, "type"),
    ("/fonts/DejaVu%20Sans%20Book/65536-65791.pbf", "range"),
    ("/alerts.atom?severity=catastrophic", "severity"),
    ("/alerts.atom?limit=501", "limit"),
    ("/alerts.atom?limit=0", "limit"),
    ("/collections/incidents/items/1?f=cap%00", "f"),
    ("/collections/cameras/items/1?f=cap", "f"),
    ("/fonts/DejaVu%20Sans%20Book/0-65535.pbf", "range"),
    # routing (stop 18)
    ("/analysis/route?from=108,14.3&to=" + "1" * 61, "to"),
    ("/analysis/route?from=108,14.3%00&to=108,14.3", "from"),
    ("/analysis/route?from=nan,nan&to=108,14.3", "from"),
    ("/analysis/route?from=108,14.3&to=108,14.4&via=" + ";".join(["108,14.3"] * 60), "via"),
    ("/analysis/reach?layer=infrastructure&minutes=" + ",".join(["5"] * 30), "minutes"),
    ("/analysis/reach?layer=infrastructure&minutes=inf", "minutes"),
    ("/analysis/reach?layer=infrastructure&minutes=10&window_days=0", "window_days"),
    ("/analysis/nearest-by-time?layer=infrastructure&lon=108&lat=14.3&k=0", "k"),
    ("/analysis/travel-matrix?origins=&destinations=108,14.3", "origins"),
    ("/views/reach?minutes=500", "minutes"),
    ("/views/reach?minutes=x", "minutes"),
    ("/views/reach?kind=fire%27%20OR%20TRUE", "kind"),
    ("/views/reach?kind=" + "k" * 41, "kind"),
    ("/collections/incidents.polygons/items?limit=100000", "limit"),
])
def test_out_of_range_and_malformed_parameters_are_a_400_naming_them(hostile, unchanged, path, param):
    _refused(httpx.get(f"{hostile.url}{path}", timeout=30), 400, param)


def _post(hostile: SimpleNamespace, body: bytes | str, role: str = "operator") -> httpx.Response:
    return httpx.post(f"{hostile.url}/collections/incidents/items", content=body, timeout=30,
                      headers={**_bearer(hostile.keys[role]), "Content-Type": "application/geo+json"})


INCIDENT = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [CITY[0], CITY[1]]},
            "properties": {"type": "fire", "title": "Cháy", "severity": "severe"}}


@pytest.mark.parametrize("body, param", [
    ({**INCIDENT, "geometry": {"type": "Circle", "coordinates": [108, 14.3], "radius": 5}}, "geometry"),
    ({**INCIDENT, "geometry": {"type": "Point", "coordinates": [float("nan"), 14.3]}}, "geometry"),
    ({**INCIDENT, "properties": {**INCIDENT["properties"], "title": "a\x00b"}}, "properties.title"),
    ({**INCIDENT, "properties": {**INCIDENT["properties"], "closed_at": "2026-11-01T00:00:00Z"}},
     "properties.closed_at"),
    ({**INCIDENT, "properties": {**INCIDENT["properties"], "commune_code": "x"}}, "properties.commune_code"),
    ({**INCIDENT, "properties": {**INCIDENT["properties"], "reported_at": "2999-01-01T00:00:00Z"}},
     "properties.reported_at"),
    ({**INCIDENT, "properties": {**INCIDENT["properties"], "id": 5}}, "properties.id"),
])
def test_a_bad_feature_is_a_400_naming_the_field(hostile, unchanged, body, param):
    text = json.dumps(body, allow_nan=True)
    _refused(_post(hostile, text), 400, param)


def test_a_body_nested_thousands_deep_is_a_400(hostile, unchanged):
    _refused(_post(hostile, "[" * 6000 + "]" * 6000), 400, "body")
    _refused(_post(hostile, '{"a":' * 6000 + "1" + "}" * 6000), 400, "body")


def test_server_owned_fields_cannot_be_patched(hostile, unchanged):
    with hostile.engine.connect() as conn:
        new_one = conn.execute(sa.text("SELECT id FROM incidents ORDER BY id LIMIT 1")).scalar()
    for field, value in (("resolved_at", "2026-11-01T00:00:00Z"), ("closed_at", "2026-11-01T00:00:00Z"),
                         ("commune_code", "x"), ("created_at", "2020-01-01T00:00:00Z"), ("id", 1)):
        response = httpx.patch(f"{hostile.url}/collections/incidents/items/{new_one}", timeout=30,
                               json={"properties": {field: value}}, headers=_bearer(hostile.keys["operator"]))
        _refused(response, 400, f"properties.{field}")


def test_a_weak_if_match_never_matches(hostile, unchanged):
    with hostile.engine.connect() as conn:
        some = conn.execute(sa.text("SELECT id FROM incidents ORDER BY id LIMIT 1")).scalar()
    url = f"{hostile.url}/collections/incidents/items/{some}"
    tag = httpx.get(url).headers["etag"]
    response = httpx.patch(url, json={"properties": {"severity": "minor"}}, timeout=30,
                           headers={**_bearer(hostile.keys["operator"]), "If-Match": f"W/{tag}"})
    _refused(response, 412, "If-Match")


def test_if_none_match_gives_304_on_items_and_item(hostile):
    items = f"{hostile.url}/collections/cameras/items?limit=5"
    first = httpx.get(items)
    assert first.status_code == 200 and first.headers["etag"].startswith('W/"')
    again = httpx.get(items, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    one = first.json()["features"][0]["id"]
    item = httpx.get(f"{hostile.url}/collections/cameras/items/{one}")
    assert httpx.get(f"{hostile.url}/collections/cameras/items/{one}",
                     headers={"If-None-Match": item.headers["etag"]}).status_code == 304
    assert httpx.get(items, headers={"If-None-Match": '"something else"'}).status_code == 200


@pytest.mark.parametrize("name", ["..", ".", "../../etc/passwd", "a/../../b.geojson"])
def test_an_import_named_like_a_path_is_a_400_and_writes_nothing_outside(hostile, unchanged, name):
    response = httpx.post(f"{hostile.url}/collections/cameras/import", files={"file": (name, b"{}")},
                          headers=_bearer(hostile.keys["operator"]), timeout=30)
    body = _refused(response, 400, "file")
    assert "/tmp" not in body["description"] and "gis-ioc-import" not in body["description"]


def test_an_import_error_names_the_clients_file_not_the_servers(hostile, unchanged):
    bad = b'{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"name":"x","status":"melted"},' \
          b'"geometry":{"type":"Point","coordinates":[108,14.35]}}]}'
    response = httpx.post(f"{hostile.url}/collections/cameras/import", files={"file": ("cams.geojson", bad)},
                          headers=_bearer(hostile.keys["operator"]), timeout=30)
    body = _refused(response, 400, None)
    assert "melted" in body["description"] and "/tmp" not in body["description"]


def _raw(hostile: SimpleNamespace, data: bytes, read: bool = True, wait: float = 10) -> bytes:
    parts = urlparse(hostile.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=wait) as sock:
        sock.sendall(data)
        if not read:
            return b""
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    break
        except TimeoutError:
            pass
        return b"".join(chunks)


def test_an_upload_without_a_key_is_refused_before_its_body_is_read(hostile, unchanged):
    head = (b"POST /collections/cameras/import HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
    chunk = b"x" * 65536
    answer = _raw(hostile, head + b"%x\r\n%s\r\n" % (len(chunk), chunk))  # 64 kB of a 250 MB upload, then wait
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


def test_a_chunked_json_body_over_the_limit_is_a_413_as_it_arrives(hostile, unchanged):
    def body() -> Iterator[bytes]:
        yield b'{"type": "Feature", "properties": {"title": "'
        for _ in range(limits.MAX_FEATURE_BYTES // (1 << 20) + 2):
            yield b"a" * (1 << 20)
        yield b'"}}'

    response = httpx.post(f"{hostile.url}/collections/incidents/items", content=body(), timeout=60,
                          headers={**_bearer(hostile.keys["operator"]), "Content-Type": "application/json"})
    _refused(response, 413, "body")


def test_a_declared_body_over_the_limit_is_a_413_before_anything_is_read(hostile, unchanged):
    head = (b"POST /collections/incidents/items HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n"
            b"Content-Type: application/json\r\n\r\n")
    assert _raw(hostile, head).startswith(b"HTTP/1.1 413")


def test_a_client_sending_its_headers_a_byte_at_a_time_is_cut_off(hostile):
    parts = urlparse(hostile.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        cut = False
        for _ in range(40):  # a byte every 100 ms: the server's deadline here is 1 s
            try:
                sock.sendall(b"X")
            except OSError:
                cut = True
                break
            time.sleep(0.1)
            sock.settimeout(0.01)
            try:
                if sock.recv(1024).startswith(b"HTTP/1.1 408"):
                    cut = True
                    break
            except TimeoutError:
                pass
            sock.settimeout(10)
        assert cut and time.monotonic() - started < 3.5
    assert httpx.get(f"{hostile.url}/health").status_code == 200


def test_headers_that_never_end_are_cut_off_at_the_size_limit(hostile):
    """llhttp sets no limit on a request's head: the server's own (``MAX_HEAD_BYTES``) answers 431 and closes."""
    from gis_ioc.web.server import MAX_HEAD_BYTES

    parts = urlparse(hostile.url)
    answer = b""
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(MAX_HEAD_BYTES // 1000 + 50):
                sock.sendall(b"X-Padding: " + b"a" * 1000 + b"\r\n")
        except OSError:
            pass  # closed while we still sent: the answer is waiting
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except OSError:
            pass
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["code"] == "request_too_large"
    assert httpx.get(f"{hostile.url}/health").status_code == 200


def test_an_error_keeps_the_connection_alive(hostile):
    parts = urlparse(hostile.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", "/collections/incidents/items?limit=0")
    bad = conn.getresponse()
    bad.read()
    assert bad.status == 400 and bad.getheader("connection") != "close"
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200  # the same connection
    conn.close()


def test_http_hygiene_headers_head_options_and_allow(hostile):
    views = httpx.get(f"{hostile.url}/views/wall")
    api = httpx.get(f"{hostile.url}/collections")
    for response in (views, api):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert "server" not in response.headers
    policy = views.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "http" not in policy
    document = httpx.get(f"{hostile.url}/openapi.json").json()
    for path, operations in document["paths"].items():
        if "get" in operations and "{" not in path and path != "/events":
            head = httpx.head(f"{hostile.url}{path}", timeout=30)
            assert head.status_code in (200, 400), (path, head.status_code)
            assert head.content == b""
    stream = httpx.head(f"{hostile.url}/events", timeout=10)  # a stream's HEAD ends with its headers
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    options = httpx.options(f"{hostile.url}/collections/incidents/items/1")
    assert options.status_code == 204
    assert options.headers["allow"] == "GET, HEAD, PUT, PATCH, DELETE, OPTIONS"
    wrong = httpx.put(f"{hostile.url}/collections/incidents/items")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, HEAD, POST, OPTIONS"
    assert wrong.json()["code"] == "method_not_allowed"


def test_health_ready_and_docs_say_nothing_of_the_machine(hostile):
    parts = make_parts(hostile.db_url)
    for path in ("/health", "/ready"):
        text = httpx.get(f"{hostile.url}{path}").text
        assert parts.host not in text and str(parts.port) not in text
    docs = httpx.get(f"{hostile.url}/docs").text
    assert "cdn" not in docs.lower() and "https://" not in docs and "/static/vendor/swagger-ui" in docs
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert httpx.get(f"{hostile.url}/static/vendor/swagger-ui-5.35.0/{asset}").status_code == 200


def make_parts(url: str) -> Any:
    return sa.engine.make_url(url)


def test_a_keyed_read_does_not_write_the_key_each_time(hostile):
    key = auth.create_key(hostile.engine, "hostile-counting", "viewer")
    for _ in range(5):
        assert httpx.get(f"{hostile.url}/collections", headers=_bearer(key)).status_code == 200
    with hostile.engine.connect() as conn:
        first = conn.execute(sa.text("SELECT last_used_at FROM api_keys WHERE name = 'hostile-counting'")).scalar()
    for _ in range(5):
        assert httpx.get(f"{hostile.url}/collections", headers=_bearer(key)).status_code == 200
    with hostile.engine.connect() as conn:
        again = conn.execute(sa.text("SELECT last_used_at FROM api_keys WHERE name = 'hostile-counting'")).scalar()
    assert first is not None and again == first  # kept to the minute, not written per request
    _refused(httpx.get(f"{hostile.url}/collections", headers=_bearer("gioc_" + "x" * 300)), 401, None)


def test_nothing_the_suite_sent_took_the_server_down(hostile):
    assert httpx.get(f"{hostile.url}/health").status_code == 200
    log = hostile.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


# -- in the process: budgets, cancellation, the heavy-work limit, the DBSCAN bound --------------------------


def test_a_statement_past_its_budget_is_a_timeout(db_url):
    engine = db.make_engine(db_url, pool_size=1)
    token = db.BUDGET.set(db.Budget(timeout_ms=100))
    try:
        with pytest.raises(sa.exc.OperationalError) as caught, engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_sleep(2)"))
        assert isinstance(from_database(caught.value), QueryTimeout)
    finally:
        db.BUDGET.reset(token)
    with engine.connect() as conn:  # outside a request: no timeout
        assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "0"
    engine.dispose()


def test_a_request_whose_client_left_has_its_query_cancelled(db_url):
    engine = db.make_engine(db_url, pool_size=1)
    budget = db.Budget(timeout_ms=60_000)
    failed: list[BaseException] = []

    def slow() -> None:
        token = db.BUDGET.set(budget)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT pg_sleep(30)"))
        except BaseException as err:  # noqa: BLE001 - the cancellation is what is tested
            failed.append(err)
        finally:
            db.BUDGET.reset(token)

    worker = threading.Thread(target=slow)
    started = time.monotonic()
    worker.start()
    while not budget.connections and time.monotonic() - started < 10:
        time.sleep(0.02)
    time.sleep(0.2)
    budget.cancel()  # what the guard does when the client disconnects
    worker.join(10)
    assert not worker.is_alive() and time.monotonic() - started < 5
    assert failed and isinstance(from_database(failed[0]), QueryTimeout)
    engine.dispose()


def test_the_guard_cancels_when_the_client_disconnects():
    from gis_ioc.web.guard import Guard

    budget = db.Budget(timeout_ms=1000)
    cancelled = asyncio.Event()
    budget.cancel = cancelled.set  # type: ignore[method-assign]

    async def run() -> None:
        messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await messages.put({"type": "http.request", "body": b"", "more_body": False})
        receive, end_watch = Guard.watch_disconnect(messages.get, budget)
        assert (await receive())["type"] == "http.request"
        budget.connections.add(object())
        await messages.put({"type": "http.disconnect"})
        await asyncio.wait_for(cancelled.wait(), 5)
        assert (await asyncio.wait_for(receive(), 5))["type"] == "http.disconnect"
        end_watch()

    asyncio.run(run())


def test_heavy_work_waits_for_a_place_and_a_full_queue_is_busy(monkeypatch):
    from gis_ioc.web import deps

    monkeypatch.setattr(deps, "HEAVY_QUEUE", 1)
    monkeypatch.setattr(deps, "HEAVY_WAIT_S", 0.3)

    async def run() -> list[str]:
        state = SimpleNamespace(heavy=deps.HeavyLimit(1))
        request: Any = SimpleNamespace(app=SimpleNamespace(state=state))
        order: list[str] = []

        async def job(name: str, hold: float) -> None:
            try:
                async with heavy_work(request):
                    order.append(f"{name} in")
                    await asyncio.sleep(hold)
            except Busy:
                order.append(f"{name} busy")

        await asyncio.gather(job("a", 0.5), job("b", 0), job("c", 0))
        return order

    order = asyncio.run(run())
    assert order[0] == "a in" and "c busy" in order and "b busy" in order  # b waited past 0.3 s, c found the queue full


def test_dbscan_input_is_bounded_before_it_starts(demo_engine, monkeypatch):
    catalog = Catalog.from_folder(PROJECT_ROOT / "layers", demo_engine)
    monkeypatch.setattr(limits, "MAX_DBSCAN_POINTS", 100)
    with demo_engine.connect() as conn, pytest.raises(InvalidInput, match="dbscan takes at most 100"):
        analysis.hotspots(conn, catalog, "incidents", method="dbscan")
    with demo_engine.connect() as conn:  # grid is allowed many more
        assert analysis.hotspots(conn, catalog, "incidents", method="grid")["clusters"]


def test_cql2_text_limits_refuse_before_the_parser():
    with pytest.raises(InvalidInput, match="nests"):
        limits.check_cql2_text(DEEP_PARENS)
    with pytest.raises(InvalidInput, match="arithmetic"):
        limits.check_cql2_text("id = " + "+".join(["1"] * 3000))
    limits.check_cql2_text("S_INTERSECTS(geom, POLYGON((107 14, 108 14, 108 15, 107 14))) AND NOT (title LIKE "
                           "'((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((')")


def test_a_database_error_that_is_a_bug_stays_a_500_in_the_log_not_a_503():
    err = sa.exc.ProgrammingError("SELECT", {}, psycopg2.errors.UndefinedColumn("no such column"))
    assert from_database(err) is None


# -- private reads: the wall signs in once, its own requests carry the key in a cookie no script can read ----


@pytest.fixture(scope="module")
def private(hostile: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with served(hostile.db_url, tmp_path_factory.mktemp("home"), env={"GIS_IOC_PUBLIC_READ": "false"}) as base:
        yield base


def test_private_reads_need_a_key_and_the_wall_offers_to_sign_in(private, hostile):
    _refused(httpx.get(f"{private}/collections"), 401, None)
    _refused(httpx.get(f"{private}/tiles/incidents/8/204/116.mvt"), 401, None)
    page = httpx.get(f"{private}/views/wall", headers={"Accept": "text/html"})
    assert page.status_code == 401 and "<form method='post' action='/views/session'>" in page.text
    assert httpx.get(f"{private}/health").status_code == 200  # monitoring needs no key
    refused = httpx.post(f"{private}/views/session", data={"key": "gioc_wrong", "next": "/views/wall"})
    assert refused.status_code == 401 and "unknown or revoked" in refused.text


def test_a_signed_in_wall_carries_its_key_in_an_httponly_cookie(private, hostile):
    with httpx.Client(base_url=private, timeout=30) as browser:
        signed = browser.post("/views/session", data={"key": hostile.keys["viewer"], "next": "https://evil.example/"})
        assert signed.status_code == 303 and signed.headers["location"] == "/views/wall"  # never another site
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        assert browser.get("/views/wall").status_code == 200
        assert browser.get("/views/wall/kpi.json").status_code == 200
        assert browser.get("/tiles/infrastructure,cameras,incidents/8/204/116.mvt").status_code == 200
        with browser.stream("GET", "/events") as events:
            assert events.status_code == 200
        # the cookie is for reading: a write needs the key itself
        assert browser.post("/collections/incidents/items", json=INCIDENT).status_code == 401
        ended = browser.post("/views/session/end")
        assert ended.status_code == 303
        assert browser.get("/views/wall/kpi.json").status_code == 401


def test_many_walls_asking_after_a_change_cost_one_making():
    from concurrent.futures import ThreadPoolExecutor

    from gis_ioc.web.views import Memo

    memo, made = Memo(), []

    def make() -> int:
        made.append(1)
        time.sleep(0.2)
        return len(made)

    with ThreadPoolExecutor(max_workers=16) as pool:
        first = list(pool.map(lambda _: memo.get(("v", 1), make), range(32)))
        second = list(pool.map(lambda _: memo.get(("v", 2), make), range(32)))
    assert first == [(1, True)] * 32 and second == [(2, True)] * 32 and len(made) == 2

    def away() -> int:
        raise sa.exc.OperationalError("SELECT 1", {}, psycopg2.OperationalError("the database system is shutting "
                                                                                "down"))

    assert memo.get(("v", 3), away) == (2, False)  # the database away: the last figures, said to be old
    with pytest.raises(ZeroDivisionError):  # a bug is not hidden behind old figures
        memo.get(("v", 4), lambda: 1 // 0)


def test_a_url_of_the_longest_allowed_non_ascii_parameter_gets_its_400(hostile, unchanged):
    """16,384 three-byte characters are ~147 KB of URL: answered (400 naming the parameter), not reset."""
    import http.client
    from urllib.parse import quote, urlsplit

    where = urlsplit(hostile.url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)  # httpx stops at 64 KiB of URL
    conn.request("GET", "/analysis/impact?polygon=" + quote("\u0800" * 16_384))
    response = conn.getresponse()
    refused = json.loads(response.read())
    assert response.status == 400 and refused["parameter"] == "polygon"
    assert "codec" not in refused["description"] and len(refused["description"]) < 200  # not GEOS's cut message
    conn.close()


BOMB = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">'
        b"<identifier>&c;</identifier></alert>")


@pytest.mark.parametrize("body, param", [
    (BOMB, "body"),
    (b"<alert xmlns='urn:oasis:names:tc:emergency:cap:1.2'>" * 5000, "body"),  # never closed
    (b"\x00\x01 not xml at all", "body"),
])
def test_hostile_cap_alerts_are_a_400_and_change_nothing(hostile, unchanged, body, param):
    response = httpx.post(f"{hostile.url}/collections/incidents/items", content=body, timeout=30,
                          headers={**_bearer(hostile.keys["operator"]), "Content-Type": "application/cap+xml"})
    _refused(response, 400, param)


@pytest.mark.parametrize("body, status, param", [
    ({"duplicate": {"$gt": 1}}, 400, "duplicate"),
    ({"duplicate": "1" * 5000}, 404, "duplicate"),
    ({"duplicate": -1}, 404, "duplicate"),
    ({"duplicate": "1\u0000"}, 400, "duplicate"),
    ([[[[[[[[[[]]]]]]]]]], 400, "duplicate"),
])
def test_hostile_merges_are_refused_and_change_nothing(hostile, unchanged, body, status, param):
    response = httpx.post(f"{hostile.url}/collections/incidents/items/1/merge", json=body, timeout=30,
                          headers=_bearer(hostile.keys["operator"]))
    _refused(response, status, param)
    response = httpx.delete(f"{hostile.url}/collections/incidents/items/1/merge/{'9' * 90}", timeout=30,
                            headers=_bearer(hostile.keys["operator"]))
    _refused(response, 404, "duplicate")


def test_the_desk_page_needs_nothing_but_a_get(hostile):
    response = httpx.get(f"{hostile.url}/views/desk?x=" + "%00" * 100, timeout=30)
    assert response.status_code in (200, 400) and "Traceback" not in response.text
    assert httpx.post(f"{hostile.url}/views/desk", timeout=30).status_code == 405


SECRET_LINE = "root-password-of-the-province"
VRT_UPLOAD = ('<OGRVRTDataSource><OGRVRTLayer name="x"><SrcDataSource>CSV:{source}</SrcDataSource>'
              '<GeometryType>wkbPoint</GeometryType><GeometryField encoding="PointFromColumns" x="lon" y="lat"/>'
              '</OGRVRTLayer></OGRVRTDataSource>')


@pytest.mark.parametrize("suffix", [".geojson", ".json", ".kml", ".gpkg", ".fgb", ".csv"])
def test_an_upload_that_is_a_vrt_reads_no_server_file(hostile, unchanged, tmp_path, suffix):
    secret = tmp_path / "secret.csv"
    secret.write_text(f"name,lon,lat\n{SECRET_LINE},{CITY[0]},{CITY[1]}\n")
    body = VRT_UPLOAD.format(source=secret).encode()
    imported = httpx.post(f"{hostile.url}/collections/cameras/import", headers=_bearer(hostile.keys["operator"]),
                          files={"file": (f"cameras{suffix}", body)}, timeout=30)
    refused = _refused(imported, 400, "file")
    assert "OGR_VRT" in refused["description"] and str(tmp_path) not in refused["description"]
    created = httpx.post(f"{hostile.url}/collections", headers=_bearer(hostile.keys["admin"]),
                         files={"file": (f"stolen{suffix}", body)}, data={"id": "stolen"}, timeout=30)
    _refused(created, 400, "file")
    assert httpx.get(f"{hostile.url}/collections/stolen", timeout=10).status_code == 404
    with hostile.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM cameras WHERE name = :s"),
                            {"s": SECRET_LINE}).scalar_one() == 0


def test_the_secrets_under_the_home_are_the_service_users_alone(tmp_path):
    from gis_ioc.cluster import PrivateCluster

    cluster = PrivateCluster(tmp_path / "home")
    cluster._save_state({"password": "x"})
    assert cluster.state_file.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("file_id", ["9223372036854775807", "9007199254740992", "0", "-9223372036854775808"])
def test_an_imported_id_past_the_exact_range_is_refused(hostile, unchanged, file_id):
    csv = f"id,name,lon,lat\n{file_id},Camera X,{CITY[0]},{CITY[1]}\n".encode()
    imported = httpx.post(f"{hostile.url}/collections/cameras/import", headers=_bearer(hostile.keys["operator"]),
                          files={"file": ("cameras.csv", csv)}, data={"crs": "EPSG:4326"}, timeout=30)
    assert "9,007,199,254,740,991" in _refused(imported, 400, "id")["description"]


def test_a_description_of_megabytes_is_refused_naming_it(hostile, unchanged):
    body = {"type": "Feature", "geometry": {"type": "Point", "coordinates": list(CITY)},
            "properties": {"type": "fire", "severity": "severe", "title": "x", "source": "114",
                           "description": "x" * 15_000_000}}
    posted = httpx.post(f"{hostile.url}/collections/incidents/items", json=body,
                        headers=_bearer(hostile.keys["operator"]), timeout=60)
    assert "20,000" in _refused(posted, 400, "properties.description")["description"]


@pytest.mark.parametrize(("field", "value"), [("reported_at", "now"), ("reported_at", "0001-01-01"),
                                              ("reported_at", "9999-12-31T23:59:59Z")])
def test_dates_that_are_words_or_out_of_any_era_are_refused(hostile, unchanged, field, value):
    body = {"type": "Feature", "geometry": {"type": "Point", "coordinates": list(CITY)},
            "properties": {"type": "fire", "severity": "severe", "title": "x", "source": "114", field: value}}
    posted = httpx.post(f"{hostile.url}/collections/incidents/items", json=body,
                        headers=_bearer(hostile.keys["operator"]), timeout=30)
    _refused(posted, 400, f"properties.{field}")


def _never_reading(url: str, path: str) -> socket.socket:
    """A client that asks for ``path`` and reads nothing (a small receive window: the server's writes back up)."""
    host, port = urlparse(url).hostname, urlparse(url).port
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept-Encoding: identity\r\n\r\n".encode())
    return sock


def _received(sock: socket.socket, seconds: float) -> tuple[int, bool, int]:
    """What a client now reading gets: bytes, whether the server had closed the connection, and the status (0:
    none came); bounded in time."""
    sock.settimeout(seconds)
    data = b""
    closed = True
    try:
        while chunk := sock.recv(1 << 16):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        closed = False
    status = int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else 0
    return len(data), closed, status


def test_clients_that_never_read_big_pages_are_dropped_and_the_wall_still_answers(hostile):
    page = httpx.get(f"{hostile.url}/collections/incidents/items?limit=10000", timeout=60,
                     headers={"Accept-Encoding": "identity"})
    assert page.status_code == 200 and len(page.content) > 3_000_000, len(page.content)  # more than sockets buffer
    crowd = [_never_reading(hostile.url, "/collections/incidents/items?limit=10000") for _ in range(24)]
    try:
        for _ in range(3):  # while the crowd holds its answers: the health check, a tile and a small page answer
            assert httpx.get(f"{hostile.url}/health", timeout=5).status_code == 200
            assert httpx.get(f"{hostile.url}/tiles/incidents/10/823/467.mvt", timeout=5).status_code in (200, 204)
            assert httpx.get(f"{hostile.url}/collections/cameras/items?limit=10", timeout=5).status_code == 200
        time.sleep(SEND_STALL_S + 2)  # the time the server gives a client that reads nothing
        outcomes = [_received(sock, 10) for sock in crowd]
    finally:
        for sock in crowd:
            sock.close()
    # each client was dropped with part of its page, told the server is busy (a big page waits for a place), or,
    # still waiting for its place when it began to read, sent the whole page
    dropped = [o for o in outcomes if o[2] == 200 and o[1] and o[0] < len(page.content)]
    busy = [o for o in outcomes if o[2] == 503]
    whole = [o for o in outcomes if o[2] == 200 and not o[1]]  # complete: the connection stayed open after it
    assert dropped and len(dropped) + len(busy) + len(whole) == len(crowd), [o for o in outcomes if o[2] != 503]


def _wavy_road(vertices: int) -> dict[str, Any]:
    """A road of ``vertices`` vertices zigzagging east of the city."""
    coordinates = [[CITY[0] + 0.02 + i * 1e-6, CITY[1] + (0.0001 if i % 2 else 0.0)] for i in range(vertices)]
    return {"type": "Feature", "geometry": {"type": "LineString", "coordinates": coordinates},
            "properties": {"kind": "road", "name": "Đường thử", "road_class": "district"}}


def test_a_road_of_too_many_vertices_is_refused(hostile, unchanged):
    posted = httpx.post(f"{hostile.url}/collections/infrastructure/items", json=_wavy_road(100_000),
                        headers=_bearer(hostile.keys["operator"]), timeout=60)
    assert "50,000" in _refused(posted, 400, "geometry")["description"]


def test_routes_answer_from_the_last_network_while_a_new_road_is_built_in(hostile):
    route = f"{hostile.url}/analysis/route?from={CITY[0]},{CITY[1]}&to={CITY[0] + 0.01},{CITY[1] + 0.01}"
    before = httpx.get(route, timeout=30)
    assert before.status_code == 200 and before.headers["X-Network"].endswith("; current"), before.headers
    posted = httpx.post(f"{hostile.url}/collections/infrastructure/items", json=_wavy_road(40_000),
                        headers=_bearer(hostile.keys["operator"]), timeout=60)
    assert posted.status_code == 201, posted.text
    try:
        during = httpx.get(route, timeout=30)  # the write made the network stale: this request starts the build
        assert during.status_code == 200, during.text
        assert during.headers["X-Network"] == before.headers["X-Network"].replace("current", "rebuilding")
        assert during.json()["properties"] == before.json()["properties"]
        view = httpx.get(f"{hostile.url}/views/incidents/1", timeout=30)
        assert view.status_code in (200, 404)
        deadline = time.monotonic() + 120
        while (after := httpx.get(route, timeout=30)).headers["X-Network"].endswith("; rebuilding"):
            assert time.monotonic() < deadline, "the network was not made again in time"
            time.sleep(0.5)
        assert after.headers["X-Network"] != before.headers["X-Network"]  # made from the roads' new version
    finally:
        httpx.delete(f"{hostile.url}/collections/infrastructure/items/{posted.json()['id']}",
                     headers=_bearer(hostile.keys["operator"]), timeout=30)


def test_an_import_whose_client_leaves_is_cancelled_and_commits_nothing(hostile, unchanged, tmp_path):
    import geopandas as gpd
    import numpy as np
    import shapely

    rows = 400_000
    rng = np.random.default_rng(7)
    frame = gpd.GeoDataFrame({"name": [f"cam {i}" for i in range(rows)]}, crs=4326, geometry=shapely.points(
        CITY[0] + rng.uniform(-0.2, 0.2, rows), CITY[1] + rng.uniform(-0.2, 0.2, rows)))
    gpkg = tmp_path / "cameras.gpkg"
    frame.to_file(gpkg, layer="cameras", driver="GPKG", engine="pyogrio")
    boundary = "gisiocboundary7f3a"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cameras.gpkg\"\r\n"
            "Content-Type: application/geopackage+sqlite3\r\n\r\n").encode() + gpkg.read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    host, port = urlparse(hostile.url).hostname, urlparse(hostile.url).port
    with socket.create_connection((host, port)) as sock:
        sock.sendall((f"POST /collections/cameras/import HTTP/1.1\r\nHost: {host}\r\n"
                      f"Authorization: Bearer {hostile.keys['operator']}\r\n"
                      f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        deadline = time.monotonic() + 60
        while not _loading(hostile.engine):  # the load has begun: its COPY or its checks are under way
            assert time.monotonic() < deadline, "the import never started"
            time.sleep(0.05)
    deadline = time.monotonic() + 60  # the client has gone: the import ends (cancelled), committing nothing
    while _loading(hostile.engine):
        assert time.monotonic() < deadline, "the import went on after its client left"
        time.sleep(0.2)


def _loading(engine: sa.Engine) -> bool:
    """Whether a load's transaction is open on the database (a COPY, or the statements around it)."""
    with engine.connect() as conn:
        return bool(conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND xact_start IS NOT NULL AND application_name = 'gis-ioc' AND backend_type = 'client backend'"
        )).scalar_one())


NUL_JSON_FILTER = json.dumps({"op": "=", "args": [{"property": "title"}, "a\u0000b"]})


@pytest.mark.parametrize("path", [
    "/collections/incidents/items", "/tiles/incidents/12/3276/1882.mvt",
    f"/analysis/nearest?layer=incidents&lon={CITY[0]}&lat={CITY[1]}",
    f"/analysis/within?layer=incidents&lon={CITY[0]}&lat={CITY[1]}&radius_m=1000",
    "/analysis/stats?layer=incidents", "/analysis/hotspots?layer=incidents",
    f"/analysis/nearest-by-time?layer=incidents&lon={CITY[0]}&lat={CITY[1]}",
])
def test_a_nul_inside_a_cql2_json_string_is_a_400(hostile, unchanged, path):
    sep = "&" if "?" in path else "?"
    url = f"{hostile.url}{path}{sep}filter-lang=cql2-json&filter={quote(NUL_JSON_FILTER)}"
    _refused(httpx.get(url, timeout=30), 400, "filter")


@pytest.mark.parametrize("path, param", [
    ("/collections/incidents/items?datetime=../9999-12-31", "datetime"),
    ("/collections/incidents/items?datetime=0001-01-01/..", "datetime"),
    ("/analysis/stats?layer=incidents&end=9999-12-31", "end"),
    ("/analysis/stats?layer=incidents&start=0001-01-01", "start"),
    ("/analysis/hotspots?layer=incidents&start=9999-12-31", "start"),
    ("/analysis/hotspots?layer=incidents&end=9999-12-31", "end"),
    (f"/analysis/route?from={CITY[0]},{CITY[1]}&to={CITY[0] + 0.01},{CITY[1]}&depart_at=9999-12-31T23:59:59Z",
     "depart_at"),
])
def test_times_at_the_end_of_the_calendar_are_a_400(hostile, unchanged, path, param):
    _refused(httpx.get(f"{hostile.url}{path}", timeout=30), 400, param)


def test_a_camera_with_no_field_of_view_is_a_400(hostile, unchanged):
    body = {"type": "Feature", "geometry": {"type": "Point", "coordinates": list(CITY)},
            "properties": {"name": "Cam 0", "fov_deg": 0}}
    posted = httpx.post(f"{hostile.url}/collections/cameras/items", json=body,
                        headers=_bearer(hostile.keys["operator"]), timeout=30)
    _refused(posted, 400, "properties.fov_deg")


@pytest.mark.parametrize("field", ["severity", "reported_at", "type", "title"])
def test_clearing_a_required_property_is_a_400(hostile, unchanged, field):
    with hostile.engine.connect() as conn:
        some = conn.execute(sa.text("SELECT id FROM incidents ORDER BY id LIMIT 1")).scalar_one()
    patched = httpx.patch(f"{hostile.url}/collections/incidents/items/{some}", json={"properties": {field: None}},
                          headers=_bearer(hostile.keys["operator"]), timeout=30)
    _refused(patched, 400, f"properties.{field}")


@pytest.mark.parametrize("geometry, words", [
    ({"type": "Point", "coordinates": [str(CITY[0]), str(CITY[1])]}, "must be numbers"),
    ({"type": "Point", "coordinates": [[CITY[0], CITY[1]]]}, "one [longitude, latitude] pair"),
    ({"type": "point", "coordinates": list(CITY)}, "case-sensitive: Point"),
    ({"type": "Feature", "geometry": {"type": "Point", "coordinates": list(CITY)}}, "not a geometry"),
    ({"type": "Point", "coordinates": [12024000.0, 1612000.0],
      "crs": {"type": "name", "properties": {"name": "EPSG:3857"}}}, "no crs member"),
    ({"type": "Point", "coordinates": [CITY[0], CITY[1], 530.0]}, "height (Z)"),
    ({"type": "Point", "coordinates": [CITY[0], True]}, "must be numbers"),
])
def test_geojson_that_rfc_7946_refuses_is_a_400_saying_why(hostile, unchanged, geometry, words):
    body = {**INCIDENT, "geometry": geometry}
    refused = _refused(_post(hostile, json.dumps(body)), 400, "geometry")
    assert words in refused["description"]


@pytest.mark.parametrize("path", ["/collections/incidents/items?limit=200", "/tiles/incidents/10/823/467.mvt"])
def test_gzip_refused_with_quality_zero_is_not_sent(hostile, unchanged, path):
    refused = httpx.get(f"{hostile.url}{path}", headers={"Accept-Encoding": "gzip;q=0, identity"}, timeout=30)
    assert refused.status_code == 200 and "content-encoding" not in refused.headers
    taken = httpx.get(f"{hostile.url}{path}", headers={"Accept-Encoding": "gzip"}, timeout=30)
    assert taken.headers.get("content-encoding") == "gzip"


def test_a_client_that_leaves_mid_body_leaves_one_line_not_a_traceback(hostile, unchanged):
    host, port = urlparse(hostile.url).hostname, urlparse(hostile.url).port
    before = hostile.log.read_text(errors="replace")
    for _ in range(3):
        with socket.create_connection((host, port)) as sock:
            sock.sendall((f"POST /collections/incidents/items HTTP/1.1\r\nHost: {host}\r\n"
                          f"Authorization: Bearer {hostile.keys['operator']}\r\n"
                          "Content-Type: application/geo+json\r\nContent-Length: 100000\r\n\r\n"
                          '{"type": "Feature", ').encode())
            time.sleep(0.3)
    assert httpx.get(f"{hostile.url}/health", timeout=10).status_code == 200
    time.sleep(0.5)
    added = hostile.log.read_text(errors="replace")[len(before):]
    assert "Traceback" not in added, added[-3000:]


@pytest.mark.parametrize("layer_id", ["a" * 41, "b" * 63])
def test_a_new_layer_id_too_long_for_its_tables_is_a_400_naming_id(hostile, unchanged, layer_id):
    csv = f"name,lon,lat\nX,{CITY[0]},{CITY[1]}\n".encode()
    created = httpx.post(f"{hostile.url}/collections", headers=_bearer(hostile.keys["admin"]),
                         files={"file": ("places.csv", csv)}, data={"id": layer_id, "crs": "EPSG:4326"}, timeout=30)
    assert "at most 40 characters" in _refused(created, 400, "id")["description"]


@pytest.mark.parametrize("geometry, words", [
    ({"type": "Polygon", "coordinates": [[[CITY[0], CITY[1]], [CITY[0] + 0.01, CITY[1]],
                                          [CITY[0] + 0.01, CITY[1] + 0.01]]]}, "ring is closed"),
    ({"type": "LineString", "coordinates": [[CITY[0], CITY[1]]]}, "at least two positions"),
    ({"type": "MultiPolygon", "coordinates": [[[[CITY[0], CITY[1]], [CITY[0] + 0.01, CITY[1]]]]]}, "ring is closed"),
])
def test_a_broken_geometry_is_said_plainly_without_library_words(hostile, unchanged, geometry, words):
    refused = _refused(_post(hostile, json.dumps({**INCIDENT, "geometry": geometry})), 400, "geometry")
    assert words in refused["description"]
    assert "Exception" not in refused["description"] and "numpy" not in refused["description"]
