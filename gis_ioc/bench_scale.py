"""gis-ioc bench scale: what more server processes give, beside the raw SQL limit, in one run.

For each number of processes (``gis-ioc serve`` with ``GIS_IOC_WORKERS``, on one port) it measures uncached
tiles, cached tiles and items pages at each concurrency; then the same uncached tile SQL through pgbench (the
limit without HTTP and Python) at the same concurrency, and the ratio of the best uncached figure to it.
Run it on the scale-100 demo (``gis-ioc demo --scale 100``). Read replicas, failover and ten million incidents
(issue 14) are not measured here yet.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

from gis_ioc import bench, db
from gis_ioc.catalog import Catalog
from gis_ioc.settings import Settings

MAX_PROCESSES = 16


def scale_bench(settings: Settings, processes: tuple[int, ...], concurrency: tuple[int, ...], seconds: float,
                port: int = 8093, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Rows of (path, processes, concurrency, tiles or requests/s, p50, p99, errors), and the SQL limit's."""
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
    for n in processes:
        with tempfile.TemporaryDirectory(prefix="gis-ioc-bench-scale-") as home:
            for path, env, measure in (
                    ("tiles, uncached", {"GIS_IOC_TILE_CACHE": "false"},
                     lambda: bench.tiles_http_bench(base, "incidents", concurrency, seconds, tiles_=chosen)),
                    ("tiles, cached", {"GIS_IOC_TILE_CACHE": "true", "GIS_IOC_HOME": home},
                     lambda: bench.tiles_http_bench(base, "incidents", concurrency, seconds, prime=True,
                                                    tiles_=chosen)),
                    ("items (bbox, limit 1000)", {},
                     lambda: bench.features_bench(base, "incidents", concurrency, seconds))):
                log(f"{path}, {n} process{'es' if n > 1 else ''}…")
                server = bench.serve_for_bench(settings, port, {**env, "GIS_IOC_WORKERS": str(n),
                                                                "GIS_IOC_WARM_TILES": "false"})
                try:
                    rows += [{"path": path, "processes": n, **r} for r in measure()]
                finally:
                    server.terminate()
                    server.wait(timeout=30)
    log("the same tile SQL through pgbench…")
    limit = bench.tiles_sql_bench(url, catalog, "incidents", concurrency, seconds, tiles_=chosen)
    ratios = {}
    for r in limit:
        best = max((row["rate"] for row in rows if row["path"] == "tiles, uncached"
                    and row["concurrency"] == r["concurrency"]), default=float("nan"))
        ratios[r["concurrency"]] = best / r["rate"] if r["rate"] else float("nan")
    return {"rows": rows, "sql": limit, "uncached_to_sql": ratios}
