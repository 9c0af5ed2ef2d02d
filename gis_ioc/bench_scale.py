"""gis-ioc bench scale: what more server processes give, beside the raw SQL limit, in one run.

For each number of processes (``gis-ioc serve`` with ``GIS_IOC_WORKERS``, on one port) it measures uncached
tiles, cached tiles and items pages at each concurrency; then the same uncached tile SQL through pgbench (the
limit without HTTP and Python) at the same concurrency, and the ratio of the best uncached figure to it. Tiles
are measured twice on the same server: from the asyncio httpx client (as every earlier figure was) and from wrk
(``bench_wrk``: a C client like pgbench's, which leaves the two cores to the server). With nginx installed the
cached tiles are measured a third time through the documented deployment's reverse proxy, which answers the
tiles it holds itself (``gis_ioc.proxy``).
Run it on the scale-100 demo (``gis-ioc demo --scale 100``). With ``replicas`` 1 each figure is taken again with
a streaming standby of the private cluster (on this same machine: it shows what the routing costs, not what a
second machine gives). Failover is ``gis-ioc bench failover``; ten million beside one: ``gis-ioc bench sizes``.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from gis_ioc import bench, bench_wrk, db, proxy
from gis_ioc.catalog import Catalog
from gis_ioc.cluster import DATABASE, PrivateCluster
from gis_ioc.errors import InvalidInput
from gis_ioc.settings import Settings

MAX_PROCESSES = 16
WRK_UNCACHED, WRK_CACHED = "tiles, uncached (wrk)", "tiles, cached (wrk)"
PROXY_CACHED = "tiles, cached by nginx (wrk)"  # the documented deployment: nginx's cache in front


def scale_bench(settings: Settings, processes: tuple[int, ...], concurrency: tuple[int, ...], seconds: float,
                port: int = 8093, log: Callable[[str], None] = lambda _: None,
                replicas: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """Rows of (path, processes, replicas, concurrency, tiles or requests/s, p50, p99, errors), and the SQL limit's.

    ``replicas`` 1: a streaming standby of the private cluster is made for the run (``pg_basebackup -R``, in a
    temporary folder, removed after) and named in ``GIS_IOC_REPLICA_URLS``.
    """
    url = db.database_url(settings)
    engine = db.make_engine(url, pool_size=1)
    try:
        db.migrate(engine, settings.migrations_dir)
        catalog = Catalog.from_folder(settings.layers_dir, engine)
    finally:
        engine.dispose()
    chosen = bench.tile_list()
    base = f"http://127.0.0.1:{port}"
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        standby_url = _standby(settings, url, stack, log) if any(replicas) else None
        for n in processes:
            for count in replicas:
                extra = {"GIS_IOC_REPLICA_URLS": standby_url or ""} if count else {}
                rows += _one_setup(settings, port, base, n, count, extra, chosen, concurrency, seconds, log)
    log("the same tile SQL through pgbench…")
    limit = bench.tiles_sql_bench(url, catalog, "incidents", concurrency, seconds, tiles_=chosen)
    ratios: dict[str, dict[int, float]] = {}
    for client, path in (("httpx", "tiles, uncached"), ("wrk", WRK_UNCACHED)):
        if not any(row["path"] == path for row in rows):
            continue
        ratios[client] = {}
        for r in limit:
            best = max((row["rate"] for row in rows if row["path"] == path
                        and row["concurrency"] == r["concurrency"]), default=float("nan"))
            ratios[client][int(r["concurrency"])] = best / r["rate"] if r["rate"] else float("nan")
    proxied: dict[int, float] = {}  # nginx's cache beside gis-ioc's own, same process count and concurrency
    for row in rows:
        if row["path"] == PROXY_CACHED:
            own = next((r["rate"] for r in rows if r["path"] == WRK_CACHED and r["processes"] == row["processes"]
                        and r["replicas"] == row["replicas"] and r["concurrency"] == row["concurrency"]), None)
            if own:
                proxied[int(row["concurrency"])] = max(proxied.get(int(row["concurrency"]), 0), row["rate"] / own)
    return {"rows": rows, "sql": limit, "uncached_to_sql": ratios, "proxy_to_cached": proxied}


def _one_setup(settings: Settings, port: int, base: str, n: int, replicas: int, extra: dict[str, str],
               chosen: list[tuple[int, int, int]], concurrency: tuple[int, ...], seconds: float,
               log: Callable[[str], None]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gis-ioc-bench-scale-") as home:
        for path, env, measure in (
                ("tiles, uncached", {"GIS_IOC_TILE_CACHE": "false"},
                 lambda: bench.tiles_http_bench(base, "incidents", concurrency, seconds, tiles_=chosen)),
                ("tiles, cached", {"GIS_IOC_TILE_CACHE": "true", "GIS_IOC_HOME": home},
                 lambda: bench.tiles_http_bench(base, "incidents", concurrency, seconds, prime=True,
                                                tiles_=chosen)),
                ("items (bbox, limit 1000)", {},
                 lambda: bench.features_bench(base, "incidents", concurrency, seconds))):
            log(f"{path}, {n} process{'es' if n > 1 else ''}, {replicas} replica{'' if replicas == 1 else 's'}…")
            server = bench.serve_for_bench(settings, port, {**env, **extra, "GIS_IOC_WORKERS": str(n),
                                                            "GIS_IOC_WARM_TILES": "false"})
            try:
                rows += [{"path": path, "processes": n, "replicas": replicas, **r} for r in measure()]
                if path.startswith("tiles") and bench_wrk.available():  # the same server, from a C client
                    rows += [{"path": WRK_CACHED if path == "tiles, cached" else WRK_UNCACHED,
                              "processes": n, "replicas": replicas, **r}
                             for r in bench_wrk.tiles(base, "incidents", chosen, concurrency, seconds)]
                if path == "tiles, cached" and bench_wrk.available() and proxy.available():
                    log(f"{PROXY_CACHED}, {n} process{'es' if n > 1 else ''}…")
                    rows += [{"path": PROXY_CACHED, "processes": n, "replicas": replicas, **r}
                             for r in _through_proxy(port, chosen, concurrency, seconds)]
            finally:
                server.terminate()
                server.wait(timeout=30)
    return rows


def _through_proxy(port: int, chosen: list[tuple[int, int, int]], concurrency: tuple[int, ...],
                   seconds: float) -> list[dict[str, float]]:
    """The documented deployment's cached path: nginx (``gis_ioc.proxy``) in front of the server on ``port``.

    Every tile of the list is asked for once through nginx first (as wrk asks, gzip accepted), so the figures
    are of tiles nginx holds: served by nginx alone, each revalidated in the background with its ETag after
    the five seconds its ``Cache-Control`` allows.
    """
    import httpx

    with proxy.running([f"127.0.0.1:{port}"], port + 2, workers=2) as front, \
            httpx.Client(base_url=front, timeout=60, headers={"Accept-Encoding": "gzip"}) as client:
        for z, x, y in chosen:
            client.get(f"/tiles/incidents/{z}/{x}/{y}.mvt").raise_for_status()
        return bench_wrk.tiles(front, "incidents", chosen, concurrency, seconds)


def _standby(settings: Settings, url: str, stack: contextlib.ExitStack, log: Callable[[str], None]) -> str:
    """A standby of the private cluster for this run; the URL of the same database on it."""
    primary = PrivateCluster(settings.home)
    configured = make_url(db.sqlalchemy_url(url))
    if primary.running_port() != configured.port:
        raise InvalidInput("--replicas 1 copies the private cluster into a standby; the configured database is "
                           "not on it (run with the private cluster, e.g. the --scale 100 demo in it)",
                           param="replicas")
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="gis-ioc-bench-standby-"))
    standby = PrivateCluster(Path(folder))
    stack.callback(standby.remove)
    log("a standby of the private cluster (pg_basebackup -R)…")
    standby.make_standby(primary)
    return standby.url(standby.running_port() or 0, configured.database or DATABASE)
