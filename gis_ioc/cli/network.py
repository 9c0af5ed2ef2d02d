"""Response by road from a shell: gis-ioc network build|check, gis-ioc query route|nearest-by-time|reach|matrix."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from gis_ioc.cli.common import _catalog, _engine, _settings, out
from gis_ioc.cli.query import query_app

network_app = typer.Typer(help="The road network routing runs on: build it, check how it holds together.",
                          no_args_is_help=True)


@network_app.command("build")
def network_build() -> None:
    """Make the network again from the road layers (done by itself when they change)."""
    from gis_ioc import routing

    settings = _settings()
    engine = _engine(settings)
    with engine.begin() as conn:
        made = routing.build(conn, _catalog(settings, engine))
    out.print(f"network: {made['edges']:,} edges, {made['vertices']:,} vertices in {made['seconds']} s")


@network_app.command("check")
def network_check() -> None:
    """The network's parts, dangling ends and the facilities it does not reach (exit 1 when not one part)."""
    from gis_ioc import routing

    settings = _settings()
    engine = _engine(settings)
    catalog = _catalog(settings, engine)
    routing.ensure(engine, catalog)
    with engine.connect() as conn:
        found = routing.check(conn, catalog)
    out.print(f"network: {found['edges']:,} edges, {found['vertices']:,} vertices, {len(found['parts'])} part(s), "
              f"{found['dangling_ends']:,} dangling ends, {found['one_way_traps']:,} places one-way roads cut off "
              "(one may leave and not reach them, or reach and not leave)")
    for part in found["parts"][1:]:
        out.print(f"  part {part['part']}: {part['vertices']} vertices apart from the rest")
    if found["ends_on_other_levels"]:
        at = "; ".join(f"{lon},{lat}" for lon, lat in found["ends_on_other_levels_at"][:5])
        out.print(f"  {found['ends_on_other_levels']:,} dead end(s) on another road's line, not joined to it (under "
                  f"or over it: another grade level; a vertex on both makes a junction): {at}"
                  + (" …" if found["ends_on_other_levels"] > 5 else ""))
    if found["facilities_unreachable"]:
        table = Table(title="facilities the network does not reach")
        for col in ("id", "kind", "name", "off road m", "why"):
            table.add_column(col)
        missed = found["facilities_unreachable"]
        for f in missed[:30]:
            table.add_row(str(f["id"]), f["kind"], f["name"] or "", f"{f['off_road_m']:,.0f}", f["why"])
        out.print(table)
        if len(missed) > 30:
            out.print(f"… and {len(missed) - 30} more (GET /analysis/network lists them all)")
    if len(found["parts"]) > 1:
        raise typer.Exit(1)


def _point(text: str, param: str) -> tuple[float, float]:
    from gis_ioc import routing

    return routing.parse_points(text, param, 1)[0]


@query_app.command("route")
def network_route(
    start: Annotated[str, typer.Argument(help="From: lon,lat.")],
    end: Annotated[str, typer.Argument(help="To: lon,lat.")],
    via: Annotated[str | None, typer.Option(help="Through: lon,lat pairs separated by ;.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the GeoJSON Feature.")] = False,
) -> None:
    """The fastest way by road, its time and its steps."""
    from gis_ioc import routing

    settings = _settings()
    engine = _engine(settings)
    catalog = _catalog(settings, engine)
    stops = routing.parse_points(via, "via", routing.MAX_VIA) if via else []
    routing.ensure(engine, catalog)
    with engine.connect() as conn:
        found = routing.route(conn, catalog, _point(start, "from"), _point(end, "to"), stops)
    props = found["properties"]
    if as_json:
        print(json.dumps(found, ensure_ascii=False))
    elif not props["reachable"]:
        out.print(props["reason"])
    else:
        out.print(f"{props['minutes']} min, {props['length_m'] / 1000:.1f} km")
        for step in props["steps"]:
            out.print(f"  {step['road'] or '—'}: {step['length_m'] / 1000:.1f} km, {step['time_s'] / 60:.1f} min")


@query_app.command("nearest-by-time")
def network_nearest(
    layer: Annotated[str, typer.Option(help="The facilities' layer.")] = "infrastructure",
    filter_text: Annotated[str | None, typer.Option("--filter", help="CQL2: kind = 'fire_station'.")] = None,
    incident: Annotated[int | None, typer.Option(help="To this incident.")] = None,
    to: Annotated[str | None, typer.Option(help="To this point: lon,lat.")] = None,
    k: Annotated[int, typer.Option(min=1, max=10, help="How many.")] = 3,
) -> None:
    """The facilities soonest at an incident or a point by road."""
    from gis_ioc import routing

    settings = _settings()
    engine = _engine(settings)
    catalog = _catalog(settings, engine)
    lon, lat = _point(to, "to") if to else (None, None)
    routing.ensure(engine, catalog)
    with engine.connect() as conn:
        found = routing.nearest_by_time(conn, catalog, layer, filter_text=filter_text, lon=lon, lat=lat,
                                        incident=incident, k=k)
    table = Table()
    for col in ("id", "name", "minutes", "road km", "straight km"):
        table.add_column(col)
    for f in found["features"]:
        p = f["properties"]
        table.add_row(str(f["id"]), p["name"] or "", f"{p['minutes']}", f"{p['road_m'] / 1000:.1f}",
                      f"{p['straight_m'] / 1000:.1f}")
    out.print(table)
    nearest = found.get("nearest_by_distance")
    if nearest and not nearest["also_soonest"]:
        out.print(f"the nearest in a straight line, {nearest['name']} ({nearest['straight_m'] / 1000:.1f} km), "
                  "is not the soonest there")


@query_app.command("reach")
def network_reach(
    layer: Annotated[str, typer.Option(help="The facilities' layer.")] = "infrastructure",
    filter_text: Annotated[str | None, typer.Option("--filter", help="CQL2: kind = 'fire_station'.")] = None,
    minutes: Annotated[str, typer.Option(help="Minutes, comma-separated.")] = "10,20,30",
) -> None:
    """Service areas: what the facilities reach by road within each time, and the communes not reached."""
    from gis_ioc import routing, service_areas
    from gis_ioc.errors import InvalidInput

    try:
        times = [float(m) for m in minutes.split(",") if m.strip()]
    except ValueError:
        raise InvalidInput(f"--minutes: {minutes!r} is not minutes separated by commas", param="minutes") from None
    settings = _settings()
    engine = _engine(settings)
    catalog = _catalog(settings, engine)
    routing.ensure(engine, catalog)
    with engine.connect() as conn:
        found = service_areas.reach(conn, catalog, layer, filter_text=filter_text, minutes=times)
    for f in found["features"]:
        p = f["properties"]
        out.print(f"within {p['minutes']:g} min: {p['area_km2']:,.1f} km², {p['road_km']:,.1f} km of road")
    missed = [c["name"] for c in found.get("communes", []) if not c["reached"]]
    if missed:
        out.print(f"not reached within {max(times):g} min: {', '.join(missed)}")


@query_app.command("matrix")
def query_matrix(
    origins: Annotated[str, typer.Argument(help="lon,lat pairs separated by ;.")],
    destinations: Annotated[str, typer.Argument(help="lon,lat pairs separated by ;.")],
) -> None:
    """Minutes by road from each origin to each destination (— where no road leads there)."""
    from gis_ioc import routing

    settings = _settings()
    engine = _engine(settings)
    catalog = _catalog(settings, engine)
    a = routing.parse_points(origins, "origins", routing.MAX_MATRIX)
    b = routing.parse_points(destinations, "destinations", routing.MAX_MATRIX)
    routing.ensure(engine, catalog)
    with engine.connect() as conn:
        found = routing.travel_matrix(conn, catalog, a, b)
    table = Table()
    table.add_column("from \\ to")
    for j in range(len(b)):
        table.add_column(f"{j + 1}", justify="right")
    for i, row in enumerate(found["seconds"]):
        table.add_row(str(i + 1), *("—" if s is None else f"{s / 60:.1f}" for s in row))
    out.print(table)
