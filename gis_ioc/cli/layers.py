"""load, demo and gis-ioc layers: what goes into the layers, and the catalog."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gis_ioc import load_service
from gis_ioc.cli.common import _catalog, _engine, _settings, app, err_console, out
from gis_ioc.errors import InvalidInput
from gis_ioc.progress import Bar

layers_app = typer.Typer(help="The layer catalog.", no_args_is_help=True)


@app.command()
def load(
    file: Annotated[Path, typer.Argument(help="GeoJSON, GeoPackage, Shapefile (folder or .zip), FlatGeobuf, KML "
                                              "or CSV (lon/lat or WKT columns).")],
    layer: Annotated[str, typer.Option("--layer", "-l", help="Layer to load into.")],
    crs: Annotated[str | None, typer.Option(help="CRS of the file, e.g. EPSG:9216 (overrides the file's).")] = None,
    mode: Annotated[str, typer.Option(help="append, replace or upsert (by the layer's id, else its natural key: "
                                           "admin units by code + valid_from). A replace of a layer with periods "
                                           "(admin units) covers only the period of its file.")] = "append",
    map_: Annotated[list[str] | None, typer.Option("--map", help="Rename a column: SRC=DST (repeatable).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Give a column one value on every row: "
                                                                 "COLUMN=VALUE, e.g. level=district (repeatable).")]
    = None,
    cascade: Annotated[bool, typer.Option(help="Let a replace remove rows of other tables that refer to the rows "
                                               "it removes (admin_lineage); without it such a load is refused.")]
    = False,
    strict: Annotated[bool, typer.Option(help="Refuse invalid geometries instead of repairing them.")] = False,
    ignore_unknown: Annotated[bool, typer.Option(help="Leave out columns the layer does not have.")] = False,
    source_layer: Annotated[str | None, typer.Option(help="Layer of a multi-layer file.")] = None,
    local: Annotated[bool, typer.Option(help="Load in this process even when a server of this home is running "
                                             "(by default the running server loads the file: it is warm).")]
    = False,
) -> None:
    """Load a file into a layer, in one transaction."""
    if mode not in load_service.MODES:
        raise InvalidInput(f"--mode: {mode!r} is not one of {', '.join(load_service.MODES)}", param="mode")
    from gis_ioc.paths import Place

    mapping, constants = load_service.parse_map(map_ or []), load_service.parse_set(set_ or [])
    bar = Bar(f"loading {file.name}", err_console)
    request = {"file": str(file), "layer": layer, "crs": crs, "mode": mode, "map": mapping, "set": constants,
               "strict": strict, "ignore_unknown": ignore_unknown, "cascade": cascade, "source_layer": source_layer}
    engine = None
    try:
        report = None if local else load_service.load_via_server(Place.from_environment(), request, bar)
        if report is None:  # no server of this home: load here
            from gis_ioc import ingest

            settings = _settings()
            engine = _engine(settings)
            report = ingest.load(
                engine, _catalog(settings, engine), file, layer, crs=crs, mode=mode,  # type: ignore[arg-type]
                mapping=mapping, constants=constants, strict=strict, ignore_unknown=ignore_unknown,
                cascade=cascade, source_layer=source_layer, region=settings.region_extent, progress=bar,
                analyze_after=False,
            )
    finally:
        bar.close()
    load_service.print_report(report, out)
    if engine is not None and report.analyze:  # the statistics after the report (the server does the same)
        from gis_ioc.ingest.store import analyze

        analyze(engine, _catalog(settings, engine).get(report.layer))


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
    bar = Bar(f"importing {file.name}", err_console)
    try:
        report = ingest.import_layer(
            engine, _catalog(settings, engine), file, layer_id, title=title, crs=crs,
            datetime_column=datetime_column, source_layer=source_layer, region=settings.region_extent, progress=bar,
        )
    finally:
        bar.close()
    load_service.print_report(report, out)
