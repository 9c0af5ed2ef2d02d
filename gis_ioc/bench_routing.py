"""gis-ioc bench routing: routes, the nearest stations by time and isochrones, beside the same SQL in pgbench.

Each operation is timed three ways, one call at a time: over HTTP on a server it starts, in process (one warm
connection in autocommit, as the routes use it), and as the very statements that call sent to PostgreSQL
(captured from the driver, values inlined) replayed through pgbench, one call per transaction. The ratio to
pgbench is what gis-ioc adds. The ways take turns, in ``rounds`` rounds, so that the machine's drift falls on
each alike (wrk's p50 is the median of its rounds', its p99 their largest). The paired ratio compares wrk with
pgbench within each round (the median of the rounds' ratios): this machine's speed drifts by 1.5–2× over
minutes, and a round's two figures are taken seconds apart.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy import event

from gis_ioc import bench_wrk, db, routing, service_areas
from gis_ioc.bench import serve_for_bench
from gis_ioc.bench_sql import ms_stats, pgbench_replay_ms
from gis_ioc.catalog import Catalog
from gis_ioc.settings import Settings

FIRE = "kind = 'fire_station'"
ROUNDS = 8  # each way of timing in turn, this many times


def _captured(engine: sa.Engine, call: Callable[[sa.Connection], Any]) -> str:
    """The statements one call sends, with their values inlined (psycopg2's own quoting), as one script."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        sent.append(cursor.mogrify(statement, parameters).decode())

    with engine.connect() as conn:
        event.listen(engine, "before_cursor_execute", record)
        try:
            call(conn)
        finally:
            event.remove(engine, "before_cursor_execute", record)
    return ";\n".join(s.strip().rstrip(";") for s in sent)


def _places(conn: sa.Connection, n: int, rng: random.Random) -> list[tuple[float, float]]:
    """Places along the roads, a little off them (where incidents and addresses are)."""
    lines = [(r.x0, r.y0, r.x1, r.y1) for r in conn.execute(sa.text(
        "SELECT ST_X(ST_StartPoint(geom)) AS x0, ST_Y(ST_StartPoint(geom)) AS y0, ST_X(ST_EndPoint(geom)) AS x1, "
        "ST_Y(ST_EndPoint(geom)) AS y1 FROM network_edges ORDER BY id"))]
    places = []
    for _ in range(n):
        x0, y0, x1, y1 = rng.choice(lines)
        f = rng.random()
        jitter = (rng.uniform(-0.001, 0.001), rng.uniform(-0.001, 0.001))
        places.append((x0 + f * (x1 - x0) + jitter[0], y0 + f * (y1 - y0) + jitter[1]))
    return places


def routing_bench(settings: Settings, runs: int = 100, port: int = 8096, seed: int = 20261201,
                  rounds: int = ROUNDS) -> dict[str, Any]:
    """p50/p99 of route, nearest 3 fire stations by time and a 30-minute isochrone: HTTP, in process, pgbench."""
    url = db.database_url(settings)
    engine = db.make_engine(url, pool_size=1)
    db.migrate(engine, settings.migrations_dir)
    catalog = Catalog.from_folder(settings.layers_dir, engine)
    started = time.perf_counter()
    routing.ensure(engine, catalog)
    built = time.perf_counter() - started
    rng = random.Random(seed)
    with engine.connect() as conn:
        network = routing.check(conn, catalog)
        places = _places(conn, 60, rng)
        incidents = [int(i) for i in conn.execute(sa.text(
            "SELECT i.id FROM incidents i WHERE i.status IN ('new', 'verified', 'dispatched', 'in_progress') "
            "AND i.merged_into IS NULL AND EXISTS (SELECT 1 FROM network_edges e WHERE ST_DWithin(e.geom, i.geom, "
            "0.03)) ORDER BY i.id LIMIT 40")).scalars()]  # within about 3 km of a road
    pairs = [(places[i], places[i + 30]) for i in range(30)]

    def route_call(a: tuple[float, float], b: tuple[float, float]) -> Callable[[sa.Connection], Any]:
        return lambda c: routing.route_json(c, catalog, a, b)  # as the route answers: the database's text

    def nearest_call(incident: int) -> Callable[[sa.Connection], Any]:
        return lambda c: routing.nearest_json(c, catalog, "infrastructure", filter_text=FIRE, incident=incident, k=3)

    def reach_call(c: sa.Connection) -> Any:
        return service_areas.reach(c, catalog, "infrastructure", filter_text=FIRE, minutes=[30], by_commune=False)

    ops: dict[str, tuple[list[Callable[[sa.Connection], Any]], list[str]]] = {
        "route": ([route_call(a, b) for a, b in pairs],
                  [f"/analysis/route?from={a[0]},{a[1]}&to={b[0]},{b[1]}" for a, b in pairs]),
        "nearest 3 fire stations by time": (
            [nearest_call(i) for i in incidents],
            [f"/analysis/nearest-by-time?layer=infrastructure&filter=kind%3D'fire_station'&incident={i}&k=3"
             for i in incidents]),
        "30-minute isochrone (fire stations)": (
            [reach_call],
            ["/analysis/reach?layer=infrastructure&filter=kind%3D'fire_station'&minutes=30&by_commune=false"]),
    }
    rows = []
    server = serve_for_bench(settings, port, {"GIS_IOC_WARM_TILES": "false"})
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for name, (calls, paths) in ops.items():
                times = max(runs, len(calls)) if name != "30-minute isochrone (fire stations)" else max(10, runs // 5)
                for path in paths:  # warm
                    client.get(path).raise_for_status()
                with engine.connect() as conn:
                    for call in calls:
                        call(conn)
                scripts = [_captured(engine, call) for call in calls]
                http: list[float] = []
                ours: list[float] = []
                sql: list[float] = []
                planned: list[float] = []  # the same through pgbench, each statement planned once
                wrk_p50: list[float] = []
                wrk_p99: list[float] = []
                paired: list[float] = []  # each round's wrk p50 over its pgbench prepared p50
                # in rounds, each way in turn: the machine's drift (a shared machine: pgbench's own p50 moved
                # from 3.2 to 5.0 ms between runs) falls on every column alike
                for r in range(rounds):
                    share = range(r * times // rounds, (r + 1) * times // rounds)
                    spent = 0.0
                    for n in share:
                        t0 = time.perf_counter()
                        client.get(paths[n % len(paths)]).raise_for_status()
                        http.append((time.perf_counter() - t0) * 1000)
                        spent += http[-1] / 1000
                    with db.autocommit(engine) as conn:  # as the routes run: no BEGIN and ROLLBACK round trips
                        for n in share:
                            t0 = time.perf_counter()
                            calls[n % len(calls)](conn)
                            ours.append((time.perf_counter() - t0) * 1000)
                    if bench_wrk.available():  # the same paths from a C client, one at a time, for as long
                        found = bench_wrk.load(f"http://127.0.0.1:{port}", paths, 1, max(1.0, spent), warmup=0)
                        wrk_p50.append(found["p50_ms"])
                        wrk_p99.append(found["p99_ms"])
                    sql += pgbench_replay_ms(url, scripts, len(share), "routing")
                    this_round = pgbench_replay_ms(url, scripts, len(share), "routing", prepared=True)
                    planned += this_round
                    if wrk_p50 and this_round:
                        paired.append(wrk_p50[-1] / statistics.median(this_round))
                wrk = {"p50_ms": statistics.median(wrk_p50), "p99_ms": max(wrk_p99)} if wrk_p50 else None
                statements = round(sum(s.count(";\n") + 1 for s in scripts) / len(scripts), 1)
                rows.append({"operation": name, "calls": times, "http": ms_stats(http), "http_wrk": wrk,
                             "in_process": ms_stats(ours), "sql": ms_stats(sql), "sql_prepared": ms_stats(planned),
                             "wrk_prepared_paired": statistics.median(paired) if paired else None,
                             "statements": statements})
    finally:
        server.terminate()
        server.wait(timeout=30)
        engine.dispose()
    return {"network": {"edges": network["edges"], "vertices": network["vertices"], "parts": len(network["parts"]),
                        "build_s": round(built, 2)}, "rows": rows}
