"""gis-ioc tiles and render: offline archives and self-contained map pages."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gis_ioc.cli.common import _catalog, _engine, _settings, app, err_console, out
from gis_ioc.errors import InvalidInput
from gis_ioc.progress import Bar

if TYPE_CHECKING:
    from gis_ioc.settings import Settings

tiles_app = typer.Typer(help="Vector tiles: offline archives.", no_args_is_help=True)


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
    from gis_ioc import tile_export

    settings = _settings()
    box = _bbox_option(bbox, settings)
    levels = tile_export.parse_zooms(zooms)
    engine = _engine(settings)
    bar = Bar("tiles", err_console)
    try:
        with engine.connect() as conn:
            report = tile_export.export_pmtiles(conn, _catalog(settings, engine), layers, box, levels, out_file,
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
    level: Annotated[str, typer.Option(help="commune or district (choropleth; districts: before 2025).")] = "commune",
    window: Annotated[str, typer.Option(help="How far back, e.g. 24h, 30d (choropleth).")] = "30d",
    measure: Annotated[str, typer.Option(help="count or per_km2 (choropleth).")] = "count",
    server: Annotated[str | None, typer.Option(help="The gis-ioc server the wall takes tiles and live changes "
                                                    "from [http://GIS_IOC_HOST:GIS_IOC_PORT].")] = None,
) -> None:
    """Write a map view as one self-contained HTML file (libraries inside; no request to the internet)."""
    from gis_ioc import incident_view, maps, planning

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
                m = incident_view.incident(conn, catalog, settings, incident, assets=maps.INLINE, server=None)
            else:
                m = planning.choropleth(conn, catalog, settings, layer=layer, level=level, window=window,
                                    measure=measure, assets=maps.INLINE)
            text = maps.page(m)
    finally:
        engine.dispose()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(text, encoding="utf-8")
    out.print(f"wrote {out_file} ({len(text.encode()) / 1e3:,.0f} kB)")
