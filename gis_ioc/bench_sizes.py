"""gis-ioc bench sizes: the same requests on databases of different sizes, side by side (issue 14: 10M vs 1M).

For each database (e.g. the ``--scale 100`` and ``--scale 1000`` demos) it serves ``gis-ioc serve`` on it (tile
cache off, so every tile is made) and sends, one at a time over HTTP and to the databases in turn, the same
requests: items in small boxes
and in the whole province, incident tiles over the fixed tile list, locate, the nearest cameras and incidents,
statistics by commune (with and without a breakdown) and the wall's KPIs. It prints p50 and p99 per database
and the ratio of the larger database's p50 to the first's.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import httpx

from gis_ioc import bench
from gis_ioc.settings import Settings

SEED = 7


def requests_(n_points: int = 200) -> list[tuple[str, list[str]]]:
    """(label, paths) pairs, the same for every database."""
    rng = random.Random(SEED)
    points = [(107.6 + rng.random() * 0.8, 14.1 + rng.random() * 1.1) for _ in range(n_points)]
    tiles = bench.tile_list()[:300]
    box = "{:.4f},{:.4f},{:.4f},{:.4f}"
    return [
        ("items, 2x2 km box, limit 100", [f"/collections/incidents/items?limit=100&bbox="
                                          f"{box.format(x - 0.01, y - 0.01, x + 0.01, y + 0.01)}"
                                          for x, y in points[:100]]),
        ("items, the province, limit 1000",
         ["/collections/incidents/items?limit=1000&bbox=107.5,14.0,108.5,15.0"] * 30),
        ("incident tiles, uncached", [f"/tiles/incidents/{z}/{x}/{y}.mvt" for z, x, y in tiles]),
        ("locate", [f"/analysis/locate?lon={x:.5f}&lat={y:.5f}" for x, y in points]),
        ("nearest 5 cameras", [f"/analysis/nearest?layer=cameras&lon={x:.5f}&lat={y:.5f}&k=5" for x, y in points]),
        ("nearest 5 incidents", [f"/analysis/nearest?layer=incidents&lon={x:.5f}&lat={y:.5f}&k=5"
                                 for x, y in points]),
        ("stats by commune", ["/analysis/stats?layer=incidents&by=commune"] * 30),
        ("stats by commune, by type", ["/analysis/stats?layer=incidents&by=commune&breakdown=type"] * 30),
        ("stats by commune, last 7 days", ["/analysis/stats?layer=incidents&by=commune&start="
                                           + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 7 * 86400))]
         * 30),
        ("the wall's KPIs", ["/views/wall/kpi.json"] * 30),
    ]


def sizes_bench(settings: Settings, urls: list[str], port: int = 8095,
                log: Callable[[str], None] = lambda _: None, warm: bool = True) -> list[dict[str, Any]]:
    """Per request kind and database: p50, p99, errors.

    ``warm``: every request is sent once, untimed, before the timed pass, so that each database is measured
    with its data read into memory (after `bench scale`'s standby was made, or anything else that reads a
    lot, the ten-million database was read from disk: items in small boxes p50 36 ms, p99 1.2 s, against
    18 ms and 148 ms half an hour earlier). Without it, five requests of each kind warm the connections and
    the plans only.

    One server per database (ports ``port``, ``port + 1``…), all started first; then each request is sent to
    every database in turn, the first database first on one request and last on the next, so that whatever
    else the machine does in the meantime falls on all of them alike (run one after the other, a shared
    machine's drift between the runs moved the ratios by ±0.5).
    """
    wanted = requests_()
    names = [url.rsplit("/", 1)[-1].split("?")[0] for url in urls]
    servers = []
    try:
        for i, url in enumerate(urls):
            log(f"serving {names[i]}…")
            servers.append(bench.serve_for_bench(settings.model_copy(update={"database_url": url}), port + i,
                                                 {"GIS_IOC_TILE_CACHE": "false", "GIS_IOC_DATABASE_URL": url}))
        clients = [httpx.Client(base_url=f"http://127.0.0.1:{port + i}", timeout=60) for i in range(len(urls))]
        rows: list[dict[str, Any]] = []
        try:
            for label, paths in wanted:
                for client in clients:
                    for path in paths if warm else paths[:5]:  # the connections, the plans (and the data)
                        client.get(path)
                seconds: list[list[float]] = [[] for _ in urls]
                errors = [0] * len(urls)
                for n, path in enumerate(paths):
                    order = range(len(urls)) if n % 2 == 0 else range(len(urls) - 1, -1, -1)
                    for i in order:
                        started = time.perf_counter()
                        response = clients[i].get(path)
                        seconds[i].append(time.perf_counter() - started)
                        errors[i] += response.status_code != 200
                rows += [{"what": label, "database": names[i], **bench._percentiles(seconds[i]), "errors": errors[i]}
                         for i in range(len(urls))]
        finally:
            for client in clients:
                client.close()
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
    return sorted(rows, key=lambda r: names.index(r["database"]))  # database by database, as printed
