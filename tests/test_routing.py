"""Routing over the road network (pgRouting): checked against a plain Dijkstra (networkx) over the same graph."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator

import networkx as nx
import pytest
import shapely
import sqlalchemy as sa
from fastapi.testclient import TestClient
from shapely.geometry import Point, shape

from gis_ioc import db, road_network, routing, service_areas
from gis_ioc.analysis import GEOD
from gis_ioc.catalog import Catalog
from gis_ioc.db_loop import LoopLane
from gis_ioc.errors import InvalidInput
from gis_ioc.settings import PROJECT_ROOT, Settings
from gis_ioc.web import deps
from gis_ioc.web import routing as web_routing
from gis_ioc.web.app import create_app
from gis_ioc.web.deps import HeavyLimit
from gis_ioc.web.direct import DirectRoutes

from .conftest import demo_copy

FIRE = "kind = 'fire_station'"


@pytest.fixture(scope="module")
def routed(server_url: str, demo_url: str) -> Iterator[tuple[sa.Engine, Catalog, str]]:
    """A copy of the demo with its road network made (these tests write the network's tables)."""
    with demo_copy(server_url, demo_url, f"gis_ioc_test_routing_{uuid.uuid4().hex[:8]}") as url:
        engine = db.make_engine(url, pool_size=2)
        catalog = Catalog.from_folder(PROJECT_ROOT / "layers", engine)
        routing.ensure(engine, catalog)
        yield engine, catalog, url
        engine.dispose()


def _graph(conn: sa.Connection) -> tuple[nx.DiGraph, dict[int, tuple[float, float]]]:
    """The same edges as a networkx graph: cost one way, reverse_cost the other (none when negative)."""
    graph: nx.DiGraph = nx.DiGraph()
    for e in conn.execute(sa.text("SELECT id, source, target, cost, reverse_cost, length_m FROM network_edges")):
        for a, b, cost in ((e.source, e.target, e.cost), (e.target, e.source, e.reverse_cost)):
            if cost >= 0 and (not graph.has_edge(a, b) or graph[a][b]["cost"] > cost):
                graph.add_edge(a, b, cost=cost, length=e.length_m)
    where = {int(v.id): (float(v.x), float(v.y)) for v in conn.execute(sa.text(
        "SELECT id, ST_X(geom) AS x, ST_Y(geom) AS y FROM network_vertices"))}
    return graph, where


def _drawn_as_driven(route: dict, road_m: float) -> None:
    """The route's road lines follow on from each other, start where it starts, and are as long as it says."""
    off = [p for p in route["properties"]["off_road"] if p["length_m"] > 0.5]
    lines = route["geometry"]["coordinates"][:len(route["geometry"]["coordinates"]) - len(off)]
    for before, after in zip(lines, lines[1:], strict=False):
        assert before[-1] == pytest.approx(after[0], abs=1e-6), (before[-1], after[0])
    drawn = sum(GEOD.line_length(*zip(*line, strict=True)) for line in lines)
    assert drawn == pytest.approx(road_m, rel=2e-3, abs=1.0)


def test_routes_equal_a_plain_dijkstra_over_the_same_graph(routed):
    engine, catalog, _ = routed
    rng = random.Random(20261201)
    with engine.connect() as conn:
        graph, where = _graph(conn)
        vertices = sorted(where)
        agreed = reachable = 0
        for _ in range(200):
            a, b = rng.sample(vertices, 2)
            found = routing.route(conn, catalog, where[a], where[b])["properties"]
            try:
                seconds = nx.dijkstra_path_length(graph, a, b, weight="cost")
                path = nx.dijkstra_path(graph, a, b, weight="cost")
            except nx.NetworkXNoPath:
                assert not found["reachable"], (a, b)
                agreed += 1
                continue
            assert found["reachable"], (a, b, found)
            metres = sum(graph[u][v]["length"] for u, v in zip(path, path[1:], strict=False))
            assert found["time_s"] == pytest.approx(seconds, rel=1e-3, abs=0.1), (a, b)
            assert found["length_m"] == pytest.approx(metres, rel=1e-3, abs=0.5), (a, b)
            _drawn_as_driven(routing.route(conn, catalog, where[a], where[b]), metres)
            agreed += 1
            reachable += 1
    assert agreed == 200 and reachable > 100


def test_a_one_way_road_is_driven_one_way_only(routed):
    engine, catalog, _ = routed
    with engine.connect() as conn:  # a commune road that ends where it starts: nowhere else to go from its end
        road = conn.execute(sa.text(
            "SELECT r.id, ST_X(ST_StartPoint(r.geom)) AS x0, ST_Y(ST_StartPoint(r.geom)) AS y0, "
            "ST_X(ST_EndPoint(r.geom)) AS x1, ST_Y(ST_EndPoint(r.geom)) AS y1 FROM infrastructure r "
            "WHERE r.kind = 'road' AND r.road_class = 'district' AND ST_Length(r.geom::geography) > 3000 "
            "AND (SELECT count(*) FROM network_edges e WHERE e.road_id = r.id::text) = 1 ORDER BY r.id LIMIT 1")).one()
        both = [routing.route(conn, catalog, (road.x0, road.y0), (road.x1, road.y1))["properties"]["reachable"],
                routing.route(conn, catalog, (road.x1, road.y1), (road.x0, road.y0))["properties"]["reachable"]]
    assert both == [True, True]
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE infrastructure SET oneway = true WHERE id = :i"), {"i": road.id})
    try:
        routing.ensure(engine, catalog)  # the road layer's version moved: the network is made again
        with engine.connect() as conn:
            along = routing.route(conn, catalog, (road.x0, road.y0), (road.x1, road.y1))["properties"]
            against = routing.route(conn, catalog, (road.x1, road.y1), (road.x0, road.y0))["properties"]
        assert along["reachable"] and not against["reachable"]
        assert "one-way" in against["reason"]
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE infrastructure SET oneway = NULL WHERE id = :i"), {"i": road.id})
        routing.ensure(engine, catalog)


def test_a_flyover_passes_over_the_street_below_without_a_junction(routed):
    """Issue 13: lines of different grade levels cross without meeting; they meet where an end lies on the other."""
    engine, catalog, _ = routed
    with engine.connect() as conn:
        fly = conn.execute(sa.text(
            "SELECT id, geom FROM infrastructure WHERE kind = 'road' AND grade_level = 1")).one()
        under = conn.execute(sa.text(  # the streets the flyover passes over: crossed away from its ends
            "SELECT r.id::text AS id, ST_AsText(ST_Intersection(r.geom, f.geom)) AS at FROM infrastructure r, "
            "infrastructure f WHERE f.id = :f AND r.kind = 'road' AND coalesce(r.grade_level, 0) = 0 "
            "AND ST_Intersects(r.geom, f.geom) AND NOT ST_Intersects(r.geom, ST_Boundary(f.geom))"),
            {"f": fly.id}).all()
        assert {r.at.startswith("POINT") for r in under} == {True} and len(under) >= 1
        vertices = lambda road_id: {int(v) for v in conn.execute(sa.text(  # noqa: E731
            "SELECT unnest(ARRAY[source, target]) FROM network_edges WHERE road_id = :r"), {"r": road_id}).scalars()}
        on_flyover = vertices(str(fly.id))
        for street in under:
            assert not on_flyover & vertices(street.id), street  # no junction where they cross
        ramps = conn.execute(sa.text(  # the streets its ends land on: cut there, so they meet
            "SELECT DISTINCT r.id::text FROM infrastructure r, infrastructure f WHERE f.id = :f AND r.id <> f.id "
            "AND r.kind = 'road' AND ST_Intersects(r.geom, ST_Boundary(f.geom))"), {"f": fly.id}).scalars().all()
        assert len(ramps) >= 2
        for street in ramps:
            assert on_flyover & vertices(street), street
        below = vertices(under[0].id)
        graph, _ = _graph(conn)
    # the street passed over is still reached from the flyover, by way of a ramp: the route goes round
    assert nx.has_path(graph, min(on_flyover), min(below))


def test_lines_of_two_levels_meet_only_at_a_vertex_both_have(routed):
    """A dead end under a bridge is not joined to the bridge; a ramp ending at one of a bridge's vertices is
    (within 0.2 m of it). ``network check`` lists the first kind, so a ramp drawn without the vertex is found."""
    engine, catalog, _ = routed
    bridge = "LINESTRING(107.95 14.30, 107.96 14.30, 107.97 14.30)"  # away from the demo's roads; a vertex at 107.96
    with engine.begin() as conn:
        ids = conn.execute(sa.text(
            "INSERT INTO infrastructure (kind, name, road_class, grade_level, geom) VALUES "
            "('road', 'Cầu thử', 'district', 1, ST_GeomFromText(:bridge, 4326)), "
            "('road', 'Đường cụt', 'district', 0, ST_GeomFromText('LINESTRING(107.955 14.29, 107.955 14.30)', 4326)),"
            "('road', 'Đường dẫn', 'district', 0, "
            "ST_GeomFromText('LINESTRING(107.96 14.31, 107.96 14.3000009)', 4326)),"
            "('road', 'Đường bờ', 'district', 0, ST_GeomFromText('LINESTRING(107.95 14.30, 107.95 14.29)', 4326)) "
            "RETURNING id::text"), {"bridge": bridge}).scalars().all()
    try:
        routing.ensure(engine, catalog)
        with engine.connect() as conn:
            def ends(road_id: str) -> set[int]:
                return {int(v) for v in conn.execute(sa.text(
                    "SELECT unnest(ARRAY[source, target]) FROM network_edges WHERE road_id = :r"),
                    {"r": road_id}).scalars()}
            on_bridge, dead_end, ramp, bank = (ends(i) for i in ids)
            assert not on_bridge & dead_end  # it ends under the bridge, where the bridge has no vertex
            assert on_bridge & ramp  # 0.1 m from the bridge's vertex: moved onto it, and cut there
            assert on_bridge & bank  # the bridge's own end
            assert len(on_bridge) == 3  # cut at the ramp, not under it at the dead end
            found = routing.check(conn, catalog)
        assert found["ends_on_other_levels"] >= 1
        assert [107.955, 14.3] in found["ends_on_other_levels_at"]
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM infrastructure WHERE id::text = ANY(:i)"), {"i": ids})
        routing.ensure(engine, catalog)


def test_tracks_drawn_to_nearly_the_same_spot_of_a_road_meet_there(routed):
    """Three tracks to one spot of a road: one ends on a vertex it makes, two 0.19 m along the road (the demo's
    Sa Nghĩa schools and health station). They meet the road at one vertex, with no sliver of road between."""
    engine, catalog, _ = routed
    tracks = [  # away from the demo's roads; the road has no vertex near 107.9650
        "LINESTRING(107.965 14.27, 107.96500000 14.26)",
        "LINESTRING(107.966 14.27, 107.96500186 14.26)",  # 1.86e-6° (0.19 m) east, on the road
        "LINESTRING(107.964 14.27, 107.96500186 14.26)",
    ]
    with engine.begin() as conn:
        ids = conn.execute(sa.text(
            "INSERT INTO infrastructure (kind, name, road_class, geom) VALUES "
            "('road', 'Đường thử', 'district', ST_GeomFromText('LINESTRING(107.96 14.26, 107.97 14.26)', 4326)), "
            + ", ".join(f"('road', 'Lối vào {i}', 'track', ST_GeomFromText('{t}', 4326))" for i, t in enumerate(tracks))
            + " RETURNING id::text")).scalars().all()
    try:
        routing.ensure(engine, catalog)
        with engine.connect() as conn:
            pieces = conn.execute(sa.text(
                "SELECT road_id, source, target, length_m FROM network_edges WHERE road_id = ANY(:i)"),
                {"i": ids}).all()
            found = routing.check(conn, catalog)
        road = [p for p in pieces if p.road_id == ids[0]]
        assert len(road) == 2 and min(p.length_m for p in road) > 500  # cut once, at the tracks' common vertex
        junction = {road[0].source, road[0].target} & {road[1].source, road[1].target}
        for track in ids[1:]:
            (piece,) = [p for p in pieces if p.road_id == track]  # whole: no sliver, no crossing of the others
            assert junction & {piece.source, piece.target}
        assert {"part": 2, "vertices": 6} in found["parts"]  # its own part, whole: the road's 3, the tracks' 3 others
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM infrastructure WHERE id::text = ANY(:i)"), {"i": ids})
        routing.ensure(engine, catalog)


def test_a_network_made_by_an_older_release_is_made_again(routed):
    """How a release makes the network is part of what it was made from: the roads unchanged, an older network
    (without this format) is stale, and the next routing call makes it again."""
    engine, catalog, _ = routed
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE network_state SET sources = sources - 'gis-ioc network format'"))
    with engine.connect() as conn:
        assert routing.stale(conn, catalog)
    routing.ensure(engine, catalog)
    with engine.connect() as conn:
        assert not routing.stale(conn, catalog)
        assert conn.execute(sa.text("SELECT sources->>'gis-ioc network format' FROM network_state")).scalar() \
            == str(road_network.BUILD_FORMAT)


def test_reach_holds_every_place_reached_in_time(routed):
    """Isochrone membership against single-source times, for 1,000 random places near the roads.

    The area is the roads reached within T and a walk of ``REACH_WALK_S`` around them (the boundary smoothing):
    a place whose time by road (its leg to the nearest road included) is at most T, and whose leg is within that
    walk, is inside; a place inside is within that walk of a road (plus the buffer's 5 m segment error).
    """
    engine, catalog, _ = routed
    rng = random.Random(7)
    with engine.connect() as conn:
        found = service_areas.reach(conn, catalog, "infrastructure", filter_text=FIRE, minutes=[20], by_commune=False)
        area = shape(found["features"][0]["geometry"])
        walk = found["walk_m"]
        stations = [(r.x, r.y) for r in conn.execute(sa.text(
            "SELECT ST_X(geom) AS x, ST_Y(geom) AS y FROM infrastructure WHERE kind = 'fire_station'"))]
        sources = sorted(c for s in found["sources"] for c in (s["lon"], s["lat"]))
        assert sources == pytest.approx(sorted(c for s in stations for c in s))
        assert found["facilities"] == len(stations) and all(s["on_network"] for s in found["sources"])
        lines = [shapely.from_wkb(bytes(r[0])) for r in conn.execute(sa.text(
            "SELECT ST_AsBinary(geom) FROM network_edges ORDER BY id"))]
        places = []
        for _ in range(1000):  # along a road, then up to 600 m off it
            line = rng.choice(lines)
            p = line.interpolate(rng.random(), normalized=True)
            places.append((p.x + rng.uniform(-0.0055, 0.0055), p.y + rng.uniform(-0.0055, 0.0055)))
        usable = []
        for place in places:
            try:
                routing.join(conn, [place], routing.settings_of(routing.sources(catalog, conn)))
                usable.append(place)
            except InvalidInput:
                continue
        times: list[float | None] = []
        for i in range(0, len(usable), 400):
            batch = usable[i:i + 400]
            matrix = routing.travel_matrix(conn, catalog, stations, batch)["seconds"]
            times += [min((row[j] for row in matrix if row[j] is not None), default=None) for j in range(len(batch))]
        network = shapely.MultiLineString(lines)
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    inside_checked = outside_checked = 0
    for place, seconds in zip(usable, times, strict=True):
        point = Point(place)
        near = shapely.ops.nearest_points(point, network)[1]
        off_m = geod.inv(place[0], place[1], near.x, near.y)[2]
        if seconds is not None and seconds <= 20 * 60 and off_m <= walk - 5:
            assert area.contains(point) or area.exterior.distance(point) < 1e-4 if area.geom_type == "Polygon" \
                else area.buffer(1e-4).contains(point), (place, seconds, off_m)
            inside_checked += 1
        if area.contains(point):
            assert off_m <= walk + 5, (place, off_m)
            outside_checked += 1
    assert inside_checked > 100 and outside_checked > 100


def test_the_nearest_stations_by_time_and_by_distance(routed):
    engine, catalog, _ = routed
    with engine.connect() as conn:
        incident = conn.execute(sa.text("SELECT id FROM incidents WHERE GeometryType(geom) = 'POINT' "
                                        "AND commune_code IS NOT NULL ORDER BY id LIMIT 1")).scalar_one()
        found = routing.nearest_by_time(conn, catalog, "infrastructure", filter_text=FIRE, incident=incident, k=3)
    minutes = [f["properties"]["minutes"] for f in found["features"]]
    assert minutes == sorted(minutes) and 1 <= len(minutes) <= 3
    for f in found["features"]:
        assert f["properties"]["road_m"] >= f["properties"]["straight_m"] * 0.99  # no road is shorter than a line
        assert f["geometry"]["type"] == "MultiLineString"
    assert found["nearest_by_distance"]["also_soonest"] == (found["nearest_by_distance"]["id"] ==
                                                             found["features"][0]["id"])


def test_the_soonest_stations_are_those_each_route_says(routed):
    """nearest_by_time's times and order equal a route from every fire station to the incident, one by one."""
    engine, catalog, _ = routed
    with engine.connect() as conn:
        stations = [(r.id, (r.x, r.y)) for r in conn.execute(sa.text(
            f"SELECT id, ST_X(ST_PointOnSurface(geom)) AS x, ST_Y(ST_PointOnSurface(geom)) AS y "
            f"FROM infrastructure WHERE {FIRE}"))]
        incidents = conn.execute(sa.text(
            "SELECT id, ST_X(geom) AS x, ST_Y(geom) AS y FROM incidents WHERE GeometryType(geom) = 'POINT' "
            "AND EXISTS (SELECT 1 FROM network_edges e WHERE ST_DWithin(e.geom, incidents.geom, 0.02)) "
            "ORDER BY id LIMIT 12")).all()
        assert len(stations) >= 3 and len(incidents) == 12
        for incident in incidents:
            found = routing.nearest_by_time(conn, catalog, "infrastructure", filter_text=FIRE, incident=incident.id,
                                            k=3)
            each = {sid: routing.route(conn, catalog, at, (incident.x, incident.y))["properties"]
                    for sid, at in stations}
            times = sorted(p["time_s"] for p in each.values() if p["reachable"])
            assert [f["properties"]["time_s"] for f in found["features"]] == pytest.approx(times[:3], abs=0.2)
            for f in found["features"]:
                alone = each[f["id"]]
                assert f["properties"]["road_m"] == pytest.approx(alone["length_m"], abs=0.5)
                _drawn_as_driven({"geometry": f["geometry"], "properties": f["properties"]},
                                 alone["length_m"] - sum(p["length_m"] for p in alone["off_road"]))


def test_bad_routing_requests_are_400s_naming_the_parameter(routed):
    _, _, url = routed
    with TestClient(create_app(Settings(database_url=url, warm_tiles=False, tile_cache=False))) as client:
        cases = [
            ("/analysis/route?from=108.0,14.35&to=109.5,14.5", "to", "m from the nearest road"),
            ("/analysis/route?from=abc&to=108.0,14.35", "from", "is not lon,lat"),
            ("/analysis/route?from=108.0,14.35&to=108.0,14.36&via=" + ";".join(["108.0,14.35"] * 9), "via", "at most"),
            ("/analysis/nearest-by-time?layer=infrastructure&lon=108&lat=14.35&k=11", "k", ""),
            ("/analysis/nearest-by-time?layer=nope&lon=108&lat=14.35", "layer", ""),
            ("/analysis/nearest-by-time?layer=infrastructure&incident=987654321", "incident", "no incident 987654321"),
            ("/analysis/nearest-by-time?layer=infrastructure&lon=108", "lon", "give a point"),
            ("/analysis/nearest-by-time?layer=infrastructure&lon=109.5&lat=14.5", "lon", "m from the nearest road"),
            ("/analysis/reach?layer=infrastructure&filter=kind%20%3D%20'fire_station'&minutes=500", "minutes", ""),
            ("/analysis/reach?layer=infrastructure&minutes=ten", "minutes", ""),
            ("/analysis/travel-matrix?origins=" + ";".join(["108.0,14.35"] * 51) + "&destinations="
             + ";".join(["108.0,14.35"] * 50), "destinations", "pairs"),
        ]
        for path, param, words in cases:
            answer = client.get(path)
            assert answer.status_code == 400, (path, answer.text)
            assert answer.json()["parameter"] == param and words in answer.json()["description"], answer.json()
        good = client.get("/analysis/route?from=108.003,14.35&to=107.995,14.36&depart_at=2026-12-01T08:00:00Z")
        assert good.status_code == 200 and good.json()["properties"]["reachable"], good.text
        assert good.json()["properties"]["eta"].startswith("2026-12-01T08:")
        check = client.get("/analysis/network").json()
        assert check["edges"] > 0 and check["parts"][0]["vertices"] > 0


def test_a_route_is_one_statement_and_a_via_route_is_its_legs(routed):
    """The database joins, routes and writes a route in one statement; through a via point it is the two legs."""
    engine, catalog, _ = routed
    a, v, b = (108.003, 14.35), (108.0, 14.355), (107.995, 14.36)
    heard: list[str] = []

    def listen(conn, cursor, statement, parameters, context, many):
        heard.append(statement)

    with engine.connect() as conn:
        sa.event.listen(engine, "before_cursor_execute", listen)
        try:
            through = routing.route(conn, catalog, a, b, [v])
            text = routing.route_json(conn, catalog, a, b, [v])
        finally:
            sa.event.remove(engine, "before_cursor_execute", listen)
        legs = [routing.route(conn, catalog, a, v)["properties"], routing.route(conn, catalog, v, b)["properties"]]
    assert len(heard) == 2 and "pgr_withPoints" in heard[0]  # one statement each
    assert json.loads(text) == through
    props = through["properties"]
    assert props["reachable"] and [p["point"] for p in props["off_road"]] == ["from", "via", "to"]
    assert props["time_s"] == pytest.approx(sum(p["time_s"] for p in legs), abs=0.2)
    assert props["length_m"] == pytest.approx(sum(p["length_m"] for p in legs), abs=0.2)
    assert sum(s["length_m"] for s in props["steps"]) == pytest.approx(
        props["length_m"] - sum(p["length_m"] * (2 if p["point"] == "via" else 1) for p in props["off_road"]), abs=1)
    _drawn_as_driven(through, sum(p["length_m"] for p in legs) - sum(
        p["length_m"] for leg in legs for p in leg["off_road"]))


def test_routes_by_road_skip_the_router_with_the_same_answers(routed, monkeypatch):
    """The direct path (gis_ioc.web.direct) answers keyless GETs with a valid query exactly as the routes do.

    Routes and the nearest by time run on the event loop (gis_ioc.db_loop), with the same answers as in a worker
    thread (the lane off). Anything else (a key, private reads, a query its model refuses) goes to the routes;
    the heavy-work limit holds for it too.
    """
    _, _, url = routed
    settings = Settings(database_url=url, warm_tiles=False, tile_cache=False)
    taken: list[str] = []
    chosen = DirectRoutes._direct

    def spy(self, scope):
        found = chosen(self, scope)
        if found is not None:
            taken.append(scope["path"])
        return found

    monkeypatch.setattr(DirectRoutes, "_direct", spy)
    on_loop: list[bool] = []  # each statement the loop lane was asked for: answered there (or handed back)
    lane_run = LoopLane.run

    async def lane_spy(self, sql, params):
        found = await lane_run(self, sql, params)
        on_loop.append(found is not None)
        return found

    monkeypatch.setattr(LoopLane, "run", lane_spy)
    paths = [
        "/analysis/route?from=108.003,14.35&to=107.995,14.36&depart_at=2026-12-01T08:00:00Z",
        "/analysis/route?from=108.003,14.35&to=107.995,14.36&via=108.0,14.355",
        f"/analysis/nearest-by-time?layer=infrastructure&filter={FIRE}&lon=108.003&lat=14.35&k=2",
        "/analysis/nearest-by-time?layer=infrastructure&filter=kind%3D'hospital'&incident=1",
        f"/analysis/reach?layer=infrastructure&filter={FIRE}&minutes=5,10&by_commune=false",
        "/analysis/travel-matrix?origins=108.003,14.35;107.995,14.36&destinations=108.0,14.355",
    ]
    with TestClient(create_app(settings)) as client:
        direct = [client.get(p) for p in paths]
        assert taken == [p.split("?")[0] for p in paths]
        assert on_loop == [True] * 4  # the routes and the nearest by time: on the event loop
        assert direct[4].headers["content-encoding"] == "gzip" and direct[4].headers["x-request-id"]  # the areas
        assert client.get("/analysis/route?from=108.003,14.35&to=107.995,14.36&k=x").status_code == 200
        taken.clear()
        refused = client.get("/analysis/nearest-by-time?layer=infrastructure&lon=108&lat=14.35&k=11")
        assert refused.status_code == 400 and refused.json()["parameter"] == "k"
        keyed = client.get(paths[0], headers={"X-API-Key": "not-a-key"})
        assert keyed.status_code == 401 and taken == []  # the key went to the routes' dependencies
        client.app.state.heavy = HeavyLimit(0)  # every heavy place taken
        monkeypatch.setattr(deps, "HEAVY_WAIT_S", 0.1)
        busy = client.get(paths[0])
        assert busy.status_code == 503 and "heavy" in busy.json()["description"] and taken == [paths[0][:15]]
    direct_routes, lane_calls = web_routing.DIRECT, len(on_loop)
    monkeypatch.setattr(web_routing, "DIRECT", {})
    with TestClient(create_app(settings)) as client:
        routed_answers = [client.get(p) for p in paths]
    assert taken == [paths[0][:15]]  # the app without the direct path took none
    monkeypatch.setattr(web_routing, "DIRECT", direct_routes)
    with TestClient(create_app(settings.model_copy(update={"loop_lane": False}))) as client:
        threaded = [client.get(p) for p in paths[:4]]
    assert len(on_loop) == lane_calls  # the lane was off: worker threads answered
    for p, a, b in zip(paths, threaded, routed_answers, strict=False):
        assert (a.status_code, a.json()) == (b.status_code, b.json()), p
    for p, a, b in zip(paths, direct, routed_answers, strict=True):
        assert (a.status_code, a.headers["content-type"]) == (b.status_code, b.headers["content-type"]) == (
            200, b.headers["content-type"]), (p, a.text[:200], b.text[:200])
        assert a.json() == b.json(), p
    with TestClient(create_app(Settings(database_url=url, warm_tiles=False, tile_cache=False,
                                        public_read=False))) as client:
        assert client.get(paths[0]).status_code == 401


def test_the_demo_network_holds_together(routed):
    """Issue 13: the demo's roads are one network; no place is cut off by one-way streets; every facility is on it."""
    engine, catalog, _ = routed
    with engine.connect() as conn:
        found = routing.check(conn, catalog)
        one_way = conn.execute(sa.text("SELECT count(*) FROM network_edges WHERE reverse_cost < 0")).scalar_one()
    assert len(found["parts"]) == 1 and found["one_way_traps"] == 0, found["parts"]
    assert found["facilities_unreachable"] == []
    assert one_way >= 4  # Kon Tum city's one-way streets, a piece per block


def test_the_cli_routes_and_says_what_is_wrong_in_one_line(routed, run_cli, tmp_path):
    _, _, url = routed
    env = {"GIS_IOC_DATABASE_URL": url, "GIS_IOC_HOME": str(tmp_path)}
    code, out, err = run_cli("query", "route", "108.003,14.35", "107.995,14.36", env=env)
    assert code == 0 and " min, " in out and " km" in out, err
    code, out, err = run_cli("query", "nearest-by-time", "--filter", FIRE, "--to", "108.003,14.35", env=env)
    assert code == 0 and "minutes" in out, err
    code, out, err = run_cli("network", "check", env=env)
    assert code == 0 and "1 part(s)" in out, out + err
    code, out, err = run_cli("query", "matrix", "108.003,14.35", "109.5,14.5", env=env)
    assert code == 2 and err.count("\n") == 1 and "destinations: the point 109.50000,14.50000 is" in err, err
