"""The map views in headless Chromium, as a person at the wall would see them.

Debian's ``chromium`` driven by Playwright; the server runs in its own process on the demo province. Every
page must load with no console error and no request to any host but the server. Screenshots of each view
go to ``test-artifacts/`` (``GIS_IOC_TEST_ARTIFACTS``) for a person to look at.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, Page, Route, sync_playwright

from gis_ioc import auth, maps
from gis_ioc.settings import PROJECT_ROOT
from tests.conftest import free_port, served

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("GIS_IOC_TEST_ARTIFACTS", PROJECT_ROOT / "test-artifacts"))
# as DESIGN.md says: no sandbox as root, no GPU, and no calls home (the machine may have no internet)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]
CITY = (108.003, 14.350)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed at /usr/bin/chromium (`make setup` installs it)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(demo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with served(demo_url, tmp_path_factory.mktemp("home")) as url:
        yield url


@dataclass
class Visit:
    """An open page and what it did: console errors and requests to other hosts (refused)."""

    page: Page
    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path


def wait_until(page: Any, expression: str, timeout: float = 30_000) -> None:
    """Poll a JavaScript expression until it is true. Playwright's wait_for_function compiles its predicate
    inside the page, which the views' Content-Security-Policy (no eval) rightly refuses; evaluate() does not."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)


@pytest.fixture
def visit(browser: Browser, server: str) -> Iterator[Any]:
    contexts = []

    def open_page(path: str, wait_for: str | None = None) -> Visit:
        context = browser.new_context(viewport={"width": 1920, "height": 1080})
        contexts.append(context)
        page = context.new_page()
        seen = Visit(page)
        host = urlparse(server).netloc

        def route(r: Route) -> None:
            url = r.request.url
            if url.startswith("data:") or urlparse(url).netloc == host:
                r.continue_()
            else:
                seen.foreign.append(url)
                r.abort()

        page.route("**/*", route)
        page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: seen.errors.append(str(e)))
        response = page.goto(server + path)
        assert response is not None
        seen.page.wait_for_load_state("load")
        if wait_for:
            wait_until(page, wait_for, timeout=30_000)
        return seen

    yield open_page
    for context in contexts:
        context.close()


def _units(engine: sa.Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        communes = conn.execute(sa.text(
            "SELECT count(*) FROM admin_units WHERE level = 'commune' AND valid_to IS NULL")).scalar_one()
        districts = conn.execute(sa.text(
            "SELECT count(*) FROM admin_units WHERE level = 'district' AND valid_to = '2025-07-01'")).scalar_one()
    return int(communes), int(districts)


WALL_READY = "window.gisIocWall && window.gisIocWall.renderedMs && window.gisIocWall.connected"


def test_the_wall_shows_the_four_layers_kpis_and_clock(visit, demo_engine):
    wall = visit("/views/wall", WALL_READY)
    counts = wall.page.evaluate("window.gisIocWall.counts()")
    communes, districts = _units(demo_engine)
    assert counts["admin"] == communes + districts
    assert counts["incidents"] > 20 and counts["cameras"] > 5 and counts["infrastructure"] > 20
    with demo_engine.connect() as conn:
        active = conn.execute(sa.text("SELECT count(*) FROM incidents WHERE status IN ('new', 'verified', "
                                      "'dispatched', 'in_progress', 'reopened')")).scalar_one()
    assert wall.page.inner_text("#gis-kpi-active") == str(active)
    assert "cameras online" in wall.page.inner_text("#gis-kpi")
    assert re.fullmatch(r"\d\d:\d\d:\d\d", wall.page.inner_text("#gis-clock .gis-time"))
    assert wall.page.inner_text("#gis-live") == "LIVE"
    legend = wall.page.inner_text("#gis-legend")
    assert all(s in legend for s in ("extreme", "severe", "moderate", "minor", "online", "hospital", "river"))
    # the whole legend is on the screen at 1080p, nothing behind a scroll bar
    assert wall.page.evaluate("(e => e.scrollHeight <= e.clientHeight + 1)(document.querySelector('#gis-legend'))")
    control = wall.page.inner_text(".leaflet-control-layers")
    assert all(name in control for name in ("Incidents", "Cameras", "Infrastructure", "Communes"))
    # district names always; commune names only from zoom 11
    assert wall.page.locator(".gis-district-label").first.is_visible()
    assert not wall.page.locator(".gis-commune-label").first.is_visible()
    # clusters carry their counts (a <text> on each, in the same tile as the circle)
    counts_drawn = wall.page.evaluate(
        "Array.from(document.querySelectorAll('text.gis-cluster-count')).map(t => t.textContent)")
    assert counts_drawn and all(re.fullmatch(r"\d+(\.\d)?k?", c) for c in counts_drawn), counts_drawn
    wall.shot("wall")
    assert not wall.errors, wall.errors
    assert not wall.foreign, wall.foreign


def test_the_layer_control_switches_each_data_layer(visit):
    wall = visit("/views/wall", WALL_READY)
    counts = wall.page.evaluate("window.gisIocWall.counts()")
    switch = wall.page.locator(".leaflet-control-layers-overlays label", has_text="Incidents").locator("input")
    loads = wall.page.evaluate("window.gisIocWall.tileLoads")
    switch.uncheck()
    # the tiles are drawn again without incidents; cameras and infrastructure stay
    wait_until(wall.page, f"window.gisIocWall.tileLoads > {loads}", timeout=10_000)
    others = wall.page.evaluate("window.gisIocWall.counts()")
    assert others["cameras"] == counts["cameras"] and others["infrastructure"] == counts["infrastructure"]
    assert others["incidents"] == 0
    switch.check()
    wait_until(wall.page, f"window.gisIocWall.tileLoads > {loads + 1}", timeout=10_000)
    assert wall.page.evaluate("window.gisIocWall.counts()")["incidents"] == counts["incidents"]
    assert not wall.errors and not wall.foreign, (wall.errors, wall.foreign)


def test_the_wall_close_up_has_fields_of_view_and_names(visit):
    wall = visit("/views/wall", WALL_READY)
    wall.page.evaluate(f"window.gisIocWall.map.setView([{CITY[1]}, {CITY[0]}], 15, {{animate: false}})")
    wait_until(wall.page, "window.gisIocWall.counts().fov > 0 && window.gisIocWall.counts().incidents > 0",
                                timeout=30_000)
    assert wall.page.locator(".gis-commune-label").first.is_visible()
    # at zoom 15 incidents are single features, not clusters
    assert wall.page.evaluate("document.querySelectorAll('path.gis-incident.gis-cluster').length") == 0
    # the live picture: active incidents; what ended more than 24 h ago is not drawn (the demo's history ended
    # before 2026-11-28: none of it)
    assert wall.page.evaluate("document.querySelectorAll('path.gis-incident.gis-active').length") > 0
    assert wall.page.evaluate("document.querySelectorAll('path.gis-incident.gis-faded').length") == 0
    wall.page.wait_for_timeout(500)
    wall.shot("wall-zoom15")
    assert not wall.errors and not wall.foreign, (wall.errors, wall.foreign)


def test_the_wall_draws_its_time_window_and_replays_the_last_day(visit, demo_engine):
    wall = visit("/views/wall", WALL_READY)
    # the incidents' tiles are asked with the filter the server warms (the same text, made by maps.time_filter)
    now = datetime.now(UTC)
    made_here = {maps.time_filter(24, now - timedelta(minutes=m)) for m in (-1, 0, 1)}
    assert wall.page.evaluate("window.gisIocWall.incidentsFilter()") in made_here
    loads = wall.page.evaluate("window.gisIocWall.tileLoads")
    wall.page.select_option("#gis-window", "")
    wait_until(wall.page, f"window.gisIocWall.tileLoads > {loads}", timeout=10_000)
    assert wall.page.evaluate("window.gisIocWall.incidentsFilter()") == maps.time_filter(None)

    wall.page.click("[data-replay='24']")
    wait_until(wall.page, "window.gisIocWall.replay.on", timeout=30_000)
    assert wall.page.locator("#gis-replay").is_visible()
    west, south, east, north = wall.page.evaluate(
        "(b => [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()])(window.gisIocWall.map.getBounds())")
    start, end = wall.page.evaluate("[Number(document.querySelector('#gis-at').min), "
                                    "Number(document.querySelector('#gis-at').max)]")

    def active_at(ms: int) -> int:  # what the replay calls active at a minute: reported, not yet ended
        with demo_engine.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT count(*) FROM incidents WHERE status <> 'rejected' AND merged_into IS NULL "
                "AND reported_at <= :t AND coalesce(resolved_at, closed_at, 'infinity') > :t "
                "AND ST_Intersects(geom, ST_MakeEnvelope(:w, :s, :e, :n, 4326))"),
                {"t": datetime.fromtimestamp(ms / 1000, UTC), "w": west, "s": south, "e": east, "n": north}
            ).scalar_one())

    for moment in (start, (start + end) // 2, end):
        shown = wall.page.evaluate(f"window.gisIocWall.replayTo({moment})")
        assert shown["active"] == active_at(moment), moment
    assert "active" in wall.page.inner_text("#gis-at-label")
    wall.shot("wall-replay")
    wall.page.click("#gis-back")
    wait_until(wall.page, "!window.gisIocWall.replay.on && window.gisIocWall.counts().incidents > 0", timeout=10_000)
    assert not wall.page.locator("#gis-replay").is_visible()
    assert not wall.errors and not wall.foreign, (wall.errors, wall.foreign)


def test_a_posted_incident_appears_on_the_open_wall_within_two_seconds(visit, server, demo_engine):
    wall = visit("/views/wall", WALL_READY)
    key = auth.create_key(demo_engine, f"wall-test-{uuid.uuid4().hex[:6]}", "operator")
    before = int(wall.page.inner_text("#gis-kpi-active"))
    loads = wall.page.evaluate("window.gisIocWall.tileLoads")
    incident = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [CITY[0] + 0.002, CITY[1] + 0.001]},
                "properties": {"type": "fire", "severity": "extreme", "title": "Cháy nhà dân, phường Quyết Thắng",
                               "source": "114"}}
    posted = httpx.post(f"{server}/collections/incidents/items", json=incident,
                        headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert posted.status_code == 201, posted.text
    new_id = posted.json()["id"]
    started = time.monotonic()
    try:
        # on the page within 2 s: the change arrives by NOTIFY → /events → the wall's live layer
        wall.page.wait_for_selector(f"path.gis-live-incidents.gis-id-{new_id}", state="attached", timeout=2_000)
        arrived = time.monotonic() - started
        wait_until(wall.page, f"document.querySelector('#gis-kpi-active').textContent == '{before + 1}'",
                                    timeout=10_000)
        # a moment later the data tiles are drawn again from the new layer version
        wait_until(wall.page, f"window.gisIocWall.tileLoads > {loads}", timeout=10_000)
        wall.shot("wall-live-incident")
        # the page was not reloaded: the same document still counts its events
        assert wall.page.evaluate("window.gisIocWall.events") >= 1
        print(f"incident {new_id} on the wall after {arrived * 1000:.0f} ms")
    finally:
        httpx.delete(f"{server}/collections/incidents/items/{new_id}", headers={"Authorization": f"Bearer {key}"},
                     timeout=10)
    wall.page.wait_for_selector(f"path.gis-live-incidents.gis-id-{new_id}", state="detached", timeout=5_000)
    assert not wall.errors and not wall.foreign, (wall.errors, wall.foreign)


@contextlib.contextmanager
def _a_wall_page(browser: Browser) -> Iterator[tuple[Page, list[str]]]:
    """A page of its own (closed after), and the errors it raised."""
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield page, errors
    finally:
        context.close()


@contextlib.contextmanager
def _camera_to_change(engine: sa.Engine, last: bool = False) -> Iterator[Callable[[], None]]:
    """A change to make (a camera into maintenance), undone after (the demo database is shared)."""
    with engine.connect() as conn:
        camera, status = conn.execute(sa.text(
            f"SELECT id, status FROM cameras ORDER BY id {'DESC' if last else ''} LIMIT 1")).one()

    def change() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE cameras SET status = 'maintenance' WHERE id = :i"), {"i": camera})

    try:
        yield change
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE cameras SET status = :s WHERE id = :i"), {"s": status, "i": camera})


def test_a_wall_whose_stream_comes_from_another_process_hears_what_changed_while_it_loaded(browser, server,
                                                                                          demo_engine):
    """Several workers: the page is served by one process, its stream by another, where the page's ``since``
    means nothing. A change between the two is told by the stream's hello (newer layer versions): the wall
    draws its data again."""
    def from_another_process(route: Route) -> None:  # the page as a worker other than the stream's serves it
        served_page = route.fetch()
        body = re.sub(r'"since": "[^"]*"', '"since": "0000beef.1"', served_page.text())
        route.fulfill(response=served_page, body=body)

    with _a_wall_page(browser) as (page, errors), _camera_to_change(demo_engine, last=True) as change:
        def change_first(route: Route) -> None:  # the change falls between the page and its stream
            change()
            time.sleep(0.5)  # heard by the server before the stream subscribes: no event will tell it
            route.continue_()

        page.route("**/views/wall", from_another_process)
        page.route("**/events*", change_first)
        page.goto(f"{server}/views/wall")
        wait_until(page, WALL_READY, timeout=30_000)
        wait_until(page, "window.gisIocWall.events >= 1", timeout=10_000)  # drawn again, from the hello
    assert not errors, errors


def test_the_wall_resumes_after_the_server_restarts(browser, demo_url, demo_engine, tmp_path):
    """The browser reconnects by itself; what happened while the server was away comes as one reload."""
    port = free_port()
    with _a_wall_page(browser) as (page, errors), _camera_to_change(demo_engine) as change:
        with served(demo_url, tmp_path / "home", port) as url:
            page.goto(f"{url}/views/wall")
            wait_until(page, WALL_READY, timeout=30_000)
        wait_until(page, "!window.gisIocWall.connected", timeout=10_000)
        assert page.inner_text("#gis-live") == "reconnecting…"
        change()  # a change while the server is down
        with served(demo_url, tmp_path / "home", port) as url:
            wait_until(page, "window.gisIocWall.connected", timeout=20_000)
            assert page.inner_text("#gis-live") == "LIVE"
            # the new process cannot replay the old one's events: its first event tells the wall to reload
            wait_until(page, "window.gisIocWall.events >= 1", timeout=10_000)
            key = auth.create_key(demo_engine, f"resume-{uuid.uuid4().hex[:6]}", "operator")
            incident = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [CITY[0], CITY[1] + 0.003]},
                        "properties": {"type": "flood", "severity": "severe", "title": "Ngập cục bộ", "source": "app"}}
            posted = httpx.post(f"{url}/collections/incidents/items", json=incident,
                                headers={"Authorization": f"Bearer {key}"}, timeout=10)
            new_id = posted.json()["id"]
            try:
                page.wait_for_selector(f"path.gis-live-incidents.gis-id-{new_id}", state="attached", timeout=2_000)
            finally:
                httpx.delete(f"{url}/collections/incidents/items/{new_id}",
                             headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert not errors, errors


def test_the_incident_view(visit, demo_engine):
    with demo_engine.connect() as conn:
        incident = conn.execute(sa.text("SELECT id FROM incidents WHERE status = 'in_progress' "
                                        "AND GeometryType(geom) = 'POINT' ORDER BY id LIMIT 1")).scalar_one()
    view = visit(f"/views/incidents/{incident}")
    wait_until(view.page, "document.querySelectorAll('path.gis-camera').length > 0", timeout=30_000)
    assert view.page.locator("path.gis-incident").count() == 1
    assert view.page.locator("path.gis-camera").count() == 5
    assert view.page.locator("#gis-cameras tr").count() == 5
    # numbered badges, the same numbers in the panel; no names piled over the map (they show on hover)
    rows = view.page.locator("#gis-cameras tr").count() + view.page.locator("#gis-infra tr").count()
    assert view.page.locator(".gis-badge-num").count() == rows
    assert [view.page.inner_text(f"#gis-cameras tr:nth-child({i}) .gis-ref") for i in (1, 5)] == ["C1", "C5"]
    assert view.page.locator(".leaflet-tooltip").count() == 0
    assert f"Incident {incident}" in (view.page.text_content("#gis-incident") or "")
    # by road: the fire station soonest there, its route drawn and its time in the panel
    assert view.page.locator("path.gis-route").count() >= 1
    by_road = view.page.inner_text("#gis-by-road")
    assert "fire station" in by_road and re.search(r"\d+ min", by_road), by_road
    assert re.search(r"ETA \d\d:\d\d", by_road), by_road
    view.shot("incident")
    assert not view.errors and not view.foreign, (view.errors, view.foreign)


def test_the_incident_view_follows_its_incident_and_the_clock(visit, server, demo_engine):
    """Issue 13: the view is made again when its incident changes (keeping where the map was); ETAs follow now."""
    key = auth.create_key(demo_engine, f"incident-view-{uuid.uuid4().hex[:6]}", "operator")
    headers = {"Authorization": f"Bearer {key}"}
    incident = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [CITY[0] + 0.003, CITY[1] - 0.002]},
                "properties": {"type": "fire", "severity": "severe", "title": "Cháy kho, phường Thắng Lợi",
                               "source": "114"}}
    posted = httpx.post(f"{server}/collections/incidents/items", json=incident, headers=headers, timeout=10)
    assert posted.status_code == 201, posted.text
    new_id = posted.json()["id"]
    added: list[int] = []
    try:
        view = visit(f"/views/incidents/{new_id}", "window.gisIocIncident !== undefined")
        wait_until(view.page, "document.querySelector('#gis-live').textContent == 'LIVE'", timeout=10_000)
        assert view.page.text_content("#gis-incident .gis-status") == "new"
        etas = view.page.eval_on_selector_all("[data-eta-s]", "els => els.map(e => e.textContent)")
        assert etas and all(re.fullmatch(r"\d\d:\d\d", t) for t in etas), etas
        view.page.evaluate("window.gisIocIncident.map.setZoom(13, {animate: false}); window.beforeChange = 1")
        # a camera put up far away is not this view's business: heard, and the page stays
        far = httpx.post(f"{server}/collections/cameras/items", headers=headers, timeout=10, json={
            "type": "Feature", "geometry": {"type": "Point", "coordinates": [CITY[0] + 0.3, CITY[1] + 0.3]},
            "properties": {"name": "Camera far from the incident"}})
        assert far.status_code == 201, far.text
        httpx.delete(f"{server}/collections/cameras/items/{far.json()['id']}", headers=headers, timeout=10)
        # nor is a school far away; a fire station anywhere is (it may now be the soonest there)
        school = _infrastructure(server, headers, "school", "Trường xa sự cố", (CITY[0] + 0.3, CITY[1] + 0.3))
        httpx.delete(f"{server}/collections/infrastructure/items/{school}", headers=headers, timeout=10)
        wait_until(view.page, "window.gisIocIncident.events >= 4", timeout=10_000)
        assert view.page.evaluate("[window.gisIocIncident.reloading, window.beforeChange]") == [False, 1]
        with view.page.expect_navigation(timeout=20_000):
            added.append(_infrastructure(server, headers, "fire_station", "Đội PCCC mới",
                                         (CITY[0] + 0.2, CITY[1] + 0.2)))
        view.page.wait_for_load_state("load")
        wait_until(view.page, "window.gisIocIncident !== undefined && window.beforeChange === undefined",
                   timeout=10_000)
        view.page.evaluate("window.beforeChange = 1")
        with view.page.expect_navigation(timeout=20_000):  # the page is made again
            changed = httpx.patch(f"{server}/collections/incidents/items/{new_id}", json={"properties": {
                "status": "verified"}}, headers=headers, timeout=10)
            assert changed.status_code == 200, changed.text
        view.page.wait_for_load_state("load")
        wait_until(view.page, "window.gisIocIncident !== undefined && window.beforeChange === undefined",
                   timeout=10_000)
        assert view.page.text_content("#gis-incident .gis-status") == "verified"
        assert view.page.evaluate("window.gisIocIncident.map.getZoom()") == 13  # where the operator had it
        assert not view.errors and not view.foreign, (view.errors, view.foreign)
    finally:
        httpx.delete(f"{server}/collections/incidents/items/{new_id}", headers=headers, timeout=10)
        for found in added:
            httpx.delete(f"{server}/collections/infrastructure/items/{found}", headers=headers, timeout=10)


def test_an_incident_view_whose_stream_comes_from_another_process_is_made_again_after_a_change(browser, server,
                                                                                               demo_engine):
    """Several workers: the view's ``since`` means nothing to its stream's process. A change between the page
    and its stream is told by the stream's hello (newer versions): the view is made again, once."""
    key = auth.create_key(demo_engine, f"incident-workers-{uuid.uuid4().hex[:6]}", "operator")
    headers = {"Authorization": f"Bearer {key}"}
    posted = httpx.post(f"{server}/collections/incidents/items", headers=headers, timeout=10, json={
        "type": "Feature", "geometry": {"type": "Point", "coordinates": [CITY[0] - 0.002, CITY[1] + 0.002]},
        "properties": {"type": "flood", "severity": "moderate", "title": "Ngập đường", "source": "app"}})
    assert posted.status_code == 201, posted.text
    new_id = posted.json()["id"]
    held = []

    def from_another_process(route: Route) -> None:
        served_page = route.fetch()
        body = re.sub(r'"since": "[^"]*"', '"since": "0000beef.1"', served_page.text())
        route.fulfill(response=served_page, body=body)

    def change_first(route: Route) -> None:  # the first stream only: the change falls before it
        if not held:
            held.append(1)
            with demo_engine.begin() as conn:
                conn.execute(sa.text("UPDATE incidents SET status = 'verified' WHERE id = :i"), {"i": new_id})
            time.sleep(0.5)  # heard by the server before the stream subscribes: no event will tell it
        route.continue_()

    try:
        with _a_wall_page(browser) as (page, errors):
            page.route("**/views/incidents/*", from_another_process)
            page.route("**/events*", change_first)
            page.goto(f"{server}/views/incidents/{new_id}")
            assert page.text_content("#gis-incident .gis-status") == "new"  # read before the change
            with page.expect_navigation(timeout=20_000):  # made again, from the hello
                pass
            page.wait_for_load_state("load")
            wait_until(page, "document.querySelector('#gis-live').textContent == 'LIVE'", timeout=10_000)
            assert page.text_content("#gis-incident .gis-status") == "verified"
            page.evaluate("window.stayed = 1")
            time.sleep(1.5)  # its own hello again (the page rewritten as before): not made again
            assert page.evaluate("window.stayed") == 1
        assert not errors, errors
    finally:
        httpx.delete(f"{server}/collections/incidents/items/{new_id}", headers=headers, timeout=10)


def _infrastructure(server: str, headers: dict[str, str], kind: str, name: str, at: tuple[float, float]) -> int:
    """A new point of infrastructure through the API: its id."""
    posted = httpx.post(f"{server}/collections/infrastructure/items", headers=headers, timeout=10, json={
        "type": "Feature", "geometry": {"type": "Point", "coordinates": list(at)},
        "properties": {"kind": kind, "name": name}})
    assert posted.status_code == 201, posted.text
    return int(posted.json()["id"])


def test_a_new_fire_station_redraws_the_walls_base_tiles_and_reach(visit, server, demo_engine):
    """Infrastructure changes reach the wall (migration 024): its base tiles and, when shown, the reach areas."""
    wall = visit("/views/wall", WALL_READY)
    wall.page.locator(".leaflet-control-layers-overlays label", has_text="reach by road").locator("input").check()
    wait_until(wall.page, "window.gisIocWall.reachLoads >= 1", timeout=30_000)
    loads = wall.page.evaluate("window.gisIocWall.tileLoads")
    key = auth.create_key(demo_engine, f"wall-infra-{uuid.uuid4().hex[:6]}", "operator")
    headers = {"Authorization": f"Bearer {key}"}
    station = _infrastructure(server, headers, "fire_station", "Đội PCCC phường Trường Chinh",
                              (CITY[0] - 0.01, CITY[1] + 0.01))
    try:
        wait_until(wall.page, "window.gisIocWall.infrastructureChanges >= 1", timeout=10_000)
        wait_until(wall.page, f"window.gisIocWall.tileLoads > {loads}", timeout=15_000)
        wait_until(wall.page, "window.gisIocWall.reachLoads >= 2", timeout=30_000)
        assert wall.page.evaluate("window.gisIocWall.events") >= 1  # the same page: not reloaded
    finally:
        httpx.delete(f"{server}/collections/infrastructure/items/{station}", headers=headers, timeout=10)
    assert not wall.errors and not wall.foreign, (wall.errors, wall.foreign)


def test_the_choropleth_view(visit, demo_engine):
    view = visit("/views/choropleth?layer=incidents&level=commune&window=30d")
    wait_until(view.page, "document.querySelectorAll('path.gis-unit').length > 0", timeout=30_000)
    communes, _ = _units(demo_engine)
    assert view.page.locator("path.gis-unit").count() == communes
    assert view.page.locator("#gis-legend .gis-legend-row").count() >= 3
    # names never cover each other: where two would, the larger unit's is drawn
    boxes = view.page.evaluate(
        "Array.from(document.querySelectorAll('.gis-label')).filter(e => !e.classList.contains('gis-label-hidden'))"
        ".map(e => e.getBoundingClientRect()).filter(b => b.width > 0).map(b => [b.left, b.top, b.right, b.bottom])")
    assert len(boxes) > communes // 2
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    view.shot("choropleth")
    assert not view.errors and not view.foreign, (view.errors, view.foreign)


def test_the_reach_view_draws_service_areas_and_the_communes_out_of_reach(visit):
    view = visit("/views/reach?kind=fire_station&minutes=15,30")
    wait_until(view.page, "document.querySelectorAll('path.gis-reach').length >= 2", timeout=30_000)
    assert view.page.locator("path.gis-facility").count() >= 1
    legend = view.page.inner_text("#gis-legend")
    assert "within 15 min" in legend and "within 30 min" in legend
    assert "Not reached within 30 min" in view.page.inner_text("#gis-uncovered")
    view.shot("reach")
    assert not view.errors and not view.foreign, (view.errors, view.foreign)
    # the wall switches the same areas on
    wall = visit("/views/wall", WALL_READY)
    wall.page.locator(".leaflet-control-layers-overlays label", has_text="reach by road").locator("input").check()
    wait_until(wall.page, "document.querySelectorAll('path.gis-reach').length >= 2", timeout=30_000)
    assert not wall.errors and not wall.foreign, (wall.errors, wall.foreign)


def test_an_unknown_view_is_a_404_page(browser, server):
    page = browser.new_page()
    try:
        response = page.goto(f"{server}/views/incidents/999999999")
        assert response is not None and response.status == 404
        assert "Not found" in page.inner_text("h1")
    finally:
        page.close()


def test_a_private_wall_signs_in_once_and_runs_on_its_cookie(browser, demo_url, demo_engine, tmp_path):
    """GIS_IOC_PUBLIC_READ=false: the wall asks for a viewer key once; tiles, KPIs and events then carry it."""
    key = auth.create_key(demo_engine, f"wall-{uuid.uuid4().hex[:6]}", "viewer")
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        with served(demo_url, tmp_path / "home", env={"GIS_IOC_PUBLIC_READ": "false"}) as url:
            page.goto(f"{url}/views/wall")
            page.fill("input[name=key]", key)
            page.click("button[type=submit]")
            page.wait_for_url(f"{url}/views/wall")
            wait_until(page, WALL_READY, timeout=30_000)
            counts = page.evaluate("window.gisIocWall.counts()")
            assert counts["incidents"] > 20 and counts["cameras"] > 5
            assert page.inner_text("#gis-kpi-active").isdigit()
            assert page.evaluate("document.cookie") == ""  # HttpOnly: no script on the page can read the key
            Visit(page).shot("wall-private")
    finally:
        context.close()
    assert not errors, errors


def test_the_rendered_wall_opened_from_disk_draws_the_servers_data(browser, server, demo_url, tmp_path, run_cli):
    """Issue 11: the file gis-ioc render writes opens anywhere; its tiles, KPIs and events come across origins."""
    out = tmp_path / "wall.html"
    code, _, stderr = run_cli("render", "wall", "--out", str(out), "--server", server,
                              env={"GIS_IOC_DATABASE_URL": demo_url, "GIS_IOC_HOME": str(tmp_path / "home")})
    assert code == 0, stderr
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(out.as_uri())  # origin "null": every request to the server is cross-origin
        wait_until(page, WALL_READY, timeout=30_000)
        counts = page.evaluate("window.gisIocWall.counts()")
        assert counts["incidents"] > 20 and counts["cameras"] > 5 and counts["infrastructure"] > 20
        assert page.inner_text("#gis-kpi-active").isdigit() and page.inner_text("#gis-live") == "LIVE"
    finally:
        context.close()
    assert not errors, errors
