"""``gis-ioc bench soak``: minutes of mixed traffic against a served process, PostgreSQL restarted half way.

Items, tiles, spatial operations, ``/health`` and writes (an operator's key, made for the run and revoked
after) run side by side with 50 live-event clients that reconnect as a browser does. Printed: errors
outside the restart window, how long after PostgreSQL is back each kind of request succeeds again,
acknowledged writes lost, p50/p99 per kind, and the server's RSS after warm-up and at the end.

The hostile mix (``--hostile``) adds clients that ask for the biggest pages and read nothing, incidents
with the longest description a layer keeps (sent to the 50 live clients), and a road of 40,000 vertices
written at the start (the network made again beside the routes, which run throughout).
"""

from __future__ import annotations

import asyncio
import random
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from gis_ioc import auth, bench, db, limits
from gis_ioc.cluster import PrivateCluster
from gis_ioc.errors import InvalidInput
from gis_ioc.settings import Settings

SSE_CLIENTS = 50
SLOW_READERS = 20  # hostile mix: clients that ask for a 10,000-feature page and never read it
ROAD_VERTICES = 40_000  # hostile mix: the road written at the start
WINDOW_BEFORE_S, WINDOW_AFTER_S = 1.0, 2.0  # errors this close to the restart belong to it


@dataclass
class Record:
    """What the run saw."""

    started: float = field(default_factory=time.monotonic)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[tuple[float, str, str]] = field(default_factory=list)  # (when it ended, kind, what)
    successes: dict[str, list[float]] = field(default_factory=dict)  # when each kind succeeded
    acknowledged: list[int] = field(default_factory=list)
    events: int = 0
    sse_connects: int = 0
    slow_requests: int = 0  # hostile mix: pages asked for and never read
    road_id: int | None = None  # hostile mix: the road written at the start

    def ok(self, kind: str, seconds: float) -> None:
        """A request of ``kind`` answered in ``seconds``."""
        self.latencies.setdefault(kind, []).append(seconds)
        self.successes.setdefault(kind, []).append(time.monotonic())

    def fail(self, kind: str, what: str) -> None:
        """A request of ``kind`` failed (a status or an exception's name)."""
        self.errors.append((time.monotonic(), kind, what))


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _restarter(settings: Settings, url: str, command: str | None) -> Callable[[], float]:
    """A function that restarts PostgreSQL and returns when it accepts connections again (its monotonic time)."""
    if command:
        def run_command() -> float:
            subprocess.run(shlex.split(command), check=True, capture_output=True)
            return _wait_for_database(url)
        return run_command
    cluster = PrivateCluster(settings.home)
    target = make_url(url)
    if target.host in ("127.0.0.1", "localhost") and target.port == cluster.running_port():
        def restart_private() -> float:
            cluster.stop()
            time.sleep(1.0)  # the database stays away for a moment, as in a real restart
            cluster.ensure_running()
            return _wait_for_database(url)
        return restart_private
    raise InvalidInput("--restart-command: the database is not gis-ioc's private cluster; say how to restart it "
                       "(e.g. --restart-command 'systemctl restart postgresql')", param="restart-command")


def _wait_for_database(url: str) -> float:
    import psycopg2

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            psycopg2.connect(url, connect_timeout=1).close()
            return time.monotonic()
        except psycopg2.OperationalError:
            time.sleep(0.05)
    raise InvalidInput("PostgreSQL did not come back within 120 s", param="restart-command")


async def _loop(record: Record, kind: str, until: float, call: Callable[[], Any], pause: float) -> None:
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            response = await call()
        except httpx.HTTPError as err:
            record.fail(kind, type(err).__name__)
        else:
            if response.status_code < 400 or response.status_code == 404:
                record.ok(kind, time.monotonic() - started)
            else:
                record.fail(kind, str(response.status_code))
        await asyncio.sleep(pause)


async def _writer(record: Record, client: httpx.AsyncClient, key: str, until: float,
                  box: tuple[float, float, float, float]) -> None:
    rng = random.Random(7)
    headers = {"Authorization": f"Bearer {key}"}
    while time.monotonic() < until:
        lon, lat = rng.uniform(box[0], box[2]), rng.uniform(box[1], box[3])
        feature = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
                   "properties": {"type": rng.choice(["traffic_accident", "fire", "flood", "medical"]),
                                  "severity": rng.choice(["minor", "moderate", "severe"]), "source": "app",
                                  "title": "soak"}}
        started = time.monotonic()
        try:
            response = await client.post("/collections/incidents/items", json=feature, headers=headers)
        except httpx.HTTPError as err:
            record.fail("write", type(err).__name__)
        else:
            if response.status_code == 201:
                record.ok("write", time.monotonic() - started)
                record.acknowledged.append(int(response.json()["id"]))
            else:
                record.fail("write", str(response.status_code))
        await asyncio.sleep(0.2)


async def _slow_reader(base: str, until: float, record: Record) -> None:
    """A client that asks for the biggest page and reads none of it, again and again (the server drops it)."""
    from urllib.parse import urlparse

    target = urlparse(base)
    request = (f"GET /collections/incidents/items?limit=10000 HTTP/1.1\r\nHost: {target.hostname}\r\n"
               "Accept-Encoding: identity\r\n\r\n").encode()
    while time.monotonic() < until:
        try:
            _, writer = await asyncio.open_connection(target.hostname, target.port, limit=4096)
            writer.write(request)
            record.slow_requests += 1
            await asyncio.sleep(min(45.0, max(0.0, until - time.monotonic())))  # reads nothing meanwhile
            writer.transport.abort()
        except OSError:
            await asyncio.sleep(2)


def _long_incident(rng: random.Random, box: tuple[float, float, float, float]) -> dict[str, Any]:
    """An incident whose description is as long as a layer keeps: every live client is sent it."""
    lon, lat = rng.uniform(box[0], box[2]), rng.uniform(box[1], box[3])
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": {"type": "flood", "severity": "severe", "source": "app", "title": "soak: long text",
                           "description": ("Nước dâng cao, " * 2000)[:limits.MAX_TEXT_CHARS]}}


def _big_road(box: tuple[float, float, float, float]) -> dict[str, Any]:
    """A road of ``ROAD_VERTICES`` vertices across the middle of the province."""
    lon0, lat = (box[0] + box[2]) / 2 - 0.1, (box[1] + box[3]) / 2
    coordinates = [[lon0 + i * 0.2 / ROAD_VERTICES, lat + (0.0001 if i % 2 else 0.0)] for i in range(ROAD_VERTICES)]
    return {"type": "Feature", "geometry": {"type": "LineString", "coordinates": coordinates},
            "properties": {"kind": "road", "name": "soak: long road", "road_class": "district"}}


async def _hostile_writes(record: Record, client: httpx.AsyncClient, key: str, until: float,
                          box: tuple[float, float, float, float]) -> None:
    """The road once, then an incident with the longest description every 2 s."""
    headers = {"Authorization": f"Bearer {key}"}
    road = await client.post("/collections/infrastructure/items", json=_big_road(box), headers=headers, timeout=120)
    if road.status_code == 201:
        record.road_id = int(road.json()["id"])
    else:
        record.fail("road", str(road.status_code))
    rng = random.Random(13)
    while time.monotonic() < until:
        response = await client.post("/collections/incidents/items", json=_long_incident(rng, box), headers=headers)
        if response.status_code == 201:
            record.acknowledged.append(int(response.json()["id"]))
        else:
            record.fail("long_text", str(response.status_code))
        await asyncio.sleep(2)


async def _listener(record: Record, client: httpx.AsyncClient, until: float) -> None:
    last: str | None = None
    while time.monotonic() < until:
        headers = {"Last-Event-ID": last} if last else {}
        try:
            async with client.stream("GET", "/events", headers=headers,
                                     timeout=httpx.Timeout(10, read=30)) as stream:
                if stream.status_code != 200:
                    record.fail("events", str(stream.status_code))
                    await asyncio.sleep(2)
                    continue
                record.sse_connects += 1
                async for line in stream.aiter_lines():
                    if line.startswith("id:"):
                        last = line[3:].strip()
                    elif line.startswith("event: change"):
                        record.events += 1
                    if time.monotonic() >= until:
                        return
        except httpx.HTTPError:
            pass  # the server or the database went away: reconnect, as EventSource does
        await asyncio.sleep(2)


async def _traffic(base: str, key: str, minutes: float, restart: Callable[[], float] | None,
                   box: tuple[float, float, float, float], log: Callable[[str], None],
                   hostile: bool, on_roads: list[tuple[float, float]]) -> tuple[Record, float, float]:
    record = Record()
    until = record.started + minutes * 60
    rng = random.Random(11)
    bboxes = bench.bbox_list()
    tiles = bench.tile_list()
    pool = httpx.Limits(max_connections=200, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=pool) as client:
        def items() -> Any:
            return client.get("/collections/incidents/items", params={"bbox": ",".join(map(str, rng.choice(bboxes))),
                                                                      "limit": 100})

        def tile() -> Any:
            z, x, y = rng.choice(tiles)
            return client.get(f"/tiles/incidents/{z}/{x}/{y}.mvt")

        def nearest() -> Any:
            lon, lat = rng.uniform(box[0], box[2]), rng.uniform(box[1], box[3])
            return client.get("/analysis/nearest", params={"layer": "cameras", "lon": lon, "lat": lat, "k": 5})

        def kpis() -> Any:
            return client.get("/views/wall/kpi.json")

        def health() -> Any:
            return client.get("/health")

        def route() -> Any:
            a, b = rng.sample(on_roads, 2) if len(on_roads) > 1 else (box[:2], box[2:])
            return client.get("/analysis/route", params={"from": f"{a[0]},{a[1]}", "to": f"{b[0]},{b[1]}"})

        tasks = [asyncio.create_task(_loop(record, "items", until, items, 0.05)) for _ in range(2)]
        tasks += [asyncio.create_task(_loop(record, "tiles", until, tile, 0.02)) for _ in range(3)]
        tasks += [asyncio.create_task(_loop(record, "analysis", until, nearest, 0.1)),
                  asyncio.create_task(_loop(record, "kpi", until, kpis, 1.0)),
                  asyncio.create_task(_writer(record, client, key, until, box))]
        tasks += [asyncio.create_task(_loop(record, "health", until, health, 0.5))]
        tasks += [asyncio.create_task(_listener(record, client, until)) for _ in range(SSE_CLIENTS)]
        if hostile:
            tasks += [asyncio.create_task(_slow_reader(base, until, record)) for _ in range(SLOW_READERS)]
            tasks += [asyncio.create_task(_hostile_writes(record, client, key, until, box)),
                      asyncio.create_task(_loop(record, "route", until, route, 0.5))]
        down_at = back_at = float("nan")
        if restart is not None:
            await asyncio.sleep(minutes * 30)
            log("restarting PostgreSQL…")
            down_at = time.monotonic()
            back_at = await asyncio.to_thread(restart)
            log(f"PostgreSQL back after {back_at - down_at:.1f} s")
        await asyncio.gather(*tasks)
    return record, down_at, back_at


def soak(settings: Settings, minutes: float, port: int, restart_command: str | None = None,
         log: Callable[[str], None] = print, *, restart: bool = True, hostile: bool = False) -> dict[str, Any]:
    """Run the soak and return its figures (see the module's docstring)."""
    url = db.database_url(settings)
    restarter = _restarter(settings, url, restart_command) if restart else None
    engine = db.make_engine(url, pool_size=1)
    with engine.connect() as conn:
        incidents = conn.execute(sa.text("SELECT count(*) FROM incidents")).scalar() or 0
        # where routes start and end: points on the roads (a random point may lie kilometres from any)
        on_roads = [(float(x), float(y)) for x, y in conn.execute(sa.text(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_LineInterpolatePoint(geom, 0.5) AS p FROM infrastructure "
            "WHERE kind = 'road' AND GeometryType(geom) = 'LINESTRING' ORDER BY id LIMIT 500) r"))]
    name = f"soak-{int(time.time())}"
    key = auth.create_key(engine, name, "operator")
    log(f"{incidents:,} incidents; serving on port {port}…")
    proc = bench.serve_for_bench(settings, port)
    try:
        base = f"http://127.0.0.1:{port}"
        warmup = min(60.0, minutes * 6)
        rss_marks: dict[str, int] = {}

        async def run() -> tuple[Record, float, float]:
            async def mark() -> None:
                await asyncio.sleep(warmup)
                rss_marks["after_warmup"] = _rss_kb(proc.pid)
            marker = asyncio.create_task(mark())
            result = await _traffic(base, key, minutes, restarter, settings.region_bbox, log, hostile, on_roads)
            await marker
            return result

        record, down_at, back_at = asyncio.run(run())
        rss_marks["end"] = _rss_kb(proc.pid)
        alive = proc.poll() is None and httpx.get(f"{base}/health", timeout=10).status_code == 200
        if record.road_id is not None:  # the hostile mix's road goes again (the network is made without it)
            httpx.delete(f"{base}/collections/infrastructure/items/{record.road_id}",
                         headers={"Authorization": f"Bearer {key}"}, timeout=60)
    finally:
        proc.terminate()
        proc.wait(30)
        auth.revoke_key(engine, name)
    with engine.connect() as conn:
        stored = set(conn.execute(sa.text("SELECT id FROM incidents WHERE id = ANY(:ids)"),
                                  {"ids": record.acknowledged}).scalars())
    engine.dispose()
    outside = [e for e in record.errors if not down_at - WINDOW_BEFORE_S <= e[0] <= back_at + WINDOW_AFTER_S]
    if not restart:
        back_at = record.started
    recovery = {kind: round(min((t for t in times if t >= back_at), default=float("nan")) - back_at, 3)
                for kind, times in record.successes.items()}
    kinds = {}
    for kind, values in sorted(record.latencies.items()):
        ordered = sorted(values)
        kinds[kind] = {"n": len(ordered), "p50_ms": round(ordered[len(ordered) // 2] * 1000, 1),
                       "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
                       "errors": sum(1 for e in record.errors if e[1] == kind)}
    return {
        "minutes": minutes, "incidents": incidents, "server_alive": alive,
        "restart_down_s": round(back_at - down_at, 2),
        "errors_outside_restart": len(outside),
        "errors_outside_examples": [f"{k} {w} at {t - down_at:+.1f} s" for t, k, w in outside[:5]],
        "errors_in_restart": len(record.errors) - len(outside),
        "recovery_s": recovery, "recovery_max_s": max(recovery.values(), default=float("nan")),
        "writes_acknowledged": len(record.acknowledged),
        "writes_lost": len(set(record.acknowledged) - stored),
        "events_received": record.events, "sse_connects": record.sse_connects,
        "slow_requests": record.slow_requests,
        "rss_after_warmup_mb": round(rss_marks.get("after_warmup", 0) / 1024, 1),
        "rss_end_mb": round(rss_marks["end"] / 1024, 1),
        "rss_growth_pct": round(100 * (rss_marks["end"] / rss_marks["after_warmup"] - 1), 1)
        if rss_marks.get("after_warmup") else None,
        "kinds": kinds,
    }
