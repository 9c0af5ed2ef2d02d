"""Faults: PostgreSQL restarted under mixed load, a load killed with SIGKILL, the server killed with SIGKILL.

These run on a PostgreSQL cluster of their own (restarting the suite's shared one would disturb other
tests): nothing acknowledged may be lost, nothing half-written may stay, errors meanwhile are 503 JSON
with Retry-After, and the service is back within two seconds of its database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace

import httpx
import pytest
import sqlalchemy as sa

from gis_ioc import auth, db, demo
from gis_ioc.catalog import Catalog
from gis_ioc.cluster import PrivateCluster
from gis_ioc.settings import PROJECT_ROOT

from .conftest import free_port, served, table_snapshot
from .factories import CITY, sample, write


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    home = tmp_path_factory.mktemp("faults")
    cluster = PrivateCluster(home / "pg")
    url = cluster.ensure_running()
    engine = db.make_engine(url, pool_size=2)
    db.migrate(engine, PROJECT_ROOT / "db")
    demo.load_demo(engine, Catalog.from_folder(PROJECT_ROOT / "layers", engine), scale=0.05,
                   ref_time=datetime(2026, 11, 28, 8, tzinfo=UTC))
    key = auth.create_key(engine, "faults-operator", "operator")
    try:
        yield SimpleNamespace(cluster=cluster, url=url, engine=engine, key=key, home=home)
    finally:
        engine.dispose()
        cluster.remove()  # stopped and deleted: its folder may be under /var/lib/gis-ioc (root's fallback)


@dataclass
class Traffic:
    """Writers and readers against a served process, with what each answer was."""

    base: str
    key: str
    stop: threading.Event = field(default_factory=threading.Event)
    acknowledged: list[int] = field(default_factory=list)
    answers: list[tuple[float, str, int, dict]] = field(default_factory=list)  # (time, kind, status, body)
    threads: list[threading.Thread] = field(default_factory=list)

    def _record(self, kind: str, response: httpx.Response | None) -> None:
        if response is None:
            self.answers.append((time.monotonic(), kind, 0, {}))
            return
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        self.answers.append((time.monotonic(), kind, response.status_code, body | {
            "retry-after": response.headers.get("retry-after")}))

    def write(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30, headers={"Authorization": f"Bearer {self.key}"}) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                feature = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [CITY[0] + n * 1e-5,
                                                                                            CITY[1]]},
                           "properties": {"type": "traffic_accident", "title": f"fault {n}", "source": "app"}}
                try:
                    response = client.post("/collections/incidents/items", json=feature)
                except httpx.HTTPError:
                    self._record("write", None)
                    continue
                self._record("write", response)
                if response.status_code == 201:
                    self.acknowledged.append(int(response.json()["id"]))
                time.sleep(0.02)

    def read(self, path: str) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    self._record(path, client.get(path))
                except httpx.HTTPError:
                    self._record(path, None)
                time.sleep(0.02)

    def start(self) -> None:
        self.threads = [threading.Thread(target=self.write)] + [
            threading.Thread(target=self.read, args=(p,)) for p in (
                "/collections/incidents/items?limit=50", "/tiles/incidents/12/3276/1882.mvt?datetime=2026-11-01/..",
                f"/analysis/nearest?layer=cameras&lon={CITY[0]}&lat={CITY[1]}")]
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def test_postgresql_restarted_under_load_loses_nothing_and_comes_back_fast(own_cluster, tmp_path):
    with served(own_cluster.url, tmp_path / "home", log=tmp_path / "server.log") as base:
        traffic = Traffic(base, own_cluster.key)
        traffic.start()
        time.sleep(2)
        down_at = time.monotonic()
        own_cluster.cluster.stop()
        time.sleep(1.5)
        while_down = httpx.get(f"{base}/collections/incidents/items?limit=5", timeout=30)
        own_cluster.cluster.ensure_running()
        back_at = time.monotonic()
        time.sleep(4)
        traffic.finish()
        assert httpx.get(f"{base}/health", timeout=10).status_code == 200
    assert while_down.status_code == 503 and while_down.headers["retry-after"]
    assert while_down.json()["code"] in ("database_unavailable", "busy", "timeout")
    statuses = {status for _, _, status, _ in traffic.answers}
    assert statuses <= {200, 201, 503}, sorted(statuses)
    for moment, _, status, body in traffic.answers:
        if status == 503:
            assert body["retry-after"] and body["code"] in ("database_unavailable", "busy", "timeout")
            assert down_at - 1 <= moment <= back_at + 2  # errors only while the database is away
    # every kind of request succeeds again within 2 s of the database being back
    for kind in {k for _, k, _, _ in traffic.answers}:
        after = [(t, s) for t, k, s, _ in traffic.answers if k == kind and t >= back_at]
        first_ok = next(t for t, s in after if s in (200, 201))
        assert first_ok - back_at <= 2.0, (kind, first_ok - back_at)
    with own_cluster.engine.connect() as conn:
        stored = set(conn.execute(sa.text("SELECT id FROM incidents WHERE id = ANY(:ids)"),
                                  {"ids": traffic.acknowledged}).scalars())
    assert traffic.acknowledged and stored == set(traffic.acknowledged)  # no acknowledged write lost
    assert "Traceback" not in (tmp_path / "server.log").read_text(errors="replace")


def test_a_load_killed_with_sigkill_leaves_the_layer_as_it_was(own_cluster, tmp_path):
    frame = sample("cameras")
    big = frame.loc[frame.index.repeat(40_000)].reset_index(drop=True)  # 120,000 rows: the shadow-table path
    path = write(big, "gpkg", tmp_path)
    before = table_snapshot(own_cluster.engine, "cameras")
    env = {**os.environ, "GIS_IOC_DATABASE_URL": own_cluster.url, "GIS_IOC_HOME": str(tmp_path / "home")}
    load = subprocess.Popen([sys.executable, "-m", "gis_ioc", "load", str(path), "--layer", "cameras"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    with own_cluster.engine.connect() as conn:  # kill it while its COPY runs
        while time.monotonic() < deadline:
            copying = conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY %' "
                                           "AND state = 'active'")).scalar()
            conn.rollback()
            if copying:
                break
            time.sleep(0.05)
    os.kill(load.pid, signal.SIGKILL)
    load.wait(10)
    time.sleep(1)
    assert table_snapshot(own_cluster.engine, "cameras") == before
    with own_cluster.engine.connect() as conn:
        assert not conn.execute(sa.text("SELECT relname FROM pg_class WHERE relname LIKE '%gis_ioc_load%'")).all()
        assert not conn.execute(sa.text("SELECT 1 FROM pg_locks WHERE relation = 'cameras'::regclass AND granted "
                                        "AND pid <> pg_backend_pid()")).all()


def test_the_server_killed_with_sigkill_starts_again_with_every_acknowledged_write(own_cluster, tmp_path):
    port = free_port()
    env = {**os.environ, "GIS_IOC_DATABASE_URL": own_cluster.url, "GIS_IOC_HOME": str(tmp_path / "home"),
           "GIS_IOC_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "gis_ioc", "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(base, proc)
        traffic = Traffic(base, own_cluster.key)
        traffic.start()
        time.sleep(2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        time.sleep(0.5)
        traffic.finish()
    finally:
        if proc.poll() is None:
            proc.kill()
    with served(own_cluster.url, tmp_path / "home", port) as again:
        assert httpx.get(f"{again}/collections/incidents/items?limit=1").status_code == 200
        for z, x, y in ((8, 204, 116), (12, 3276, 1882)):  # the disk cache left by the killed process still serves
            assert httpx.get(f"{again}/tiles/incidents/{z}/{x}/{y}.mvt").status_code == 200
    with own_cluster.engine.connect() as conn:
        stored = set(conn.execute(sa.text("SELECT id FROM incidents WHERE id = ANY(:ids)"),
                                  {"ids": traffic.acknowledged}).scalars())
    assert traffic.acknowledged and stored == set(traffic.acknowledged)


def _wait_up(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("the server did not start")



