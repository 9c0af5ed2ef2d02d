"""Planners' map views: counts per unit (the choropleth) and what facilities reach by road (service areas).

Built on the views' common parts in ``gis_ioc.maps`` (base map, boundaries and names, legend, offline assets).
"""

from __future__ import annotations

import html
import math
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import folium
from branca.element import Element
from sqlalchemy.engine import Connection

from gis_ioc import analysis, limits, service_areas
from gis_ioc.catalog import Catalog
from gis_ioc.errors import InvalidInput
from gis_ioc.maps import (
    Assets,
    _base_map,
    _collection,
    _districts_on,
    _finish,
    _labels,
    _legend,
    _root,
    _units,
)
from gis_ioc.settings import Settings

CLASS_COLOURS = ["#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026"]
REACH_COLOURS = ["#1a9850", "#91cf60", "#d9ef8b", "#fee08b", "#fc8d59"]  # soonest first


def parse_window(text: str) -> timedelta:
    """``30d``, ``24h``, ``2w`` or ``90m`` as a duration, at most ten years (400 naming ``window`` otherwise)."""
    units = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isascii() or not number.isdigit() or len(number) > 9 or int(number) <= 0:
        raise InvalidInput(f"window: {text[:40]!r} is not a duration like 24h, 30d or 2w", param="window")
    span = timedelta(**{units[unit]: int(number)})
    if span > timedelta(days=limits.MAX_WINDOW_DAYS):
        raise InvalidInput(f"window: {text!r} is longer than {limits.MAX_WINDOW_DAYS:,} days", param="window")
    return span


def class_breaks(values: list[float], classes: int = 5) -> list[float]:
    """Upper bounds of up to ``classes`` quantile classes (ties merged), the last being the maximum."""
    ordered = sorted(values)
    if not ordered:
        return []
    breaks: list[float] = []
    for i in range(1, classes + 1):
        value = ordered[min(len(ordered) - 1, math.ceil(i * len(ordered) / classes) - 1)]
        if not breaks or value > breaks[-1]:
            breaks.append(value)
    return breaks


def choropleth(conn: Connection, catalog: Catalog, settings: Settings, *, layer: str = "incidents",
               level: str = "commune", window: str = "30d", measure: str = "count",
               assets: Assets | None = None) -> folium.Map:
    """Counts per unit (or per km²) over a time window, in quantile classes with a legend."""
    if level not in ("district", "commune"):
        raise InvalidInput(f"level: {level!r} is not district or commune", param="level")
    if measure not in ("count", "per_km2"):
        raise InvalidInput(f"measure: {measure!r} is not count or per_km2", param="measure")
    span = parse_window(window)
    now = datetime.now(ZoneInfo(settings.timezone))
    on = _districts_on(conn) if level == "district" else date.today()
    result = analysis.stats(conn, catalog, layer, level, window=analysis.Window(now - span, None), at=on)
    values = {u["code"]: (u["count"] if measure == "count" else u["per_km2"] or 0.0) for u in result["units"]}
    breaks = class_breaks(list(values.values()))
    colours = CLASS_COLOURS[-len(breaks):] if breaks else []

    def colour(value: float) -> str:
        for bound, c in zip(breaks, colours, strict=True):
            if value <= bound:
                return c
        return colours[-1] if colours else "#52606d"

    units = _units(conn, level, on)
    counts = {u["code"]: u["count"] for u in result["units"]}
    density = {u["code"]: u["per_km2"] for u in result["units"]}
    title = f"{catalog.get(layer, conn).title} per {level}, last {window}"
    title += " (per km²)" if measure != "count" else ""
    m = _base_map(settings, conn, title)
    folium.GeoJson(
        _collection(units, count=counts, per_km2=density), name=title,
        style_function=lambda f: {"color": "#0b1220", "weight": 1.2, "fillOpacity": 0.85,
                                  "fillColor": colour(values.get(f["id"], 0)), "className": "gis-admin gis-unit"},
        highlight_function=lambda f: {"weight": 3, "color": "#f5f7fa"},
        tooltip=folium.GeoJsonTooltip(fields=["name", "count", "per_km2"],
                                      aliases=[level.capitalize(), "Count", "Per km²"])).add_to(m)
    _labels(units, f"gis-{level}-label gis-always", "Names").add_to(m)
    lows = [0.0, *breaks[:-1]]
    fmt = (lambda v: f"{v:,.0f}") if measure == "count" else (lambda v: f"{v:,.3f}")
    if measure == "count":  # whole numbers: the next class starts one above the last
        lows = [lo + 1 for lo in lows]
    rows = [("gis-square", c, f"{fmt(lo)} – {fmt(hi)}" if i else f"≤ {fmt(hi)}")
            for i, (lo, hi, c) in enumerate(zip(lows, breaks, colours, strict=True))]
    _root(m).html.add_child(Element(
        f'<div id="gis-legend" class="gis-panel gis-legend">{_legend(title, rows)}'
        f'<div class="gis-note">Units in force on {on.isoformat()}; {result["total"]:,} features in all; '
        f"quantile classes; a name that would cover another is left out (zoom in).</div></div>"))
    return _finish(m, "gis-view", assets)


def reach_view(conn: Connection, catalog: Catalog, settings: Settings, *, layer: str = "infrastructure",
               kind: str | None = "fire_station", filter_text: str | None = None,
               minutes: list[float] | None = None, assets: Assets | None = None) -> folium.Map:
    """Service areas: what the facilities (``kind`` or ``filter``) reach by road within each time.

    With the facilities, and today's communes they do not reach at all (outlined in amber), each with the
    share of its area reached (on hover).
    """
    if kind is not None and not kind.replace("_", "").isalnum():
        raise InvalidInput(f"kind: {kind[:40]!r} is not a kind of facility", param="kind")
    condition = filter_text or (f"kind = '{kind}'" if kind else None)
    found = service_areas.reach(conn, catalog, layer, filter_text=condition, minutes=minutes or [15, 30])
    times = [f["properties"]["minutes"] for f in found["features"]]
    title = f"Reached by road from {found['facilities']} {(kind or layer).replace('_', ' ')}s"
    m = _base_map(settings, conn, title)
    communes = _units(conn, "commune", date.today())
    shares = {c["code"]: c for c in found.get("communes", [])}
    missed = {code for code, c in shares.items() if not c["reached"]}
    longest = f"{max(times):g}" if times else None

    def commune_style(f: dict) -> dict:
        out = f["id"] in missed
        return {"color": "#9fb3c8" if not out else "#f7b500", "weight": 1 if not out else 2.5,
                "fillColor": "#f7b500" if out else "#1f2933", "fillOpacity": 0.35 if out else 0.15,
                "dashArray": "4 3" if out else None, "className": "gis-admin gis-unit" + (" gis-uncovered" if out
                                                                                        else "")}

    reached = {code: round(100 * (c["within"].get(longest, {}).get("area_share") or 0)) for code, c in shares.items()}
    folium.GeoJson(_collection(communes, reached_pct=reached), name="Communes", style_function=commune_style,
                   tooltip=folium.GeoJsonTooltip(fields=["name", "reached_pct"],
                                                 aliases=["Commune", f"% of its area within {longest} min"])
                   ).add_to(m)
    _labels(communes, "gis-commune-label gis-always", "Names").add_to(m)
    for feature, colour in reversed(list(zip(found["features"], REACH_COLOURS, strict=False))):
        folium.GeoJson(feature, name=f"Within {feature['properties']['minutes']:g} min",
                       style_function=lambda _, c=colour: {"color": c, "weight": 1.5, "fillColor": c,
                                                           "fillOpacity": 0.35, "className": "gis-reach"}).add_to(m)
    places = folium.FeatureGroup(name="Facilities")
    for row in found["sources"]:
        folium.CircleMarker((row["lat"], row["lon"]), radius=8, color="#0b1220", weight=2, fill=True,
                            fill_color="#ef233c", fill_opacity=1, class_name="gis-facility",
                            tooltip=html.escape(row["name"] or str(row["id"]))).add_to(places)
    places.add_to(m)
    folium.LayerControl(collapsed=False).add_to(m)
    rows = [("gis-square", c, f"within {t:g} min by road (and a 3-minute walk)")
            for t, c in zip(times, REACH_COLOURS, strict=False)]
    rows += [("gis-dot", "#ef233c", "facility"), ("gis-square gis-area", "#f7b500", "commune not reached")]
    names = ", ".join(sorted(shares[c]["name"] for c in missed)) or "none"
    _root(m).html.add_child(Element(
        f'<div id="gis-legend" class="gis-panel gis-legend">{_legend(title, rows)}'
        f'<div class="gis-note" id="gis-uncovered">Not reached within {longest} min: {html.escape(names)}</div>'
        f'<div class="gis-note">Speeds by road class; off the road at {found["walk_m"]} m per 3 minutes.</div>'
        "</div>"))
    return _finish(m, "gis-view", assets)
