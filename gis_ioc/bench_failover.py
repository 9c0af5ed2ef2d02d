"""gis-ioc bench failover: the timeline of a primary's death and a standby's promotion, as clients see it.

It makes a primary and a streaming standby on this machine (``replication.ReplicaPair``: the demo at a small
scale, synchronous commits), serves ``gis-ioc serve`` with both hosts in the database URL
(``target_session_attrs=read-write``) and the standby as a read replica, and keeps a writer (an incident every
``interval_s``) and a reader (a page of items, then a tile) going while it kills the primary
(``pg_ctl stop -m immediate``) and later promotes the standby (``pg_ctl promote``). It reports the last write
acknowledged before the kill, the first after the promotion, the reads answered and failed meanwhile, and
whether every acknowledged write is on the promoted standby.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from gis_ioc import bench, db
from gis_ioc.replication import ReplicaPair
from gis_ioc.settings import Settings

INCIDENT = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [108.005, 14.351]},
            "properties": {"type": "fire", "severity": "severe", "title": "bench failover", "source": "114"}}


def failover_bench(port: int = 8094, kill_after_s: float = 3.0, promote_after_s: float = 3.0,
                   after_s: float = 5.0, interval_s: float = 0.05,
                   log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The timeline (seconds from the kill) and the counts."""
    with tempfile.TemporaryDirectory(prefix="gis-ioc-failover-") as tmp:
        pair = ReplicaPair(Path(tmp))
        try:
            log("a primary with the demo, and a standby copied from it (pg_basebackup -R)…")
            pair.make()
            settings = Settings(database_url=pair.failover_url, home=Path(tmp) / "home")
            server = bench.serve_for_bench(settings, port, {"GIS_IOC_REPLICA_URLS": pair.standby_url,
                                                            "GIS_IOC_HOME": str(settings.home),
                                                            "GIS_IOC_WARM_TILES": "false"})
            try:
                return _timeline(pair, f"http://127.0.0.1:{port}", kill_after_s, promote_after_s, after_s,
                                 interval_s, log)
            finally:
                server.terminate()
                server.wait(timeout=30)
        finally:
            pair.remove()


def _timeline(pair: ReplicaPair, base: str, kill_after_s: float, promote_after_s: float, after_s: float,
              interval_s: float, log: Callable[[str], None]) -> dict[str, Any]:
    stop = threading.Event()
    writes: list[tuple[float, int, Any]] = []
    reads: list[tuple[float, int]] = []

    def writer() -> None:
        with httpx.Client(base_url=base, timeout=10, headers={"X-API-Key": pair.key}) as client:
            while not stop.is_set():
                at = time.monotonic()
                try:
                    r = client.post("/collections/incidents/items", json=INCIDENT)
                    writes.append((at, r.status_code, r.json().get("id") if r.status_code == 201 else None))
                except httpx.HTTPError:
                    writes.append((at, 0, None))
                stop.wait(interval_s)

    def reader() -> None:
        paths = ["/collections/incidents/items?limit=20", "/tiles/incidents/11/1638/941.mvt"]
        with httpx.Client(base_url=base, timeout=10) as client:
            n = 0
            while not stop.is_set():
                at = time.monotonic()
                try:
                    reads.append((at, client.get(paths[n % 2]).status_code))
                except httpx.HTTPError:
                    reads.append((at, 0))
                n += 1
                stop.wait(interval_s)

    threads = [threading.Thread(target=f, daemon=True) for f in (writer, reader)]
    for t in threads:
        t.start()
    time.sleep(kill_after_s)
    log("killing the primary…")
    killed = time.monotonic()
    pair.primary.kill()
    time.sleep(promote_after_s)
    log("promoting the standby…")
    promote_started = time.monotonic()
    pair.standby.promote()
    promoted = time.monotonic()
    time.sleep(after_s)
    stop.set()
    health = httpx.get(f"{base}/health", timeout=10).json()
    for t in threads:
        t.join(timeout=15)
    acknowledged = [i for _, status, i in writes if status == 201]
    engine = db.make_engine(pair.standby_url, pool_size=1)
    try:
        with engine.connect() as conn:
            found = {r[0] for r in conn.execute(sa.text("SELECT id FROM incidents WHERE id = ANY(:ids)"),
                                                {"ids": acknowledged})}
    finally:
        engine.dispose()
    before = [at for at, status, _ in writes if status == 201 and at < killed]
    after = [at for at, status, _ in writes if status == 201 and at >= promote_started]
    outage = [status for at, status in reads if at >= killed]
    return {
        "last_write_before_kill_s": (before[-1] - killed) if before else None,
        "promotion_s": (promote_started - killed, promoted - killed),
        "first_write_after_promotion_s": (after[0] - promoted) if after else None,
        "writes": len(writes), "writes_acknowledged": len(acknowledged),
        "writes_refused_meanwhile": sum(1 for at, s, _ in writes if killed <= at and s != 201),
        "acknowledged_lost": len(set(acknowledged) - found),
        "reads_after_kill": len(outage), "read_errors_after_kill": sum(1 for s in outage if s != 200),
        "read_error_statuses": sorted({s for s in outage if s != 200}),
        "reads_by_standby": sum(r["reads"] for r in health.get("replicas", [])), "reads": len(reads),
    }
