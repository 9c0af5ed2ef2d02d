"""Benchmarks: figures printed side by side with peers measured in the same run (not tests)."""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyogrio
import shapely
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from gis_ioc import db, demo, demo_province, ingest
from gis_ioc.bench_sql import psql_ms
from gis_ioc.catalog import Catalog
from gis_ioc.errors import InvalidInput
from gis_ioc.settings import Settings

BENCH_DATABASE = "gis_ioc_bench"


def _bench_database(settings: Settings) -> str:
    """A scratch database beside the configured one, migrated: the benchmark never touches real layers."""
    url = make_url(db.database_url(settings))
    admin = db.make_engine(url.render_as_string(hide_password=False), pool_size=1)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": BENCH_DATABASE}).first()
        if not exists:
            conn.execute(sa.text(f'CREATE DATABASE "{BENCH_DATABASE}"'))
    admin.dispose()
    return url.set(database=BENCH_DATABASE).render_as_string(hide_password=False)


def _gpkg(rows: int, workdir: Path, log: Callable[[str], None]) -> Path:
    """A GeoPackage of ``rows`` incident points as a user brings them (kept for later runs).

    From the demo generator, without the columns the database derives (``commune_code``): a load pays
    for deriving them, as it would with a real file.
    """
    path = workdir / f"incidents-{rows}-user.gpkg"
    if path.exists():
        info = pyogrio.read_info(path)
        if info["features"] == rows:
            return path
    log(f"writing {rows:,} incident points to {path}…")
    workdir.mkdir(parents=True, exist_ok=True)
    frame = demo.generate(scale=rows / 10_000, ref_time=None).incidents.drop(columns=["id", "commune_code"])
    frame = frame.set_geometry(shapely.point_on_surface(frame.geometry.values))
    tmp = path.with_suffix(".tmp.gpkg")
    pyogrio.write_dataframe(frame, tmp, layer="incidents", driver="GPKG")
    tmp.replace(path)
    return path


def _truncate(engine: Engine, table: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {table}"))
        conn.execute(sa.text("CHECKPOINT"))


def _quiet(engine: Engine, seconds: float = 30.0) -> None:
    """Wait until nothing else runs in the database: each timed run starts alone.

    A loader is never measured against the previous one's aftermath (its statistics, autovacuum).
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            busy = conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND state = 'active' "
                "AND (datname = current_database() OR backend_type = 'autovacuum worker')")).scalar()
        if not busy:
            return
        time.sleep(0.1)


def ingest_bench(
    settings: Settings, rows: int, workdir: Path, runs: int = 1, log: Callable[[str], None] = print,
    readers: bool = False,
) -> dict[str, Any]:
    """Seconds (median of ``runs``) to load the same points with gis-ioc, ogr2ogr and plain COPY.

    ``gis-ioc load`` runs as the command a user types (its own process: start-up and imports count),
    appending into an empty incidents layer, then replacing what it holds; ogr2ogr writes a new table.
    The file is what users bring: no ``commune_code``, which the load derives.
    """
    if shutil.which("ogr2ogr") is None:
        raise InvalidInput("ogr2ogr not found: install gdal-bin (apt-get install gdal-bin)")
    url = _bench_database(settings)
    engine = db.make_engine(url, pool_size=2)
    db.migrate(engine, settings.migrations_dir)
    catalog = Catalog.from_folder(settings.layers_dir, engine)
    layer = catalog.get("incidents")
    with engine.connect() as conn:
        has_units = conn.execute(sa.text("SELECT EXISTS (SELECT 1 FROM admin_units)")).scalar()
    if not has_units:  # the communes a load looks each incident up in, as in a real deployment
        units = catalog.get("admin_units")
        ingest.load_frame(engine, units, ingest.prepare(demo.generate(scale=0.01).admin_units, units), "replace")
    gpkg = _gpkg(rows, workdir, log)
    times: dict[str, list[float]] = {"gis-ioc load, append": [], "gis-ioc load, replace": [],
                                     "gis-ioc load --local, append": [], "gis-ioc load --local, replace": [],
                                     "ogr2ogr": [], "COPY only": [], "COPY + indexes": []}

    # plain COPY of the same rows: the prepared CSV (hex EWKB) written once, untimed
    prepared = ingest.prepare(pyogrio.read_dataframe(gpkg, use_arrow=True), layer, region=settings.region_extent)
    csv_path = workdir / f"incidents-{rows}.csv"
    with open(csv_path, "wb") as fh:
        for chunk, _ in ingest._csv_chunks(ingest._chunks_of(prepared.frame), prepared.columns):
            fh.write(chunk)
    cols = ", ".join(f'"{c}"' for c in prepared.columns)
    pg = make_url(url)
    ogr_dsn = (f"PG:host={pg.host} port={pg.port} dbname={pg.database} user={pg.username} "
               f"password={pg.password}")
    # the command a user types, in a process of its own: start-up, imports and connection included; once
    # handed to a running server of its home (as in a control room, where the server always runs), once alone
    command = [sys.executable, "-m", "gis_ioc", "load", str(gpkg), "--layer", "incidents", "--mode"]
    home = workdir / "home"  # the bench server's own: never a user's running server
    env = {**os.environ, "GIS_IOC_DATABASE_URL": url, "GIS_IOC_HOME": str(home)}
    server = serve_for_bench(settings.model_copy(update={"database_url": url, "home": home}), 8099,
                             {"GIS_IOC_HOME": str(home), "GIS_IOC_WARM_TILES": "false"})
    try:
        for run in range(runs):
            for local in (False, True):
                for mode in ("append", "replace"):  # append into an empty layer, then replace what it holds
                    flags = ["--local"] if local else []
                    label = f"gis-ioc load{' --local' if local else ''}, {mode}"
                    log(f"run {run + 1}/{runs}: {label}…")
                    if mode == "append":
                        _truncate(engine, "incidents")
                    _quiet(engine)
                    started = time.perf_counter()
                    done = subprocess.run([*command, mode, *flags], check=True, capture_output=True, env=env)
                    times[label].append(time.perf_counter() - started)
                    if (b"running server" in done.stdout) == local:
                        raise InvalidInput(f"{label}: the load was {'not ' if not local else ''}made by the server")
            _ogr_and_copy(run, runs, engine, gpkg, ogr_dsn, csv_path, cols, times, log)
    finally:
        server.terminate()
        server.wait(30)

    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS bench_ogr, bench_copy"))
    result: dict[str, Any] = {name: statistics.median(values) for name, values in times.items()}
    result["ogr2ogr into a new table"] = result.pop("ogr2ogr")
    if readers:
        log("reads (items and uncached tiles, 4 at a time) during a replace of the same rows…")
        result["reads during the load"] = reads_during_load(settings.model_copy(update={"database_url": url}),
                                                             engine, catalog, gpkg)
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE incidents"))
    engine.dispose()
    return result


def _ogr_and_copy(run: int, runs: int, engine: Engine, gpkg: Path, ogr_dsn: str, csv_path: Path, cols: str,
                  times: dict[str, list[float]], log: Callable[[str], None]) -> None:
    """One run of the peers: ogr2ogr into a new table, and COPY of the prepared rows (then indexes)."""
    log(f"run {run + 1}/{runs}: ogr2ogr…")
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS bench_ogr"))
        conn.execute(sa.text("CHECKPOINT"))
    _quiet(engine)
    started = time.perf_counter()
    subprocess.run(
        ["ogr2ogr", "-f", "PostgreSQL", ogr_dsn, str(gpkg), "incidents", "-nln", "bench_ogr",
         "-lco", "GEOMETRY_NAME=geom", "-lco", "FID=id", "-lco", "SPATIAL_INDEX=GIST", "-gt", "65536"],
        check=True, capture_output=True,
    )
    times["ogr2ogr"].append(time.perf_counter() - started)

    log(f"run {run + 1}/{runs}: plain COPY…")
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS bench_copy"))
        conn.execute(sa.text("CREATE TABLE bench_copy "
                             "(LIKE incidents INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY)"))
        conn.execute(sa.text("CHECKPOINT"))
    _quiet(engine)
    raw: Any = engine.raw_connection()
    try:
        with raw.cursor() as cur, open(csv_path, "rb") as fh:
            started = time.perf_counter()
            cur.copy_expert(f"COPY bench_copy ({cols}) FROM STDIN WITH (FORMAT csv)", fh,
                            size=1 << 20)
            raw.commit()
            copied = time.perf_counter() - started
            cur.execute("ALTER TABLE bench_copy ADD PRIMARY KEY (id)")
            for name in ("geom", "reported_at", "status", "commune_code"):
                using = "USING gist " if name == "geom" else ""
                cur.execute(f"CREATE INDEX ON bench_copy {using}({name})")
            cur.execute("ANALYZE bench_copy")
            raw.commit()
            indexed = time.perf_counter() - started
    finally:
        raw.close()
    times["COPY only"].append(copied)
    times["COPY + indexes"].append(indexed)


def reads_during_load(settings: Settings, engine: Engine, catalog: Catalog, gpkg: Path, port: int = 8098,
                      concurrency: int = 4) -> dict[str, float]:
    """Latency of reads of the layer while a load replaces its rows (the table holds the previous load's)."""
    import asyncio
    import threading

    import httpx

    server = serve_for_bench(settings, port, {"GIS_IOC_TILE_CACHE": "false", "GIS_IOC_WARM_TILES": "false"})
    base = f"http://127.0.0.1:{port}"
    urls = [f"{base}/collections/incidents/items?bbox={','.join(map(str, b))}&limit=100" for b in bbox_list()]
    urls += [f"{base}/tiles/incidents/{z}/{x}/{y}.mvt" for z, x, y in tile_list()[:400]]
    random.Random(5).shuffle(urls)
    loading = threading.Event()
    done = threading.Event()
    report: dict[str, float] = {}

    def load() -> None:
        loading.set()
        started = time.perf_counter()
        ingest.load(engine, catalog, gpkg, "incidents", mode="replace", region=settings.region_extent)
        report["load_s"] = time.perf_counter() - started
        done.set()

    async def read() -> tuple[list[float], int, float]:
        latencies: list[float] = []
        errors = 0
        position = 0
        async with httpx.AsyncClient(timeout=60) as client:
            async def worker() -> None:
                nonlocal position, errors
                while not done.is_set():
                    url = urls[position % len(urls)]
                    position += 1
                    started = time.perf_counter()
                    try:
                        ok = (await client.get(url)).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    if loading.is_set() and not done.is_set():
                        latencies.append(time.perf_counter() - started)
                        errors += 0 if ok else 1

            await asyncio.sleep(0)
            threading.Thread(target=load, daemon=True).start()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return sorted(latencies), errors, 0.0

    try:
        for url in urls[:50]:  # warm the server and the database a little
            httpx.get(url, timeout=60)
        latencies, errors, _ = asyncio.run(read())
    finally:
        server.terminate()
        server.wait(timeout=20)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    return {"reads": len(latencies), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": latencies[-1] * 1000
            if latencies else float("nan"), "errors": errors, "load_s": report.get("load_s", float("nan"))}


# -- features: items pages under load ------------------------------------------------------------


def bbox_list(n: int = 200, seed: int = 20261128) -> list[tuple[float, float, float, float]]:
    """A fixed list of bboxes over Kon Tum: 75 % around towns, sides 0.5–30 km (most under 8 km)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    towns = np.array(list(demo_province.TOWNS.values()))
    weights = np.array([demo_province.TOWN_WEIGHT[t] for t in demo_province.TOWNS])
    out = []
    xmin, ymin, xmax, ymax = demo_province.PROVINCE_BBOX
    for _ in range(n):
        if rng.random() < 0.75:
            cx, cy = towns[rng.choice(len(towns), p=weights / weights.sum())] + rng.normal(0, 0.02, 2)
        else:
            cx, cy = rng.uniform(xmin, xmax), rng.uniform(ymin, ymax)
        size = rng.random()
        km = rng.uniform(0.5, 2) if size < 0.4 else rng.uniform(2, 8) if size < 0.8 else rng.uniform(8, 30)
        half_lat, half_lon = km / 2 / 110.6, km / 2 / 107.6
        x0, y0, x1, y1 = (round(float(v), 5) for v in (cx - half_lon, cy - half_lat, cx + half_lon, cy + half_lat))
        out.append((x0, y0, x1, y1))
    return out


async def _load(urls: list[str], concurrency: int, seconds: float, warmup: float) -> dict[str, float]:
    import asyncio

    import httpx

    latencies: list[float] = []
    errors = 0
    position = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30, headers={"Accept-Encoding": "gzip"}) as client:

        async def worker(until: float, record: bool) -> None:
            nonlocal position, errors
            while time.perf_counter() < until:
                url = urls[position % len(urls)]
                position += 1
                started = time.perf_counter()
                try:
                    response = await client.get(url)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if record:
                    latencies.append(time.perf_counter() - started)
                    errors += 0 if ok else 1

        end_warmup = time.perf_counter() + warmup
        await asyncio.gather(*(worker(end_warmup, False) for _ in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(worker(started + seconds, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    return {"concurrency": concurrency, "requests": len(latencies), "rate": len(latencies) / elapsed,
            "p50_ms": pct(0.5), "p99_ms": pct(0.99), "errors": errors}


def features_bench(
    base_url: str, collection: str, concurrency: tuple[int, ...] = (1, 4, 16), seconds: float = 20,
    warmup: float = 3, limit: int = 1000,
) -> list[dict[str, float]]:
    """Items pages (one bbox of the fixed list each, ``limit`` features) at each concurrency."""
    import asyncio

    urls = [f"{base_url}/collections/{collection}/items?bbox={','.join(map(str, b))}&limit={limit}"
            for b in bbox_list()]
    return [asyncio.run(_load(urls, c, seconds, warmup)) for c in concurrency]


def serve_for_bench(settings: Settings, port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``gis-ioc serve`` in its own process (``env``: more variables) and wait until it answers."""
    import os
    import sys

    import httpx

    env = {**os.environ, "GIS_IOC_DATABASE_URL": db.database_url(settings), "GIS_IOC_PORT": str(port), **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "gis_ioc", "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InvalidInput("the server did not start (see `gis-ioc serve`)")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.terminate()
    raise InvalidInput("the server did not answer within 60 s")


# -- analysis: the spatial operations, one at a time ----------------------------------------------


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {"n": len(ordered), "p50_ms": ordered[len(ordered) // 2] * 1000,
            "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000}


def analysis_bench(settings: Settings, runs: int = 200, heavy_runs: int = 7) -> list[dict[str, Any]]:
    """p50/p99 of each operation on the configured database (load ``gis-ioc demo --scale 100`` first)."""
    from datetime import date

    from gis_ioc import analysis

    engine = db.connect(settings)
    catalog = Catalog.from_folder(settings.layers_dir, engine)
    points = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in bbox_list(runs)]
    before = date(2025, 6, 30)
    rows: list[dict[str, Any]] = []
    with engine.connect() as conn:
        incident_ids = [r[0] for r in conn.execute(sa.text(
            "SELECT id FROM incidents ORDER BY id DESC LIMIT :n"), {"n": runs})]
        if not incident_ids:
            raise InvalidInput("the database has no incidents: run `gis-ioc demo --scale 100` first")
        count = conn.execute(sa.text("SELECT count(*) FROM incidents")).scalar()

        def timed(name: str, call: Any, items: list[Any]) -> None:
            call(items[0])  # warm
            seconds = []
            for item in items:
                started = time.perf_counter()
                call(item)
                seconds.append(time.perf_counter() - started)
            rows.append({"operation": name, **_percentiles(seconds)})

        timed("locate", lambda p: analysis.locate(conn, p[0], p[1]), points)
        timed("locate (before the reform)", lambda p: analysis.locate(conn, p[0], p[1], before), points)
        timed("nearest 5 online cameras", lambda p: analysis.nearest(
            conn, catalog, "cameras", lon=p[0], lat=p[1], k=5, filter_text="status = 'online'"), points)
        timed("nearest hospital from an incident", lambda i: analysis.nearest(
            conn, catalog, "infrastructure", incident=i, k=1, filter_text="kind = 'hospital'"), incident_ids)
        timed("within 500 m (cameras)", lambda p: analysis.within(
            conn, catalog, "cameras", analysis.area_geometry(conn, lon=p[0], lat=p[1], radius_m=500)), points)
        timed("cameras seeing a point", lambda p: analysis.cameras_seeing(conn, p[0], p[1]), points)
        timed("impact 1 km (infrastructure)", lambda i: analysis.impact(conn, catalog, incident=i, radius_m=1000),
              incident_ids)
        communes = [r[0] for r in conn.execute(sa.text(
            "SELECT code FROM admin_units WHERE level = 'commune' AND valid_to IS NULL ORDER BY code"))]
        timed("coverage of a commune", lambda c: analysis.coverage(
            conn, analysis.area_geometry(conn, admin_code=c)), communes[:heavy_runs])
        timed("hotspots dbscan, 1 day", lambda _: analysis.hotspots(
            conn, catalog, "incidents", window=analysis.Window(start=_days_ago(1))), list(range(heavy_runs)))
        # 14 days: the scale-100 demo has about 290,000 incidents in its last 30, over what one grid run may group
        # (limits.MAX_HOTSPOT_POINTS, 250,000), and about 145,000 in 14
        timed("hotspots grid 1 km, 14 days", lambda _: analysis.hotspots(
            conn, catalog, "incidents", method="grid", window=analysis.Window(start=_days_ago(14))),
            list(range(heavy_runs)))
        timed(f"stats by district, {count:,} incidents", lambda _: analysis.stats(
            conn, catalog, "incidents", "district", at=before), list(range(heavy_runs)))
    statement = analysis.stats(engine.connect(), catalog, "incidents", "district", at=before, statement_only=True)
    sql = str(statement["sql"]).replace(":level", "'district'").replace(":on", f"'{before.isoformat()}'::date")
    psql = psql_ms(db.database_url(settings), sql, heavy_runs + 1)[1:]
    rows.append({"operation": "  the same stats SQL in psql", **_percentiles(psql)})
    engine.dispose()
    return rows


def _days_ago(days: int) -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) - timedelta(days=days)


# -- tiles: HTTP uncached and cached, beside the same tile SQL through pgbench -----------------------

# Tiles per zoom: 2,000 in all, 80 % at z10–14 (the wall's zooms).
TILE_ZOOMS = {8: 30, 9: 60, 10: 200, 11: 300, 12: 400, 13: 400, 14: 300, 15: 170, 16: 140}


def tile_list(seed: int = 20261128) -> list[tuple[int, int, int]]:
    """A fixed, shuffled list of z/x/y over Kon Tum: centres 75 % around towns, 25 % anywhere."""
    import morecantile
    import numpy as np

    tms = morecantile.tms.get("WebMercatorQuad")
    rng = np.random.default_rng(seed)
    towns = np.array(list(demo_province.TOWNS.values()))
    weights = np.array([demo_province.TOWN_WEIGHT[t] for t in demo_province.TOWNS])
    xmin, ymin, xmax, ymax = demo_province.PROVINCE_BBOX
    out = []
    for z, n in TILE_ZOOMS.items():
        for _ in range(n):
            if rng.random() < 0.75:
                lon, lat = towns[rng.choice(len(towns), p=weights / weights.sum())] + rng.normal(0, 0.03, 2)
            else:
                lon, lat = rng.uniform(xmin, xmax), rng.uniform(ymin, ymax)
            t = tms.tile(float(lon), float(lat), z)
            out.append((t.z, t.x, t.y))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def read_tile_list(path: Path) -> list[tuple[int, int, int]]:
    """A tile list from a file of ``z/x/y`` lines (as ``../shared/bench/tiles.txt``)."""
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                z, x, y = (int(v) for v in line.strip().split("/"))
            except ValueError:
                raise InvalidInput(f"tiles: line {number} of {path} is not z/x/y", param="tiles") from None
            out.append((z, x, y))
    if not out:
        raise InvalidInput(f"tiles: {path} lists no tiles", param="tiles")
    return out


def tiles_http_bench(base_url: str, layers: str, concurrency: tuple[int, ...], seconds: float,
                     warmup: float = 5, prime: bool = False,
                     tiles_: list[tuple[int, int, int]] | None = None) -> list[dict[str, float]]:
    """The tile list over HTTP at each concurrency (``prime``: fetch every tile once first, for the cache)."""
    import asyncio

    urls = [f"{base_url}/tiles/{layers}/{z}/{x}/{y}.mvt" for z, x, y in (tiles_ or tile_list())]
    if prime:
        import httpx

        with httpx.Client(timeout=120) as client:
            for url in dict.fromkeys(urls):
                client.get(url)
    return [asyncio.run(_load(urls, c, seconds, warmup)) for c in concurrency]


def tiles_sql_bench(url: str, catalog: Catalog, layers: str, concurrency: tuple[int, ...], seconds: float,
                    warmup: float = 5, tiles_: list[tuple[int, int, int]] | None = None) -> list[dict[str, float]]:
    """The limit without HTTP: the server's own tile statements, one per pgbench transaction (random tile)."""
    import tempfile

    from gis_ioc import tile_cells, tiles

    engine = db.make_engine(url, pool_size=1)
    tiles_ = tiles_ or tile_list()
    try:
        with engine.connect() as conn:
            resolved = tiles.resolve_layers(catalog, conn, layers)
            cells = tile_cells.fresh_cells(conn, resolved)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS gis_ioc_bench_tiles"))
            conn.execute(sa.text("CREATE TABLE gis_ioc_bench_tiles (i int PRIMARY KEY, q text NOT NULL)"))
            # an unfiltered tile's statement has no bound values: the server runs it as it is (tiles.run_tile)
            rows = [{"i": i + 1, "q": tiles.tile_statement_with_versions(resolved, z, x, y, {}, cells)[0]}
                    for i, (z, x, y) in enumerate(tiles_)]
            conn.execute(sa.text("INSERT INTO gis_ioc_bench_tiles (i, q) VALUES (:i, :q)"), rows)
        libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        out = []
        with tempfile.TemporaryDirectory(prefix="gis-ioc-pgbench-") as tmp:
            script = Path(tmp) / "tile.pgbench"
            script.write_text(f"\\set i random(1, {len(tiles_)})\n"
                              "SELECT q FROM gis_ioc_bench_tiles WHERE i = :i \\gset\n:q\n")
            for c in concurrency:
                base = ["pgbench", "-n", "-M", "simple", "-f", str(script), "-c", str(c), "-j", str(min(c, 2))]
                subprocess.run([*base, "-T", str(max(1, int(warmup))), libpq], capture_output=True, check=True)
                for old in Path(tmp).glob("txlog*"):
                    old.unlink()
                done = subprocess.run([*base, "-T", str(int(seconds)), "-l", "--log-prefix", f"{tmp}/txlog", libpq],
                                      capture_output=True, text=True, check=True)
                micros = sorted(int(line.split()[2]) for log in Path(tmp).glob("txlog*")
                                for line in log.read_text().splitlines())
                tps = float(next(line.split()[2] for line in done.stdout.splitlines() if line.startswith("tps = ")))
                out.append({"concurrency": c, "requests": len(micros), "rate": tps,
                            "p50_ms": micros[len(micros) // 2] / 1000 if micros else float("nan"),
                            "p99_ms": micros[min(len(micros) - 1, int(0.99 * len(micros)))] / 1000
                            if micros else float("nan"), "errors": 0})
        return out
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS gis_ioc_bench_tiles"))
        engine.dispose()
