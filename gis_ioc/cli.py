"""The ``gis-ioc`` command line (typer). Errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import os
import sys
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from gis_ioc.errors import GisIocError, InvalidInput
from gis_ioc.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from gis_ioc.catalog import Catalog
    from gis_ioc.ingest import LoadReport

from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer vendors click

app = typer.Typer(
    help="gis-ioc: the spatial operations service of a provincial Intelligent Operations Center.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)
db_app = typer.Typer(help="The database: migrations and the private PostGIS cluster.", no_args_is_help=True)
layers_app = typer.Typer(help="The layer catalog.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks (printed figures, not tests).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys: viewer, operator, admin.", no_args_is_help=True)
query_app = typer.Typer(help="Spatial operations: locate, nearest, within, seeing, stats.", no_args_is_help=True)
tiles_app = typer.Typer(help="Vector tiles: offline archives.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(layers_app, name="layers")
app.add_typer(bench_app, name="bench")
app.add_typer(keys_app, name="keys")
app.add_typer(query_app, name="query")
app.add_typer(tiles_app, name="tiles")

out = Console()
err_console = Console(stderr=True)


def _settings() -> Settings:
    return Settings()


def _engine(settings: Settings, migrate: bool = True) -> Engine:
    from gis_ioc import db

    engine = db.connect(settings)
    if migrate:
        db.migrate(engine, settings.migrations_dir)
    return engine


def _catalog(settings: Settings, engine: Engine) -> Catalog:
    from gis_ioc.catalog import Catalog

    return Catalog.from_folder(settings.layers_dir, engine)


class _Bar:
    """A rich progress bar for long loads, only on a terminal and only past a few thousand rows."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def __call__(self, done: int, total: int) -> None:
        if total < 20_000 or not err_console.is_terminal:
            return
        if self.progress is None:
            self.progress = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), console=err_console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task(self.label, total=total)
        assert self.task is not None
        self.progress.update(self.task, completed=done)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


# -- serve -------------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [GIS_IOC_HOST, 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [GIS_IOC_PORT, 8000].")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes [GIS_IOC_WORKERS, 1].")] = None,
    demo_if_empty: Annotated[bool, typer.Option(help="Load the demo province when the layers are empty.")] = False,
    open_wall: Annotated[bool, typer.Option(help="Open the wall full screen in Chromium when there is a display.")]
    = False,
) -> None:
    """Serve the API and the map views (applies pending migrations first)."""
    from gis_ioc import db, demo
    from gis_ioc.web import server

    settings = _settings()
    url = db.database_url(settings)
    engine = _engine(settings.model_copy(update={"database_url": url}))
    if demo_if_empty and demo.is_empty(engine):
        err_console.print("gis-ioc: the layers are empty, loading the Kon Tum demo…")
        demo.load_demo(engine, _catalog(settings, engine))
    engine.dispose()
    host = host or settings.host
    port = port or settings.port
    os.environ["GIS_IOC_DATABASE_URL"] = url  # workers connect to the same database
    err_console.print(f"gis-ioc: serving on http://{host}:{port}/ (Ctrl-C stops)")
    wall = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/views/wall"
    err_console.print(f"gis-ioc: the wall map is at {wall}", highlight=False)
    if open_wall:
        _open_wall_when_ready(wall)
    server.run(host, port, workers or settings.workers)


def _open_wall_when_ready(url: str) -> None:
    """On a machine with a display, open the wall in Chromium's kiosk mode once the server answers."""
    import shutil
    import subprocess
    import threading
    import time

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or browser is None:
        err_console.print("gis-ioc: no display here; open the wall URL above in a browser", highlight=False)
        return

    def wait_then_open() -> None:
        import httpx

        for _ in range(300):
            try:
                if httpx.get(url.replace("/views/wall", "/health"), timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        subprocess.Popen([browser, "--kiosk", "--no-first-run", "--disable-background-networking", url],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    threading.Thread(target=wait_then_open, daemon=True).start()


# -- db ----------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations (idempotent)."""
    from gis_ioc import db

    settings = _settings()
    engine = _engine(settings, migrate=False)
    applied = db.migrate(engine, settings.migrations_dir)
    if applied:
        for m in applied:
            out.print(f"applied {m.path.name}")
    else:
        out.print("database is up to date")


@db_app.command("status")
def db_status() -> None:
    """Where the database is, and which migrations are pending."""
    from gis_ioc import db
    from gis_ioc.cluster import PrivateCluster

    settings = _settings()
    if settings.database_url:
        out.print("database: GIS_IOC_DATABASE_URL")
    else:
        state = PrivateCluster(settings.home).status()
        out.print(f"private cluster: {state['data_dir']} "
                  f"({'running on port ' + str(state['port']) if state['running'] else 'stopped'})")
    engine = _engine(settings, migrate=False)
    pending = db.pending_migrations(engine, settings.migrations_dir)
    out.print(f"pending migrations: {', '.join(m.path.name for m in pending) or 'none'}")


@db_app.command("url")
def db_url() -> None:
    """Print the database URL (starting the private cluster if needed), for psql, QGIS or ogr2ogr."""
    from gis_ioc import db

    out.print(db.database_url(_settings()), highlight=False, soft_wrap=True)


@db_app.command("start")
def db_start() -> None:
    """Start the private cluster."""
    from gis_ioc.cluster import PrivateCluster

    settings = _settings()
    if settings.database_url:
        raise InvalidInput("GIS_IOC_DATABASE_URL is set: there is no private cluster to start")
    PrivateCluster(settings.home).ensure_running()
    out.print(f"private cluster running ({PrivateCluster(settings.home).status()['port']})")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the private cluster."""
    from gis_ioc.cluster import PrivateCluster

    settings = _settings()
    stopped = PrivateCluster(settings.home).stop()
    out.print("private cluster stopped" if stopped else "private cluster was not running")


# -- load, demo --------------------------------------------------------------------------------


def _parse_map(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        src, sep, dst = pair.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise InvalidInput(f"--map {pair!r}: write it as SOURCE_COLUMN=LAYER_PROPERTY", param="map")
        mapping[src.strip()] = dst.strip()
    return mapping


def _print_report(report: LoadReport) -> None:
    table = Table(title=f"loaded into {report.layer} ({report.mode})", show_header=False)
    for label, value in (
        ("rows read", f"{report.rows_read:,}"),
        ("loaded", f"{report.rows_loaded:,}"),
        ("repaired", f"{report.repaired:,}"),
        ("refused", f"{report.refused:,}"),
        ("source CRS", report.source_crs or "?"),
        ("seconds", f"{report.seconds:.2f}"),
        ("rows/s", f"{report.rows_per_second:,.0f}"),
    ):
        table.add_row(label, value)
    if report.ignored_columns:
        table.add_row("ignored columns", ", ".join(report.ignored_columns))
    out.print(table)


@app.command()
def load(
    file: Annotated[Path, typer.Argument(help="GeoJSON, GeoPackage, Shapefile (folder or .zip), FlatGeobuf, KML "
                                              "or CSV (lon/lat or WKT columns).")],
    layer: Annotated[str, typer.Option("--layer", "-l", help="Layer to load into.")],
    crs: Annotated[str | None, typer.Option(help="CRS of the file, e.g. EPSG:9216 (overrides the file's).")] = None,
    mode: Annotated[str, typer.Option(help="append, replace or upsert (by the layer's id).")] = "append",
    map_: Annotated[list[str] | None, typer.Option("--map", help="Rename a column: SRC=DST (repeatable).")] = None,
    strict: Annotated[bool, typer.Option(help="Refuse invalid geometries instead of repairing them.")] = False,
    ignore_unknown: Annotated[bool, typer.Option(help="Leave out columns the layer does not have.")] = False,
    source_layer: Annotated[str | None, typer.Option(help="Layer of a multi-layer file.")] = None,
) -> None:
    """Load a file into a layer, in one transaction."""
    from gis_ioc import ingest

    if mode not in ingest.MODES:
        raise InvalidInput(f"--mode: {mode!r} is not one of {', '.join(ingest.MODES)}", param="mode")
    settings = _settings()
    engine = _engine(settings)
    bar = _Bar(f"loading {file.name}")
    try:
        report = ingest.load(
            engine, _catalog(settings, engine), file, layer, crs=crs, mode=mode,  # type: ignore[arg-type]
            mapping=_parse_map(map_ or []), strict=strict, ignore_unknown=ignore_unknown,
            source_layer=source_layer, region=settings.region_extent, progress=bar,
        )
    finally:
        bar.close()
    _print_report(report)


@app.command()
def demo(
    scale: Annotated[float, typer.Option(min=0.01, max=1000, help="1 = 200 cameras, 10,000 incidents; "
                                                                  "100 = 20,000 and 1,000,000.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 62,
    ref_time: Annotated[datetime | None, typer.Option(help="'Now' of the demo (default: now).")] = None,
    if_empty: Annotated[bool, typer.Option(help="Only when a built-in layer is empty.")] = False,
) -> None:
    """Fill the built-in layers with the synthetic Kon Tum province (replaces their rows)."""
    from gis_ioc import demo as demo_module

    settings = _settings()
    engine = _engine(settings)
    if if_empty and not demo_module.is_empty(engine):
        out.print("the layers hold data already: demo not loaded")
        return
    if ref_time is not None and ref_time.tzinfo is None:
        from zoneinfo import ZoneInfo

        ref_time = ref_time.replace(tzinfo=ZoneInfo(settings.timezone))
    with err_console.status("generating the Kon Tum demo…") as status:
        counts = demo_module.load_demo(
            engine, _catalog(settings, engine), scale=scale, seed=seed, ref_time=ref_time,
            step=lambda layer, n: status.update(f"loading {n:,} rows into {layer}…"),
        )
    table = Table(title=f"Kon Tum demo, scale {scale:g}, seed {seed}")
    table.add_column("layer")
    table.add_column("rows", justify="right")
    for name, n in counts.items():
        if name != "seconds":
            table.add_row(name, f"{n:,}")
    out.print(table)
    out.print(f"{counts['seconds']} s")


# -- layers ------------------------------------------------------------------------------------


@layers_app.command("validate")
def layers_validate(
    folder: Annotated[Path | None, typer.Argument(help="Folder of layer files [GIS_IOC_LAYERS_DIR].")] = None,
) -> None:
    """Check every layer file against the schema; each problem names the file and the field."""
    from gis_ioc.catalog import validate_folder

    folder = folder or _settings().layers_dir
    if not folder.is_dir():
        raise InvalidInput(f"{folder}: no such folder", param="folder")
    layers, problems = validate_folder(folder)
    for problem in problems:
        err_console.print(problem, highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    out.print(f"{len(layers)} layer files valid: {', '.join(layer.id for layer in layers)}")


@layers_app.command("list")
def layers_list() -> None:
    """The layers with their feature counts."""
    settings = _settings()
    engine = _engine(settings)
    table = Table()
    for col in ("id", "title", "geometry", "features", "source"):
        table.add_column(col, justify="right" if col == "features" else "left")
    with engine.connect() as conn:
        for layer, count in _catalog(settings, engine).counts(conn):
            table.add_row(layer.id, layer.title, ", ".join(t.value for t in layer.geometry.types),
                          f"{'~' if count.estimated else ''}{count.value:,}", layer.source)
    out.print(table)


@layers_app.command("import")
def layers_import(
    file: Annotated[Path, typer.Argument(help="The file to import as a new layer.")],
    layer_id: Annotated[str, typer.Option("--id", help="Id of the new layer (a-z, 0-9, _).")],
    title: Annotated[str | None, typer.Option(help="Title of the new layer.")] = None,
    crs: Annotated[str | None, typer.Option(help="CRS of the file, e.g. EPSG:9216.")] = None,
    datetime_column: Annotated[str | None, typer.Option(help="Column holding each feature's time.")] = None,
    source_layer: Annotated[str | None, typer.Option(help="Layer of a multi-layer file.")] = None,
) -> None:
    """Import a file as a new layer: a table from its columns, registered for every server process."""
    from gis_ioc import ingest

    settings = _settings()
    engine = _engine(settings)
    bar = _Bar(f"importing {file.name}")
    try:
        report = ingest.import_layer(
            engine, _catalog(settings, engine), file, layer_id, title=title, crs=crs,
            datetime_column=datetime_column, source_layer=source_layer, region=settings.region_extent, progress=bar,
        )
    finally:
        bar.close()
    _print_report(report)


# -- query -------------------------------------------------------------------------------------

OutOption = Annotated[Path | None, typer.Option("--out", help="Write the features as GeoJSON to this file.")]


def _date_option(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"--at: {value!r} is not a date (YYYY-MM-DD)", param="at") from None


def _features_out(result: dict, out_file: Path | None, columns: list[str]) -> None:
    import json

    if out_file is not None:
        body = {"type": "FeatureCollection", "features": result["features"]}
        out_file.write_text(json.dumps(body, ensure_ascii=False, default=str), encoding="utf-8")
        out.print(f"wrote {len(result['features'])} features to {out_file}")
        return
    features = result["features"]
    columns = [*columns, "name" if features and "name" in features[0]["properties"] else "title"]
    table = Table()
    table.add_column("id", justify="right")
    for col in columns:
        table.add_column(col, justify="right" if col == "distance_m" else "left")
    for f in result["features"]:
        table.add_row(str(f["id"]), *[str(f["properties"].get(c, "")) for c in columns])
    out.print(table)


@query_app.command("locate")
def query_locate(
    lon: Annotated[float, typer.Argument(help="Longitude (CRS84).")],
    lat: Annotated[float, typer.Argument(help="Latitude.")],
    at: Annotated[str | None, typer.Option(help="Date of the boundaries (YYYY-MM-DD), default today.")] = None,
) -> None:
    """The commune, district and province containing a point."""
    from gis_ioc import analysis

    with _engine(_settings()).connect() as conn:
        found = analysis.locate(conn, lon, lat, _date_option(at))
    if not found["inside"]:
        out.print(f"{lon}, {lat} lies outside every administrative unit in force on {found['at']}")
        return
    table = Table(title=f"{lon}, {lat} on {found['at']}")
    for col in ("level", "code", "type", "name"):
        table.add_column(col)
    for u in found["units"]:
        table.add_row(u["level"], u["code"], u["unit_type"], u["name"])
    out.print(table)


@query_app.command("nearest")
def query_nearest(
    layer: Annotated[str, typer.Argument(help="Layer id, e.g. cameras.")],
    lon: Annotated[float | None, typer.Option(help="From this longitude…")] = None,
    lat: Annotated[float | None, typer.Option(help="…and latitude.")] = None,
    incident: Annotated[int | None, typer.Option(help="From this incident instead.")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="How many (1 to 1000).")] = 5,
    max_distance_m: Annotated[float | None, typer.Option(help="No farther than this, in metres.")] = None,
    filter_: Annotated[str | None, typer.Option("--filter", help="CQL2 text, e.g. \"status = 'online'\".")] = None,
    out_file: OutOption = None,
) -> None:
    """The k nearest features with their geodesic distance."""
    from gis_ioc import analysis

    settings = _settings()
    engine = _engine(settings)
    with engine.connect() as conn:
        result = analysis.nearest(conn, _catalog(settings, engine), layer, lon=lon, lat=lat, incident=incident, k=k,
                                  max_distance_m=max_distance_m, filter_text=filter_)
    _features_out(result, out_file, ["distance_m"])


@query_app.command("within")
def query_within(
    layer: Annotated[str, typer.Argument(help="Layer id.")],
    admin_code: Annotated[str | None, typer.Option(help="Inside this administrative unit…")] = None,
    polygon: Annotated[str | None, typer.Option(help="…or this polygon (GeoJSON or WKT)…")] = None,
    lon: Annotated[float | None, typer.Option(help="…or a circle around lon…")] = None,
    lat: Annotated[float | None, typer.Option(help="…lat…")] = None,
    radius_m: Annotated[float | None, typer.Option(help="…with this radius in metres.")] = None,
    at: Annotated[str | None, typer.Option(help="Date the admin unit is in force.")] = None,
    filter_: Annotated[str | None, typer.Option("--filter", help="CQL2 text.")] = None,
    out_file: OutOption = None,
) -> None:
    """The features inside an area."""
    from gis_ioc import analysis

    settings = _settings()
    engine = _engine(settings)
    with engine.connect() as conn:
        area = analysis.area_geometry(conn, admin_code=admin_code, polygon=polygon, lon=lon, lat=lat,
                                      radius_m=radius_m, at=_date_option(at))
        result = analysis.within(conn, _catalog(settings, engine), layer, area, filter_)
    _features_out(result, out_file, [])


@query_app.command("fov")
def query_fov(
    out_file: Annotated[Path, typer.Option("--out", help="GeoJSON file to write the sectors to.")],
    bbox: Annotated[str | None, typer.Option(help="minlon,minlat,maxlon,maxlat")] = None,
    status: Annotated[str | None, typer.Option(help="online, offline or maintenance.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many cameras.")] = 5000,
) -> None:
    """Write every camera's field-of-view sector as GeoJSON."""
    import json

    from gis_ioc import analysis, queries

    box = queries.parse_bbox(bbox, "--bbox") if bbox else None
    with _engine(_settings()).connect() as conn:
        features = analysis.fov_layer(conn, bbox=box, status=status, limit=limit)
    out_file.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    out.print(f"wrote {len(features)} field-of-view sectors to {out_file}")


@query_app.command("seeing")
def query_seeing(
    lon: Annotated[float, typer.Argument(help="Longitude.")],
    lat: Annotated[float, typer.Argument(help="Latitude.")],
    online: Annotated[bool, typer.Option(help="Online cameras only.")] = False,
) -> None:
    """The cameras whose field of view holds a point."""
    from gis_ioc import analysis

    with _engine(_settings()).connect() as conn:
        cameras = analysis.cameras_seeing(conn, lon, lat, online)
    table = Table(title=f"cameras seeing {lon}, {lat}")
    for col in ("id", "name", "status", "distance_m"):
        table.add_column(col)
    for c in cameras:
        table.add_row(str(c["id"]), c["name"], c["status"], f"{c['distance_m']:.1f}")
    out.print(table)


@query_app.command("stats")
def query_stats(
    layer: Annotated[str, typer.Argument(help="Layer id, e.g. incidents.")],
    by: Annotated[str, typer.Option(help="province, district or commune.")] = "district",
    at: Annotated[str | None, typer.Option(help="Date of the boundaries (YYYY-MM-DD).")] = None,
    start: Annotated[str | None, typer.Option(help="Window start (RFC 3339).")] = None,
    end: Annotated[str | None, typer.Option(help="Window end (RFC 3339).")] = None,
    breakdown: Annotated[str | None, typer.Option(help="Break counts down by this property.")] = None,
    filter_: Annotated[str | None, typer.Option("--filter", help="CQL2 text.")] = None,
    through_lineage: Annotated[bool, typer.Option(help="Count by recorded commune, carried through the lineage "
                                                       "table to the units of --at.")] = False,
) -> None:
    """Counts per administrative unit, per km², and by one property."""
    from gis_ioc import analysis, queries

    window = analysis.Window(queries.parse_datetime(start, "start")[0] if start else None,
                             queries.parse_datetime(end, "end")[0] if end else None)
    settings = _settings()
    engine = _engine(settings)
    with engine.connect() as conn:
        result = analysis.stats(conn, _catalog(settings, engine), layer, by, filter_text=filter_, window=window,
                                at=_date_option(at), breakdown=breakdown, through_lineage=through_lineage)
    table = Table(title=f"{layer} per {by} on {result['at']}: {result['total']:,}")
    for col in ("code", "name", "count", "per km²", *(["breakdown"] if breakdown else [])):
        table.add_column(col, justify="right" if col in ("count", "per km²") else "left")
    for u in result["units"]:
        extra = [", ".join(f"{k} {v}" for k, v in u["breakdown"].items())] if breakdown else []
        table.add_row(u["code"], u["name"], f"{u['count']:,}", f"{u['per_km2']:.3f}", *extra)
    out.print(table)


@query_app.command("coverage")
def query_coverage(
    admin_code: Annotated[str | None, typer.Option(help="Coverage of this administrative unit…")] = None,
    polygon: Annotated[str | None, typer.Option(help="…or of this polygon (GeoJSON or WKT).")] = None,
    at: Annotated[str | None, typer.Option(help="Date of the boundaries.")] = None,
    by: Annotated[str | None, typer.Option(help="district or commune: per unit too.")] = None,
    online: Annotated[bool, typer.Option(help="Online cameras only.")] = False,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write the uncovered parts as GeoJSON.")] = None,
) -> None:
    """How much of an area the cameras see."""
    import json

    from gis_ioc import analysis

    with _engine(_settings()).connect() as conn:
        area = analysis.area_geometry(conn, admin_code=admin_code, polygon=polygon, at=_date_option(at))
        result = analysis.coverage(conn, area, online_only=online, by=by, at=_date_option(at))
    out.print(f"{result['covered_km2']:.3f} of {result['area_km2']:.3f} km² seen "
              f"({100 * result['covered_share']:.2f} %) by {result['cameras']} cameras")
    if result.get("units"):
        table = Table()
        for col in ("code", "name", "km²", "covered km²", "share %"):
            table.add_column(col)
        for u in result["units"]:
            table.add_row(u["code"], u["name"], f"{u['area_km2']:.3f}", f"{u['covered_km2']:.3f}",
                          f"{100 * u['covered_share']:.2f}")
        out.print(table)
    if out_file is not None and result["uncovered"]:
        feature = {"type": "Feature", "properties": {"uncovered": True}, "geometry": result["uncovered"]}
        out_file.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}), encoding="utf-8")
        out.print(f"wrote the uncovered parts to {out_file}")


@query_app.command("impact")
def query_impact(
    incident: Annotated[int | None, typer.Option(help="The incident…")] = None,
    polygon: Annotated[str | None, typer.Option(help="…or an area (GeoJSON or WKT).")] = None,
    radius_m: Annotated[float, typer.Option(help="Metres around it.")] = 1000,
    layers: Annotated[str, typer.Option(help="Layers to look in, comma-separated.")] = "infrastructure",
) -> None:
    """What an incident reaches: features within a radius, roads an area cuts."""
    from gis_ioc import analysis

    settings = _settings()
    engine = _engine(settings)
    with engine.connect() as conn:
        result = analysis.impact(conn, _catalog(settings, engine), incident=incident, polygon=polygon,
                                 radius_m=radius_m, layers=tuple(x.strip() for x in layers.split(",") if x.strip()))
    for layer_id, found in result["layers"].items():
        table = Table(title=f"{layer_id} within {radius_m:g} m")
        for col in ("id", "kind/name", "distance_m"):
            table.add_column(col)
        for f in found:
            p = f["properties"]
            table.add_row(str(f["id"]), str(p.get("kind") or "") + " " + str(p.get("name") or p.get("title") or ""),
                          f"{p['distance_m']:.1f}")
        out.print(table)
    for road in result.get("roads_cut", []):
        out.print(f"road {road['name']} ({road['road_class']}): {road['cut_m']:.0f} m under the area")


@query_app.command("hotspots")
def query_hotspots(
    layer: Annotated[str, typer.Argument(help="Layer id.")] = "incidents",
    method: Annotated[str, typer.Option(help="dbscan, grid or h3.")] = "dbscan",
    eps_m: Annotated[float, typer.Option(help="DBSCAN distance in metres.")] = 300,
    min_points: Annotated[int, typer.Option(help="Smallest cluster.")] = 5,
    cell_m: Annotated[float, typer.Option(help="Grid cell in metres.")] = 1000,
    h3_resolution: Annotated[int, typer.Option(help="H3 resolution.")] = 8,
    start: Annotated[str | None, typer.Option(help="Window start (RFC 3339).")] = None,
    end: Annotated[str | None, typer.Option(help="Window end (RFC 3339).")] = None,
    filter_: Annotated[str | None, typer.Option("--filter", help="CQL2 text.")] = None,
    limit: Annotated[int, typer.Option(help="How many clusters.")] = 20,
) -> None:
    """Clusters of features, ranked by count."""
    from gis_ioc import analysis, queries

    window = analysis.Window(queries.parse_datetime(start, "start")[0] if start else None,
                             queries.parse_datetime(end, "end")[0] if end else None)
    settings = _settings()
    engine = _engine(settings)
    with engine.connect() as conn:
        result = analysis.hotspots(conn, _catalog(settings, engine), layer, method=method, eps_m=eps_m,
                                   min_points=min_points, cell_m=cell_m, h3_resolution=h3_resolution, window=window,
                                   filter_text=filter_, limit=limit)
    table = Table(title=f"{layer} hotspots ({method})")
    for col in ("rank", "count", "lon", "lat"):
        table.add_column(col, justify="right")
    for c in result["clusters"]:
        x, y = c["centroid"]["coordinates"]
        table.add_row(str(c["rank"]), str(c["count"]), f"{x:.5f}", f"{y:.5f}")
    out.print(table)


# -- keys --------------------------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who or what uses the key, e.g. 'operator-desk-1'.")],
    role: Annotated[str, typer.Option(help="viewer, operator or admin.")] = "operator",
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from gis_ioc import auth

    key = auth.create_key(_engine(_settings()), name, role)
    out.print(key, highlight=False, soft_wrap=True)
    err_console.print(f"gis-ioc: key {name!r} ({role}) created; it is shown only now. "
                      "Send it as 'Authorization: Bearer KEY'.")


@keys_app.command("list")
def keys_list() -> None:
    """The keys: name, role, prefix, when created, last used, revoked."""
    from gis_ioc import auth

    table = Table()
    for col in ("name", "role", "prefix", "created", "last used", "revoked"):
        table.add_column(col)
    for k in auth.list_keys(_engine(_settings())):
        table.add_row(k["name"], k["role"], k["key_prefix"] + "…", f"{k['created_at']:%Y-%m-%d %H:%M}",
                      f"{k['last_used_at']:%Y-%m-%d %H:%M}" if k["last_used_at"] else "",
                      f"{k['revoked_at']:%Y-%m-%d %H:%M}" if k["revoked_at"] else "")
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="Name of the key.")]) -> None:
    """Revoke a key: it stops working at once."""
    from gis_ioc import auth

    auth.revoke_key(_engine(_settings()), name)
    out.print(f"key {name!r} revoked")


@app.command()
def openapi(
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the document.")] = Path("api/openapi.json"),
) -> None:
    """Write the OpenAPI document of the HTTP API (the published contract)."""
    from gis_ioc.web.app import openapi_document

    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(openapi_document() + "\n", encoding="utf-8")
    out.print(f"wrote {out_file}")


# -- bench -------------------------------------------------------------------------------------


@bench_app.command("ingest")
def bench_ingest(
    rows: Annotated[int, typer.Option(min=1000, help="Points in the GeoPackage.")] = 1_000_000,
    workdir: Annotated[Path, typer.Option(help="Where the GeoPackage and the COPY file go.")] = Path(
        "/tmp/gis-ioc-bench"),
    runs: Annotated[int, typer.Option(min=1, max=9, help="Runs of each loader; the median is printed.")] = 1,
) -> None:
    """Load N points from a GeoPackage: gis-ioc beside ogr2ogr and a plain COPY, same database."""
    from gis_ioc import bench

    settings = _settings()
    results = bench.ingest_bench(settings, rows=rows, workdir=workdir, runs=runs, log=err_console.print)
    table = Table(title=f"ingest of {rows:,} points from a GeoPackage (median of {runs})")
    for col in ("loader", "seconds", "rows/s", "vs gis-ioc"):
        table.add_column(col, justify="left" if col == "loader" else "right")
    ours = results["gis-ioc load"]
    for name, seconds in results.items():
        table.add_row(name, f"{seconds:.2f}", f"{rows / seconds:,.0f}", f"{seconds / ours:.2f}×")
    out.print(table)


def _levels(concurrency: str) -> tuple[int, ...]:
    try:
        return tuple(int(c) for c in concurrency.split(","))
    except ValueError:
        raise InvalidInput(f"--concurrency: {concurrency!r} is not a list of whole numbers",
                           param="concurrency") from None


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


# -- tiles and views -----------------------------------------------------------------------------


ALL_WALL_LAYERS = "admin_units,infrastructure,cameras,incidents"


def _bbox_option(value: str | None, settings: Settings) -> tuple[float, float, float, float]:
    from gis_ioc import queries

    if value is None:
        return settings.region_bbox
    return queries.parse_bbox(value)


@tiles_app.command("export")
def tiles_export(
    out_file: Annotated[Path, typer.Option("--out", help="The archive to write (.pmtiles).")],
    layers: Annotated[str, typer.Option(help="Layers, comma-separated.")] = ALL_WALL_LAYERS,
    bbox: Annotated[str | None, typer.Option(help="minlon,minlat,maxlon,maxlat [the province].")] = None,
    zooms: Annotated[str, typer.Option(help="Zoom range, e.g. 8-14.")] = "8-14",
) -> None:
    """Write an offline tile archive (PMTiles v3) for a wall or a field laptop without the server."""
    from gis_ioc import tiles

    settings = _settings()
    box = _bbox_option(bbox, settings)
    levels = tiles.parse_zooms(zooms)
    engine = _engine(settings)
    bar = _Bar("tiles")
    try:
        with engine.connect() as conn:
            report = tiles.export_pmtiles(conn, _catalog(settings, engine), layers, box, levels, out_file,
                                          progress=lambda done, total: bar(done * 10, total * 10))
    finally:
        bar.close()
        engine.dispose()
    out.print(f"wrote {report['out']}: {report['tiles']:,} tiles ({report['empty']:,} empty left out), "
              f"zooms {report['zooms'][0]}-{report['zooms'][1]}, {report['bytes'] / 1e6:,.1f} MB")


@app.command()
def render(
    name: Annotated[str, typer.Argument(help="wall, incident or choropleth.")],
    out_file: Annotated[Path, typer.Option("--out", help="The HTML file to write.")],
    incident: Annotated[int | None, typer.Option(help="The incident (view incident).")] = None,
    layer: Annotated[str, typer.Option(help="Layer counted (choropleth).")] = "incidents",
    level: Annotated[str, typer.Option(help="district or commune (choropleth).")] = "district",
    window: Annotated[str, typer.Option(help="How far back, e.g. 24h, 30d (choropleth).")] = "30d",
    measure: Annotated[str, typer.Option(help="count or per_km2 (choropleth).")] = "count",
    server: Annotated[str | None, typer.Option(help="The gis-ioc server the wall takes tiles and live changes "
                                                    "from [http://GIS_IOC_HOST:GIS_IOC_PORT].")] = None,
) -> None:
    """Write a map view as one self-contained HTML file (libraries inside; no request to the internet)."""
    from gis_ioc import maps

    if name not in maps.VIEWS:
        raise InvalidInput(f"name: {name!r} is not one of {', '.join(maps.VIEWS)}", param="name")
    if name == "incident" and incident is None:
        raise InvalidInput("--incident: the incident view needs an incident id", param="incident")
    settings = _settings()
    engine = _engine(settings)
    catalog = _catalog(settings, engine)
    try:
        with engine.connect() as conn:
            if name == "wall":
                base = (server or f"http://{settings.host}:{settings.port}").rstrip("/")
                m = maps.wall(conn, catalog, settings, server=base, assets=maps.INLINE)
            elif name == "incident":
                assert incident is not None
                m = maps.incident(conn, catalog, settings, incident, assets=maps.INLINE)
            else:
                m = maps.choropleth(conn, catalog, settings, layer=layer, level=level, window=window,
                                    measure=measure, assets=maps.INLINE)
            text = maps.page(m)
    finally:
        engine.dispose()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(text, encoding="utf-8")
    out.print(f"wrote {out_file} ({len(text.encode()) / 1e3:,.0f} kB)")


def main() -> None:
    """Entry point: run the typer app, turning every known error into one line and an exit code."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=sys.argv[1:], prog_name="gis-ioc", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except GisIocError as err:
        for line in str(err).splitlines() or [type(err).__name__]:
            err_console.print(f"gis-ioc: error: {line}", highlight=False, soft_wrap=True, markup=False)
        sys.exit(2 if isinstance(err, InvalidInput) else 1)
    except NoArgsIsHelpError as err:
        print(err.ctx.get_help() if err.ctx else err.format_message())
        sys.exit(0)
    except ClickException as err:
        err_console.print(f"gis-ioc: error: {err.format_message()}", highlight=False, soft_wrap=True, markup=False)
        sys.exit(err.exit_code)
    except typer.Abort:
        err_console.print("gis-ioc: aborted")
        sys.exit(130)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except KeyboardInterrupt:
        err_console.print("gis-ioc: interrupted")
        sys.exit(130)
