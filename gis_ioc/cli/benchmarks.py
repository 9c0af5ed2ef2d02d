"""gis-ioc bench: benchmarks that print figures (never tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gis_ioc.cli.common import _catalog, _engine, _settings, err_console, out
from gis_ioc.errors import InvalidInput

bench_app = typer.Typer(help="Benchmarks (printed figures, not tests).", no_args_is_help=True)


@bench_app.command("ingest")
def bench_ingest(
    rows: Annotated[str, typer.Option(help="Points in the GeoPackage; several sizes comma-separated "
                                           "(e.g. 1000,50000,1000000).")] = "1000000",
    workdir: Annotated[Path, typer.Option(help="Where the GeoPackage and the COPY file go.")] = Path(
        "/tmp/gis-ioc-bench"),
    runs: Annotated[int, typer.Option(min=1, max=9, help="Runs of each loader; the median is printed.")] = 1,
    readers: Annotated[bool, typer.Option(help="Then replace the rows again while items and tiles are read, and "
                                               "print those reads' latency.")] = False,
) -> None:
    """Load N points from a GeoPackage: gis-ioc (end to end, append and replace) beside ogr2ogr and COPY."""
    from gis_ioc import bench

    try:
        sizes = [int(n) for n in rows.split(",")]
    except ValueError:
        raise InvalidInput(f"--rows: {rows!r} is not a list of whole numbers", param="rows") from None
    if any(not 1_000 <= n <= 20_000_000 for n in sizes):
        raise InvalidInput("--rows: each size is between 1000 and 20000000", param="rows")
    settings = _settings()
    for size in sizes:
        results = bench.ingest_bench(settings, rows=size, workdir=workdir, runs=runs, log=err_console.print,
                                     readers=readers)
        reads = results.pop("reads during the load", None)
        table = Table(title=f"ingest of {size:,} points from a GeoPackage (median of {runs})")
        for col in ("loader", "seconds", "rows/s", "vs ogr2ogr"):
            table.add_column(col, justify="left" if col == "loader" else "right")
        theirs = results["ogr2ogr into a new table"]
        for name, seconds in results.items():
            table.add_row(name, f"{seconds:.2f}", f"{size / seconds:,.0f}", f"{seconds / theirs:.2f}×")
        out.print(table)
        if reads is not None:
            out.print(f"reads during a replace of {size:,} rows ({reads['load_s']:.1f} s): {reads['reads']:,} "
                      f"reads, p50 {reads['p50_ms']:.1f} ms, p99 {reads['p99_ms']:.1f} ms, max "
                      f"{reads['max_ms']:.1f} ms, {reads['errors']} errors")


def _levels(concurrency: str, name: str = "concurrency", at_most: int = 256, at_least: int = 1) -> tuple[int, ...]:
    try:
        levels = tuple(int(c) for c in concurrency.split(","))
    except ValueError:
        raise InvalidInput(f"--{name}: {concurrency!r} is not a list of whole numbers", param=name) from None
    if any(not at_least <= c <= at_most for c in levels):
        raise InvalidInput(f"--{name}: each between {at_least} and {at_most}", param=name)
    return levels


@bench_app.command("features")
def bench_features(
    url: Annotated[str | None, typer.Option(help="Measure this running server instead of starting gis-ioc.")] = None,
    collection: Annotated[str, typer.Option(help="Collection id on that server.")] = "incidents",
    seconds: Annotated[float, typer.Option(min=1, help="Measured seconds per concurrency.")] = 20,
    concurrency: Annotated[str, typer.Option(help="Concurrency levels, comma-separated.")] = "1,4,16",
    port: Annotated[int, typer.Option(help="Port for the gis-ioc server it starts.")] = 8090,
) -> None:
    """Items pages (bbox, limit 1000) at concurrency 1, 4 and 16: requests/s, p50, p99."""
    from gis_ioc import bench

    levels = _levels(concurrency)
    server = None
    if url is None:
        server = bench.serve_for_bench(_settings(), port)
        url = f"http://127.0.0.1:{port}"
    try:
        rows = bench.features_bench(url.rstrip("/"), collection, levels, seconds)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
    table = Table(title=f"items pages, bbox + limit 1000, {url}/collections/{collection}")
    for col in ("concurrency", "requests/s", "p50 ms", "p99 ms", "requests", "errors"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["concurrency"]), f"{r['rate']:.1f}", f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}",
                      str(r["requests"]), str(r["errors"]))
    out.print(table)


@bench_app.command("analysis")
def bench_analysis(
    runs: Annotated[int, typer.Option(min=10, max=5000, help="Calls of each light operation.")] = 200,
    heavy_runs: Annotated[int, typer.Option(min=2, max=100, help="Calls of coverage, hotspots and stats.")] = 7,
) -> None:
    """p50/p99 of each spatial operation, and stats beside the same SQL in psql."""
    from gis_ioc import bench

    rows = bench.analysis_bench(_settings(), runs, heavy_runs)
    table = Table(title="spatial operations (one connection, one call at a time)")
    for col in ("operation", "calls", "p50 ms", "p99 ms"):
        table.add_column(col, justify="left" if col == "operation" else "right")
    for r in rows:
        table.add_row(r["operation"], str(r["n"]), f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}")
    out.print(table)


@bench_app.command("search")
def bench_search(
    runs: Annotated[int, typer.Option(min=1, max=500, help="Times each query is run.")] = 20,
    port: Annotated[int, typer.Option(help="Port for the gis-ioc server it starts.")] = 8097,
) -> None:
    """p50/p99 of searches as operators type them: HTTP, in process, and the same SQL through pgbench.

    Places five ways, roads, facilities, cameras, coordinates; on the configured database (load
    ``gis-ioc demo --scale 100`` first).
    """
    from gis_ioc import bench_search

    rows = bench_search.search_bench(_settings(), runs, port)
    table = Table(title="search (one client, one query at a time)")
    for col in ("queries", "texts", "HTTP p50 ms", "HTTP p99 ms", "in process p50", "p99", "SQL (pgbench) p50",
                "p99"):
        table.add_column(col, justify="left" if col == "queries" else "right")
    for r in rows:
        sql = r["sql"]
        table.add_row(r["queries"], str(r["texts"]), f"{r['http']['p50_ms']:.1f}", f"{r['http']['p99_ms']:.1f}",
                      f"{r['gis-ioc']['p50_ms']:.1f}", f"{r['gis-ioc']['p99_ms']:.1f}",
                      f"{sql['p50_ms']:.1f}" if sql else "—", f"{sql['p99_ms']:.1f}" if sql else "—")
    out.print(table)


@bench_app.command("routing")
def bench_routing(
    runs: Annotated[int, typer.Option(min=10, max=2000, help="Calls timed per operation.")] = 100,
    port: Annotated[int, typer.Option(help="Port for the gis-ioc server it starts.")] = 8096,
    rounds: Annotated[int, typer.Option(min=1, max=50, help="Turns the ways of timing take, each in turn.")] = 8,
) -> None:
    """p50/p99 of a route, the 3 fire stations soonest at an incident and a 30-minute isochrone.

    Over HTTP, in process, and as the same statements through pgbench; on the configured database (load
    ``gis-ioc demo --scale 100`` first).
    """
    from gis_ioc import bench_routing

    found = bench_routing.routing_bench(_settings(), runs, port, rounds=rounds)
    net = found["network"]
    out.print(f"network: {net['edges']:,} edges, {net['vertices']:,} vertices, {net['parts']} part(s), "
              f"made in {net['build_s']} s")
    table = Table(title="routing (one call at a time)")
    for col in ("operation", "calls", "HTTP p50 ms", "p99", "HTTP (wrk) p50", "p99", "in process p50", "p99",
                "SQL (pgbench) p50", "p99", "SQL prepared p50", "p99", "HTTP / SQL p50", "wrk / SQL",
                "wrk / prepared", "paired"):
        table.add_column(col, justify="left" if col == "operation" else "right")
    for r in found["rows"]:
        wrk = r.get("http_wrk")
        sql, planned = r["sql"]["p50_ms"], r["sql_prepared"]["p50_ms"]
        table.add_row(r["operation"], str(r["calls"]), f"{r['http']['p50_ms']:.1f}", f"{r['http']['p99_ms']:.1f}",
                      f"{wrk['p50_ms']:.1f}" if wrk else "-", f"{wrk['p99_ms']:.1f}" if wrk else "-",
                      f"{r['in_process']['p50_ms']:.1f}", f"{r['in_process']['p99_ms']:.1f}",
                      f"{sql:.1f}", f"{r['sql']['p99_ms']:.1f}", f"{planned:.1f}", f"{r['sql_prepared']['p99_ms']:.1f}",
                      f"{r['http']['p50_ms'] / sql:.2f}×", f"{wrk['p50_ms'] / sql:.2f}×" if wrk else "-",
                      f"{wrk['p50_ms'] / planned:.2f}×" if wrk else "-",
                      f"{r['wrk_prepared_paired']:.2f}×" if r.get("wrk_prepared_paired") else "-")
    out.print(table)
    out.print("SQL: the statements each call sent, values inlined, through pgbench (-M simple: planned each time); "
              "SQL prepared: the same with -M prepared (planned once). Routes and the nearest by time run "
              "prepared statements (db.rows' prepare), the isochrone does not. Paired: the median over the rounds "
              "of each round's wrk p50 / SQL prepared p50 (the two taken seconds apart).")


@bench_app.command("tiles")
def bench_tiles(
    layers: Annotated[str, typer.Option(help="Layers of each tile, comma-separated.")] = "incidents",
    seconds: Annotated[float, typer.Option(min=1, help="Measured seconds per concurrency.")] = 20,
    concurrency: Annotated[str, typer.Option(help="Concurrency levels, comma-separated.")] = "1,4,16",
    port: Annotated[int, typer.Option(help="Port for the gis-ioc servers it starts.")] = 8090,
    sql: Annotated[bool, typer.Option(help="Also the same tile SQL through pgbench (the limit without HTTP).")] = True,
    tiles: Annotated[Path | None, typer.Option(help="A file of z/x/y lines instead of the built-in list.")] = None,
) -> None:
    """The fixed list of 2,000 tiles over Kon Tum (z8–16): uncached, cached, and the SQL through pgbench."""
    import tempfile

    from gis_ioc import bench, db

    levels = _levels(concurrency)
    settings = _settings()
    url = f"http://127.0.0.1:{port}"
    chosen = bench.read_tile_list(tiles) if tiles is not None else bench.tile_list()
    results: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="gis-ioc-bench-tiles-") as home:
        for label, env, prime in (("uncached", {"GIS_IOC_TILE_CACHE": "false"}, False),
                                  ("cached", {"GIS_IOC_TILE_CACHE": "true", "GIS_IOC_HOME": home}, True)):
            err_console.print(f"gis-ioc: tiles {label}…")
            server = bench.serve_for_bench(settings, port, env)
            try:
                results += [(label, r) for r in bench.tiles_http_bench(url, layers, levels, seconds, prime=prime,
                                                                       tiles_=chosen)]
            finally:
                server.terminate()
                server.wait(timeout=20)
    if sql:
        err_console.print("gis-ioc: the same tile SQL through pgbench…")
        engine = _engine(settings)
        catalog = _catalog(settings, engine)
        engine.dispose()
        results += [("SQL (pgbench)", r)
                    for r in bench.tiles_sql_bench(db.database_url(settings), catalog, layers, levels, seconds,
                                                   tiles_=chosen)]
    source = str(tiles) if tiles is not None else "the built-in list"
    table = Table(title=f"tiles of {layers}: {len(chosen):,} z/x/y from {source}")
    for col in ("path", "concurrency", "tiles/s", "p50 ms", "p99 ms", "tiles", "errors"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for label, r in results:
        table.add_row(label, str(r["concurrency"]), f"{r['rate']:.1f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
                      str(r["requests"]), str(r["errors"]))
    out.print(table)


@bench_app.command("soak")
def bench_soak(
    minutes: Annotated[float, typer.Option(min=1, max=24 * 60, help="How long the traffic runs.")] = 10,
    port: Annotated[int, typer.Option(help="Port for the served process.")] = 8097,
    restart_command: Annotated[str | None, typer.Option(help="How to restart PostgreSQL half way, when it is not "
                                                             "gis-ioc's private cluster.")] = None,
    restart: Annotated[bool, typer.Option(help="Restart PostgreSQL half way.")] = True,
    hostile: Annotated[bool, typer.Option(help="Add the hostile mix: clients that never read big pages, incidents "
                                               "with the longest text to the live clients, a 40,000-vertex road "
                                               "and routes.")] = False,
) -> None:
    """Mixed traffic (items, tiles, analysis, writes, 50 live-event clients), PostgreSQL restarted half way."""
    from gis_ioc.soak import SLOW_READERS, soak

    settings = _settings()
    _engine(settings).dispose()  # migrations applied, the database reachable
    result = soak(settings, minutes, port, restart_command, log=lambda m: err_console.print(f"gis-ioc: {m}"),
                  restart=restart, hostile=hostile)
    mix = f", hostile mix ({SLOW_READERS} clients that never read)" if hostile else ""
    away = f"PostgreSQL restarted half way (away {result['restart_down_s']} s)" if restart else "no restart"
    table = Table(title=f"soak: {minutes:g} min over {result['incidents']:,} incidents, {away}{mix}")
    for col in ("kind", "requests", "p50 ms", "p99 ms", "errors", *(["back after restart s"] if restart else [])):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for kind, figures in result["kinds"].items():
        table.add_row(kind, f"{figures['n']:,}", f"{figures['p50_ms']}", f"{figures['p99_ms']}",
                      str(figures["errors"]), *([str(result["recovery_s"].get(kind))] if restart else []))
    out.print(table)
    for label, key in (("errors outside the restart window", "errors_outside_restart"),
                       ("errors inside it", "errors_in_restart"), ("slowest recovery, s", "recovery_max_s"),
                       ("writes acknowledged", "writes_acknowledged"), ("acknowledged writes lost", "writes_lost"),
                       ("live events received (50 clients)", "events_received"), ("server alive", "server_alive"),
                       ("pages asked for and never read", "slow_requests"),
                       ("RSS after warm-up, MB", "rss_after_warmup_mb"), ("RSS at the end, MB", "rss_end_mb"),
                       ("RSS growth after warm-up, %", "rss_growth_pct")):
        out.print(f"{label}: {result[key]}")
    if result["errors_outside_examples"]:
        out.print(f"first errors outside the window: {', '.join(result['errors_outside_examples'])}")


@bench_app.command("scale")
def bench_scale(
    processes: Annotated[str, typer.Option(help="Numbers of server processes, comma-separated.")] = "1,2,4",
    seconds: Annotated[float, typer.Option(min=1, max=600, help="Measured seconds per figure.")] = 10,
    concurrency: Annotated[str, typer.Option(help="Concurrency levels, comma-separated.")] = "1,4,16",
    port: Annotated[int, typer.Option(help="Port for the gis-ioc servers it starts.")] = 8093,
    replicas: Annotated[str, typer.Option(help="Read replicas, comma-separated: 0, or 1 (a standby of the private "
                                                "cluster made for the run).")] = "0",
    failover: Annotated[bool, typer.Option(help="Then the failover timeline (as `bench failover`).")] = False,
    larger: Annotated[str | None, typer.Option(help="Then the same requests on this database beside the one "
                                                    "measured (as `bench sizes`; e.g. the --scale 1000 demo).")]
    = None,
) -> None:
    """Tiles (uncached, cached) and items with 1, 2 and 4 processes, beside the tile SQL through pgbench.

    With ``--failover`` and ``--larger URL``, the failover timeline and the larger database's figures follow in
    the same run.
    """
    from gis_ioc.bench_scale import MAX_PROCESSES, scale_bench

    counts = _levels(processes, "processes", MAX_PROCESSES)
    levels = _levels(concurrency)
    standbys = _levels(replicas, "replicas", 1, at_least=0)
    if larger is not None and "://" not in larger:
        raise InvalidInput("larger: a database URL (postgresql://…)", param="larger")
    result = scale_bench(_settings(), counts, levels, seconds, port, log=lambda m: err_console.print(f"gis-ioc: {m}"),
                         replicas=standbys)
    table = Table(title="scale: server processes on one machine (one port, GIS_IOC_WORKERS)")
    for col in ("path", "processes", "replicas", "concurrency", "per s", "p50 ms", "p99 ms", "requests", "errors"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for r in result["rows"]:
        table.add_row(r["path"], str(r["processes"]), str(r["replicas"]), str(r["concurrency"]), f"{r['rate']:.1f}",
                      f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", str(r["requests"]), str(r["errors"]))
    for r in result["sql"]:
        table.add_row("tile SQL (pgbench)", "-", "-", str(r["concurrency"]), f"{r['rate']:.1f}", f"{r['p50_ms']:.1f}",
                      f"{r['p99_ms']:.1f}", str(r["requests"]), "0")
    out.print(table)
    for client, ratios in result["uncached_to_sql"].items():
        out.print(f"uncached tiles / SQL limit (best process count, {client} client): " + ", ".join(
            f"c={c}: {ratio:.2f}" for c, ratio in ratios.items()))
    if result["proxy_to_cached"]:
        out.print("cached tiles through nginx / gis-ioc's own cached tiles (wrk): " + ", ".join(
            f"c={c}: {ratio:.1f}x" for c, ratio in result["proxy_to_cached"].items()))
    if failover:
        from gis_ioc.bench_failover import failover_bench

        _print_failover(failover_bench(port + 1, log=lambda m: err_console.print(f"gis-ioc: {m}")))
    if larger is not None:
        from gis_ioc import db
        from gis_ioc.bench_sizes import sizes_bench

        settings = _settings()
        _print_sizes(sizes_bench(settings, [db.database_url(settings), larger], port + 2,
                                 log=lambda m: err_console.print(f"gis-ioc: {m}")))


@bench_app.command("failover")
def bench_failover(
    kill_after: Annotated[float, typer.Option(min=1, max=60, help="Seconds of traffic before the primary dies.")] = 3,
    promote_after: Annotated[float, typer.Option(min=0, max=60, help="Seconds from the kill to the promotion.")] = 3,
    after: Annotated[float, typer.Option(min=1, max=60, help="Seconds of traffic after the promotion.")] = 5,
    port: Annotated[int, typer.Option(help="Port for the gis-ioc server it starts.")] = 8094,
) -> None:
    """Kill a primary under writes and reads, promote its standby: what the clients saw (a pair of its own)."""
    from gis_ioc.bench_failover import failover_bench

    _print_failover(failover_bench(port, kill_after, promote_after, after,
                                   log=lambda m: err_console.print(f"gis-ioc: {m}")))


def _print_failover(r: dict[str, Any]) -> None:
    table = Table(title="failover: a primary and a streaming standby on this machine (seconds from the kill)")
    table.add_column("what")
    table.add_column("value", justify="right")
    last, first = r["last_write_before_kill_s"], r["first_write_after_promotion_s"]
    rows = [("last write acknowledged before the kill", "-" if last is None else f"{last:.2f} s"),
            ("promotion (pg_ctl promote) started, done", "{:.2f} s, {:.2f} s".format(*r["promotion_s"])),
            ("first write acknowledged after the promotion", "none" if first is None else f"{first:+.2f} s"),
            ("writes sent, acknowledged, refused after the kill",
             f"{r['writes']}, {r['writes_acknowledged']}, {r['writes_refused_meanwhile']}"),
            ("acknowledged writes lost", str(r["acknowledged_lost"])),
            ("reads after the kill, failed (statuses)", f"{r['reads_after_kill']}, {r['read_errors_after_kill']} "
             f"{r['read_error_statuses'] or ''}"),
            ("reads in all, answered by the standby", f"{r['reads']}, {r['reads_by_standby']}")]
    for what, value in rows:
        table.add_row(what, value)
    out.print(table)


@bench_app.command("sizes")
def bench_sizes(
    databases: Annotated[str, typer.Argument(help="Database URLs, comma-separated, the smaller first "
                                                  "(e.g. the --scale 100 and --scale 1000 demos).")],
    port: Annotated[int, typer.Option(help="Port for the gis-ioc servers it starts.")] = 8095,
    warm: Annotated[bool, typer.Option(help="Send every request once, untimed, first (--no-warm: five of each kind, "
                                            "so a database read from disk is measured so).")] = True,
) -> None:
    """The same requests on databases of different sizes: p50/p99 side by side, and the ratio to the first."""
    from gis_ioc.bench_sizes import sizes_bench

    urls = [u.strip() for u in databases.split(",") if u.strip()]
    if not 1 <= len(urls) <= 4 or any("://" not in u for u in urls):
        raise InvalidInput("databases: one to four database URLs, comma-separated", param="databases")
    _print_sizes(sizes_bench(_settings(), urls, port, log=lambda m: err_console.print(f"gis-ioc: {m}"), warm=warm))


def _print_sizes(rows: list[dict[str, Any]]) -> None:
    table = Table(title="sizes: the same requests, one at a time over HTTP (tile cache off)")
    for col in ("what", "database", "p50 ms", "p99 ms", "requests", "errors", "p50 / first"):
        table.add_column(col, justify="left" if col in ("what", "database") else "right")
    first = {r["what"]: r["p50_ms"] for r in rows if r["database"] == rows[0]["database"]}
    for r in rows:
        ratio = r["p50_ms"] / first[r["what"]] if first.get(r["what"]) else float("nan")
        table.add_row(r["what"], r["database"], f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", str(r["n"]),
                      str(r["errors"]), f"{ratio:.2f}")
    out.print(table)
