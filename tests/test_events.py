"""Live changes: a write to incidents reaches an open /events stream, with the new feature."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from gis_ioc import auth, db, ingest, limits
from gis_ioc.catalog import Catalog
from gis_ioc.events import Change, _offer
from gis_ioc.settings import PROJECT_ROOT

from .conftest import served
from .factories import sample, write


@pytest.fixture
def server(db_url: str, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with served(db_url, tmp_path / "home") as url:
        yield url


def _events(url: str, count: int, action, headers=None, seconds: float = 10,  # type: ignore[no-untyped-def]
            query: str = "") -> list[dict]:  # type: ignore[type-arg]
    """Open the stream, run ``action`` once it is subscribed, and collect ``count`` change events (bounded in time).

    A fresh stream says it is subscribed with its opening ``hello``; one that resumes (``Last-Event-ID``) opens
    with what it missed, so its action runs at once.
    """
    found: list[dict] = []  # type: ignore[type-arg]
    resuming = "Last-Event-ID" in (headers or {}) or "since=" in query
    with httpx.stream("GET", f"{url}/events{query}", headers=headers or {}, timeout=seconds) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        if resuming:
            action()
        event: dict = {}  # type: ignore[type-arg]
        deadline = time.monotonic() + seconds
        for line in response.iter_lines():
            if line.startswith("id:"):
                event["id"] = line[3:].strip()
            elif line.startswith("event:"):
                event["event"] = line[6:].strip()
            elif line.startswith("data:"):
                event["data"] = json.loads(line[5:].strip())
            elif not line and "data" in event:
                if event.get("event") == "change":
                    found.append(event)
                elif event.get("event") == "hello" and not resuming:
                    action()  # subscribed: what happens from now on reaches this stream
                event = {}
                if len(found) >= count:
                    break
            assert time.monotonic() < deadline, "no event in time"
    return found


def test_a_new_incident_reaches_the_stream(server, engine):
    key = auth.create_key(engine, "desk", "operator")
    body = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [108.003, 14.35]},
            "properties": {"type": "fire", "severity": "severe", "title": "Cháy chợ", "source": "114"}}

    def post() -> None:
        r = httpx.post(f"{server}/collections/incidents/items", json=body, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 201

    started = time.monotonic()
    (event,) = _events(server, 1, post)
    assert time.monotonic() - started < 5
    data = event["data"]
    assert (data["layer"], data["op"]) == ("incidents", "insert")
    assert data["feature"]["properties"]["title"] == "Cháy chợ"


def test_updates_deletes_bulk_loads_and_resuming(server, engine, tmp_path):
    with engine.begin() as conn:
        cam = conn.execute(sa.text("INSERT INTO cameras (name, geom) VALUES ('c', "
                                   "ST_SetSRID(ST_MakePoint(108, 14.35), 4326)) RETURNING id")).scalar()

    def changes() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE cameras SET status = 'offline' WHERE id = :i"), {"i": cam})
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM cameras WHERE id = :i"), {"i": cam})
        catalog = Catalog.from_folder(PROJECT_ROOT / "layers", engine)
        ingest.load(engine, catalog, write(sample("cameras"), "gpkg", tmp_path), "cameras")

    events = _events(server, 3, changes)
    assert [(e["data"]["op"], e["data"]["id"]) for e in events] == [("update", cam), ("delete", cam),
                                                                     ("reload", None)]
    assert events[0]["data"]["feature"]["properties"]["status"] == "offline"
    assert events[1]["data"]["feature"]["id"] == cam  # a delete says what was deleted
    # a browser that reconnects with Last-Event-ID gets what it missed, in order
    resumed = _events(server, 2, lambda: None, headers={"Last-Event-ID": events[0]["id"]})
    assert [e["id"] for e in resumed] == [events[1]["id"], events[2]["id"]]
    # an id from before a restart (another process) cannot be replayed: the client is told to reload
    number = events[0]["id"].partition(".")[2]
    (reload,) = _events(server, 1, lambda: None, headers={"Last-Event-ID": f"0000beef.{number}"})
    assert (reload["data"]["layer"], reload["data"]["op"]) == ("*", "reload")
    # a page says which change it was made after (?since=, a page cannot set the header): it hears the rest
    resumed = _events(server, 2, lambda: None, query=f"?since={events[0]['id']}")
    assert [e["id"] for e in resumed] == [events[1]["id"], events[2]["id"]]
    # a page made by another worker process: a plain start (no reload, or pages would reload between workers)

    def another() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO cameras (name, geom) VALUES ('d', "
                                 "ST_SetSRID(ST_MakePoint(108, 14.35), 4326))"))

    (fresh,) = _events(server, 1, another, query=f"?since=0000beef.{number}")
    assert (fresh["data"]["layer"], fresh["data"]["op"]) == ("cameras", "insert")
    bad = httpx.get(f"{server}/events", params={"since": "x" * 101}, timeout=10)
    assert bad.status_code == 400 and "since" in bad.text


@pytest.mark.parametrize("view", ["wall", "desk"])
def test_a_change_between_serving_a_kept_page_and_its_stream_is_heard(server, engine, view):
    """The wall and the desk are kept pages (made once per version of the boundaries), served with the id of the
    last change heard then: their stream starts there, so a change made before it connects is not missed."""
    first = httpx.get(f"{server}/views/{view}", timeout=30).text
    since = re.search(r'"since": "([^"]+)"', first)
    assert since is not None and "gis-ioc:since" not in first
    served = re.search(r'"versions": (\{[^}]*\})', first)  # for a stream on another process (several workers)
    assert served is not None and "public.cameras" in json.loads(served.group(1))
    with httpx.stream("GET", f"{server}/events", timeout=10) as fresh:  # whose hello says the versions it heard
        hello = next(json.loads(line[5:]) for line in fresh.iter_lines() if line.startswith("data:"))
    assert hello["versions"] == json.loads(served.group(1))
    with engine.begin() as conn:
        cam = conn.execute(sa.text("INSERT INTO cameras (name, geom) VALUES ('giữa', "
                                   "ST_SetSRID(ST_MakePoint(108, 14.35), 4326)) RETURNING id")).scalar()
    (missed,) = _events(server, 1, lambda: None, query=f"?since={since.group(1)}")
    assert (missed["data"]["layer"], missed["data"]["op"], missed["data"]["id"]) == ("cameras", "insert", cam)
    deadline = time.monotonic() + 10  # the page served after the change carries a later id (the same kept page)
    while (later := re.search(r'"since": "([^"]+)"', httpx.get(f"{server}/views/{view}", timeout=30).text)
           ).group(1) == since.group(1) and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.05)
    assert later is not None and int(later.group(1).partition(".")[2]) > int(since.group(1).partition(".")[2])


def test_infrastructure_changes_reach_the_stream(server, engine):
    """Migration 024: a fire station opened or closed is heard (the wall redraws, incident views are made again)."""
    def changes() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO infrastructure (kind, name, geom) VALUES ('fire_station', "
                                 "'Đội PCCC Đắk Hà', ST_SetSRID(ST_MakePoint(107.92, 14.52), 4326))"))
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM infrastructure WHERE name = 'Đội PCCC Đắk Hà'"))

    inserted, deleted = _events(server, 2, changes)
    assert (inserted["data"]["layer"], inserted["data"]["op"]) == ("infrastructure", "insert")
    assert inserted["data"]["feature"]["properties"]["kind"] == "fire_station"
    assert (deleted["data"]["layer"], deleted["data"]["op"], deleted["data"]["id"]) == (
        "infrastructure", "delete", inserted["data"]["id"])
    assert deleted["data"]["feature"]["properties"]["name"] == "Đội PCCC Đắk Hà"  # what went (migration 026)

    def then_an_incident() -> None:
        changes()
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO incidents (type, severity, title, source, geom) VALUES ('fire', "
                                 "'minor', 'Cháy rác', '114', ST_SetSRID(ST_MakePoint(108.0, 14.35), 4326))"))

    # a client that asks for incidents only does not hear of it: the incident is the first it hears
    (first,) = _events(server, 1, then_an_incident, query="?layers=incidents")
    assert (first["data"]["layer"], first["data"]["feature"]["properties"]["title"]) == ("incidents", "Cháy rác")


def test_unknown_live_layer(server):
    response = httpx.get(f"{server}/events?layers=bridges")
    assert response.status_code == 400 and response.json()["parameter"] == "layers"


def test_the_listener_survives_a_lost_connection(db_url, engine):
    from gis_ioc.events import ChangeListener, wait_connected

    listener = ChangeListener(db_url)
    listener.start()
    try:
        assert wait_connected(listener)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE query LIKE 'LISTEN%' OR (datname = current_database() AND pid <> "
                                 "pg_backend_pid() AND application_name = '')"))
            conn.commit()
        import asyncio

        loop = asyncio.new_event_loop()
        subscriber = listener.subscribe(loop).subscriber
        deadline = time.monotonic() + 20
        while listener.connections < 2:
            assert time.monotonic() < deadline, "the listener did not listen again"
            time.sleep(0.1)
        reload = loop.run_until_complete(asyncio.wait_for(subscriber.queue.get(), 10))
        assert (reload.layer, reload.op) == ("*", "reload")  # what happened while away was not heard
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO cameras (name, geom) VALUES ('after', "
                                 "ST_SetSRID(ST_MakePoint(108, 14.35), 4326))"))
        change = loop.run_until_complete(asyncio.wait_for(subscriber.queue.get(), 10))
        assert change.layer == "cameras" and change.op == "insert"
        loop.close()
    finally:
        listener.stop()


def test_the_listener_hears_every_change_of_a_burst(db_url, engine):
    """Changes that reach the listener while it asks the database for its WAL position (after each one it hears)
    are read off the socket with that answer; they must be handed on then, not when the next change comes."""
    import asyncio

    from gis_ioc.events import ChangeListener, wait_connected

    listener = ChangeListener(db_url)
    listener.start()
    loop = asyncio.new_event_loop()
    try:
        assert wait_connected(listener)
        subscriber = listener.subscribe(loop).subscriber
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            for i in range(60):  # one transaction each, as fast as they come
                conn.execute(sa.text("SELECT pg_notify('gis_ioc_changes', :m)"),
                             {"m": json.dumps({"layer": "cameras", "op": "update", "id": i})})

        async def heard() -> list[int]:
            return [(await subscriber.queue.get()).id for _ in range(60)]

        assert loop.run_until_complete(asyncio.wait_for(heard(), 10)) == list(range(60))
    finally:
        loop.close()
        listener.stop()


def test_migrations_include_the_change_triggers(engine):
    assert db.pending_migrations(engine, PROJECT_ROOT / "db") == []


def test_a_long_description_reaches_many_walls_cut_to_a_popups_worth(server, engine):
    key = auth.create_key(engine, "desk-long", "operator")
    description = "Mô tả " * 3_000  # 18,000 characters: within what a layer keeps, far over what a wall shows
    body = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [108.003, 14.35]},
            "properties": {"type": "fire", "severity": "severe", "title": "Cháy kho", "source": "114",
                           "description": description}}
    walls, subscribed, seen = 8, threading.Barrier(9, timeout=20), []

    def wall() -> None:
        seen.extend(_events(server, 1, subscribed.wait))

    threads = [threading.Thread(target=wall) for _ in range(walls)]
    for thread in threads:
        thread.start()
    subscribed.wait()  # every wall has its hello: the write reaches them all
    r = httpx.post(f"{server}/collections/incidents/items", json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 201, r.text
    for thread in threads:
        thread.join(timeout=30)
    assert len(seen) == walls
    for event in seen:
        shown = event["data"]["feature"]["properties"]["description"]
        assert shown == description[:limits.EVENT_TEXT_CHARS] + "…"
    whole = httpx.get(f"{server}/collections/incidents/items/{seen[0]['data']['id']}").json()
    assert whole["properties"]["description"] == description


def test_a_client_a_whole_queue_behind_is_told_to_reload():
    import asyncio

    queue: asyncio.Queue[Change] = asyncio.Queue(maxsize=3)
    for seq in range(1, 4):
        _offer(queue, Change(seq, "incidents", "update", seq))
    _offer(queue, Change(4, "incidents", "update", 4))
    assert queue.qsize() == 1
    assert queue.get_nowait() == Change(4, "*", "reload")
