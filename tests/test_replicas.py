"""Read replicas and failover on a real primary and streaming standby (``pg_basebackup -R``).

The module makes a primary cluster of its own with the small demo province, copies it into a hot standby,
and serves the app with ``GIS_IOC_REPLICA_URLS`` naming the standby and ``GIS_IOC_DATABASE_URL`` naming both
hosts (``target_session_attrs=read-write``). The last test kills the primary and promotes the standby.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from gis_ioc import db, tiles
from gis_ioc.catalog import Catalog
from gis_ioc.replicas import lsn
from gis_ioc.replication import ReplicaPair
from gis_ioc.settings import PROJECT_ROOT, Settings
from gis_ioc.tile_cache import TileCache
from gis_ioc.web.app import create_app
from tests.factories import CITY

INCIDENT = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [CITY[0] + 0.002, CITY[1]]},
            "properties": {"type": "fire", "severity": "severe", "title": "Cháy kho", "source": "114"}}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaPair]:
    made = ReplicaPair(tmp_path_factory.mktemp("replication"))
    try:
        made.make()
        yield made
    finally:
        made.remove()


@pytest.fixture(scope="module")
def client(pair: ReplicaPair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(database_url=pair.failover_url, replica_urls=pair.standby_url,
                        home=tmp_path_factory.mktemp("home"), warm_tiles=False)
    with TestClient(create_app(settings)) as c:
        yield c


def _reads(client: TestClient) -> tuple[int, int]:
    """Reads answered by the primary and by the standby so far."""
    reads = client.app.state.reads  # type: ignore[attr-defined]
    return reads.reads["primary"], sum(v for k, v in reads.reads.items() if k != "primary")


def _wait(predicate: Any, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_reads_go_to_the_standby_once_it_has_replayed_and_health_says_so(client: TestClient, pair: ReplicaPair) -> None:
    assert _wait(lambda: client.get("/health").json()["replicas"][0]["reading"])
    health = client.get("/health").json()
    assert health["replicas"][0]["standby"] is True and health["replicas"][0]["lag_ms"] is not None
    assert "127.0.0.1" not in str(health)  # no connection details
    primary_before, standby_before = _reads(client)
    for path in ("/collections/incidents/items?limit=5", "/analysis/locate?lon=108.003&lat=14.35",
                 "/tiles/incidents/12/3276/1882.mvt", "/collections/cameras"):
        assert client.get(path).status_code == 200, path
    primary_after, standby_after = _reads(client)
    assert standby_after - standby_before == 4 and primary_after == primary_before


def test_a_client_reads_its_own_write_at_once_and_a_lagging_standby_is_passed_over(client: TestClient,
                                                                                  pair: ReplicaPair) -> None:
    headers = {"X-API-Key": pair.key}
    for _ in range(10):  # each read right after its write finds it (standby caught up, or the primary)
        made = client.post("/collections/incidents/items", json=INCIDENT, headers=headers)
        assert made.status_code == 201, made.text
        assert client.get(made.headers["Location"].replace("http://testserver", "")).status_code == 200
    pair.sql(pair.standby_url, "SELECT pg_wal_replay_pause()")
    try:
        made = client.post("/collections/incidents/items", json=INCIDENT, headers=headers)
        assert made.status_code == 201
        primary_before, standby_before = _reads(client)
        found = client.get(made.headers["Location"].replace("http://testserver", ""))
        assert found.status_code == 200  # from the primary: the standby has not replayed the write
        assert _reads(client) == (primary_before + 1, standby_before)
        assert client.get("/health").json()["replicas"][0]["reading"] is False
    finally:
        pair.sql(pair.standby_url, "SELECT pg_wal_replay_resume()")
    assert _wait(lambda: client.get("/health").json()["replicas"][0]["reading"])
    _, standby_before = _reads(client)
    assert client.get(made.headers["Location"].replace("http://testserver", "")).status_code == 200
    assert _reads(client)[1] == standby_before + 1


def test_a_tile_made_on_a_lagging_standby_is_keyed_by_the_version_the_standby_has(pair: ReplicaPair,
                                                                                 tmp_path: Path) -> None:
    pair.sql(pair.standby_url, "SELECT pg_wal_replay_pause()")
    standby = db.make_engine(pair.standby_url, pool_size=1)
    try:
        versions = "SELECT version FROM layer_versions WHERE table_name = 'public.incidents'"
        (before,) = pair.sql(pair.standby_url, versions)
        pair.sql(pair.primary_url,
                 "UPDATE incidents SET title = title || ' (đã cập nhật)' WHERE id = (SELECT min(id) FROM incidents)")
        (after,) = pair.sql(pair.primary_url, versions)
        assert before is not None and after is not None, (before, after)
        assert after[0] > before[0]
        catalog = Catalog.from_folder(PROJECT_ROOT / "layers", standby)
        cache = TileCache(tmp_path / "tiles")
        known = {catalog.builtin["incidents"].table: after[0]}  # what the listener heard from the primary
        with standby.connect() as conn:
            made = tiles.get_tile(conn, catalog, cache, "incidents", 12, 3276, 1882, {}, known, rebuild=False)
        layers = [catalog.builtin["incidents"]]
        assert made.etag and made.data  # the demo's incidents around the city
        assert cache.get(tiles.tile_key(layers, 12, 3276, 1882, {}, [after[0]])) is None
        assert cache.get(tiles.tile_key(layers, 12, 3276, 1882, {}, [before[0]])) is not None
    finally:
        standby.dispose()
        pair.sql(pair.standby_url, "SELECT pg_wal_replay_resume()")


def test_the_primary_dies_reads_go_on_the_standby_is_promoted_and_writes_resume(client: TestClient,
                                                                                 pair: ReplicaPair) -> None:
    headers = {"X-API-Key": pair.key}
    acknowledged = []
    for _ in range(5):
        made = client.post("/collections/incidents/items", json=INCIDENT, headers=headers)
        assert made.status_code == 201
        acknowledged.append(made.json()["id"])
    pair.primary.kill()
    time.sleep(2 * 0.2 + 0.5)  # the replica check notices
    for _ in range(5):  # reads keep being answered, by the standby
        assert client.get("/collections/incidents/items?limit=3").status_code == 200
        assert client.get("/tiles/incidents/11/1638/941.mvt").status_code == 200
    refused = client.post("/collections/incidents/items", json=INCIDENT, headers=headers)
    assert refused.status_code in (502, 503), refused.text
    promoted_at = time.monotonic()
    pair.standby.promote()
    first_write = None
    while time.monotonic() - promoted_at < 30:
        made = client.post("/collections/incidents/items", json=INCIDENT, headers=headers)
        if made.status_code == 201:
            first_write = time.monotonic() - promoted_at
            acknowledged.append(made.json()["id"])
            break
        time.sleep(0.1)
    assert first_write is not None and first_write <= 5, first_write
    listener = client.app.state.listener  # type: ignore[attr-defined]
    assert _wait(lambda: listener.connections >= 2)  # listening again, on the promoted standby
    assert any(change.op == "reload" for change in listener._recent)  # the wall reloads once
    ids = {row[0] for row in _all_ids(pair.standby_url)}
    assert set(acknowledged) <= ids  # nothing acknowledged was lost
    assert lsn(pair.sql(pair.standby_url, "SELECT pg_current_wal_lsn()::text")[0][0]) > 0


def _all_ids(url: str) -> list[Any]:
    engine = db.make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT id FROM incidents")))
    finally:
        engine.dispose()
