"""gis-ioc search: find a place as an operator types it."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from gis_ioc.cli.common import _engine, _settings, app, out


@app.command("search")
def search_command(
    q: Annotated[str, typer.Argument(help="A unit, facility, road (QL14), camera, incident id (#123) or "
                                          "coordinates, with or without diacritics.")],
    types: Annotated[str | None, typer.Option(help="Kinds, comma-separated: coordinates, unit, facility, road, "
                                                   "camera, incident.")] = None,
    near: Annotated[str | None, typer.Option(help="lon,lat: places near it rank higher.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=50, help="Results.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON (with geometries).")] = False,
) -> None:
    """Find a place: one ranked list of units, facilities, roads, cameras, incidents and coordinates."""
    from gis_ioc import search

    settings = _settings()
    engine = _engine(settings)
    kinds = [k.strip() for k in types.split(",") if k.strip()] if types else None
    with engine.connect() as conn:
        found = search.search(conn, q, kinds=kinds, near=search.near_point(near), limit=limit,
                              region=settings.region_extent)
    if as_json:
        out.print_json(json.dumps(found, ensure_ascii=False, default=str))
        return
    table = Table(title=f"{q} ({found['folded']})")
    for col in ("score", "kind", "name", "type", "where", "at"):
        table.add_column(col)
    for r in found["results"]:
        unit = r.get("today") or r.get("lies_in")
        where = (f"today {unit['type']} {unit['name']}" if r.get("today") else f"{unit['type']} {unit['name']}") \
            if unit else ""
        at = r.get("at") or r["geometry"]["coordinates"]
        table.add_row(f"{r['score']:.2f}", r["kind"], r.get("label") or r["name"], r.get("type") or "", where,
                      f"{at[1]:.5f}, {at[0]:.5f}")
    out.print(table)
