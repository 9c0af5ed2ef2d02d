"""gis-ioc query: the spatial operations from a shell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gis_ioc.cli.common import _catalog, _engine, _settings, date_option, out

query_app = typer.Typer(help="Spatial operations: locate, nearest, within, seeing, stats; by road: route, "
                        "nearest-by-time, reach, matrix.", no_args_is_help=True)


OutOption = Annotated[Path | None, typer.Option("--out", help="Write the features as GeoJSON to this file.")]



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
        found = analysis.locate(conn, lon, lat, date_option(at, "at"))
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
                                      radius_m=radius_m, at=date_option(at, "at"))
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
    archived: Annotated[bool, typer.Option(help="Count the months archived out of the layer too.")] = False,
) -> None:
    """Counts per administrative unit, per km², and by one property."""
    from gis_ioc import analysis, queries

    window = analysis.Window(queries.parse_datetime(start, "start")[0] if start else None,
                             queries.parse_datetime(end, "end")[0] if end else None)
    settings = _settings()
    engine = _engine(settings)
    with engine.connect() as conn:
        result = analysis.stats(conn, _catalog(settings, engine), layer, by, filter_text=filter_, window=window,
                                at=date_option(at, "at"), breakdown=breakdown, through_lineage=through_lineage,
                                archived=archived)
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
        area = analysis.area_geometry(conn, admin_code=admin_code, polygon=polygon, at=date_option(at, "at"))
        result = analysis.coverage(conn, area, online_only=online, by=by, at=date_option(at, "at"))
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
