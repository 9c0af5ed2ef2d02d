"""Generated map views (folium): the wall and the parts every view shares; and their offline asset bundle.

One incident's view is ``gis_ioc.incident_view``, the planners' choropleth and reach views ``gis_ioc.planning``.

Each builder returns a ``folium.Map`` (a notebook shows it inline) and ``page()`` makes the HTML. Every
view loads with no request outside the server: Leaflet, Leaflet.VectorGrid and our own scripts and styles
are served from ``/static`` (``assets=ServerAssets``) or written into the page (``assets=INLINE``, what
``gis-ioc render`` uses, so a saved file opens anywhere). There are no web fonts and no icon fonts:
symbols are drawn as circles, lines and polygons.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import folium
import sqlalchemy as sa
from branca.element import Element, Figure, MacroElement
from jinja2 import Template
from sqlalchemy.engine import Connection

from gis_ioc import analysis, tiles
from gis_ioc.catalog import Catalog, Layer
from gis_ioc.settings import Settings

STATIC = Path(__file__).parent / "static"
# Browser libraries, in load order: (folium's name for it, file under STATIC).
LIBRARIES_JS = [("leaflet", "vendor/leaflet-1.9.4/leaflet.js"),
                ("vectorGrid", "vendor/leaflet.vectorgrid-1.3.0/Leaflet.VectorGrid.bundled.min.js"),
                ("gis_ioc", "gis-ioc/views.js")]
LIBRARIES_CSS = [("leaflet_css", "vendor/leaflet-1.9.4/leaflet.css"), ("gis_ioc_css", "gis-ioc/views.css")]
# What folium would fetch from CDNs and the views do not use (no Bootstrap, jQuery or icon fonts).
UNUSED = {"jquery", "bootstrap", "bootstrap_css", "glyphicons_css", "awesome_markers", "awesome_markers_css",
          "awesome_markers_font_css", "awesome_rotate_css"}
VIEWS = ("wall", "incident", "choropleth")
ACTIVE_STATUSES = ("new", "verified", "dispatched", "in_progress", "reopened")
SEVERITIES = ("extreme", "severe", "moderate", "minor", "unknown")
BACKGROUND = "#0b1220"


@dataclass(frozen=True)
class Assets:
    """Where a page finds the libraries: ``base`` URL prefix, or written into the page (``inline``)."""

    base: str = ""
    inline: bool = False


INLINE = Assets(inline=True)


def _walk(element: Any) -> Any:
    yield element
    for child in list(element._children.values()):
        yield from _walk(child)


def _root(m: folium.Map) -> Figure:
    root = m.get_root()
    assert isinstance(root, Figure)
    return root


def offline(m: folium.Map, assets: Assets = INLINE) -> folium.Map:
    """Make a folium map load with no request outside: our copies of the libraries instead of CDN links.

    ``INLINE`` writes them into the page (a notebook, a file); ``Assets(base)`` links ``base/static/…``.
    Call it once the map has its layers; it returns the map.
    """
    for element in _walk(m):
        for attr in ("default_js", "default_css"):
            links = getattr(element, attr, None)
            if not links:
                continue
            unknown = [name for name, _ in links if name not in UNUSED | {n for n, _ in LIBRARIES_JS + LIBRARIES_CSS}]
            if unknown:  # a folium feature we have not bundled: fail here, not with a CDN request on the wall
                raise RuntimeError(f"map view uses {unknown}, which the offline bundle lacks")
            setattr(element, attr, [])
    header = _root(m).header
    for name, path in LIBRARIES_JS:
        if assets.inline:
            text = (STATIC / path).read_text(encoding="utf-8").replace("</script", "<\\/script")
            header.add_child(Element(f"<script>{text}</script>"), name=name)
        else:
            header.add_child(Element(f'<script src="{assets.base}/static/{path}"></script>'), name=name)
    for name, path in LIBRARIES_CSS:
        if assets.inline:
            text = (STATIC / path).read_text(encoding="utf-8")
            if name == "leaflet_css":  # the control icons, as data: URLs
                text = _inline_images(text, (STATIC / path).parent)
            header.add_child(Element(f"<style>{text}</style>"), name=name)
        else:
            header.add_child(Element(f'<link rel="stylesheet" href="{assets.base}/static/{path}">'), name=name)
    return m


def _inline_images(css: str, folder: Path) -> str:
    import base64

    for image in sorted((folder / "images").glob("*.png")):
        data = base64.b64encode(image.read_bytes()).decode()
        css = css.replace(f"images/{image.name}", f"data:image/png;base64,{data}")
    return css


def _finish(m: folium.Map, body_class: str, assets: Assets | None) -> folium.Map:
    """The view's page class (the CSS keys on it) and its libraries, from the server or inside the page."""
    _root(m).html.add_child(Element(f'<script>document.body.classList.add("{body_class}");</script>'))
    _Script(f"GisIocViews.declutter({m.get_name()});").add_to(m)
    return offline(m, assets or Assets())


def page(m: folium.Map) -> str:
    """The view's HTML page."""
    return str(m.get_root().render())


SINCE_MARK = "gis-ioc:since"  # a kept page's place for the id of the last change heard when it is served
VERSIONS_MARK = "gis-ioc:versions"  # ... and for the layer versions heard then


def with_since(page_html: str, since: str | None, versions: Mapping[str, int] | None = None) -> str:
    """A kept page (made with ``since=SINCE_MARK``) as served now: its event stream starts from ``since``.

    The id must be read before the page is served, so whatever the page then reads (tiles, figures) is either
    in what it read or in the events after ``since``: no change falls between. ``since`` means nothing to
    another process (several workers): there the page compares ``versions`` with those its stream's ``hello``
    says, and draws its data again when one is newer.
    """
    served = page_html.replace(json.dumps(SINCE_MARK), json.dumps(since), 1)
    return served.replace(json.dumps(VERSIONS_MARK), json.dumps(dict(versions or {})), 1)


class _Script(MacroElement):
    """A script run after every layer of the map exists (it is the map's last child)."""

    _template = Template("{% macro script(this, kwargs) %}{{ this.code }}{% endmacro %}")

    def __init__(self, code: str) -> None:
        super().__init__()
        self._name = "GisIocScript"
        self.code = code


def _base_map(settings: Settings, conn: Connection, title: str, zoom: int = 9,
              location: tuple[float, float] | None = None) -> folium.Map:
    if location is None:
        box = conn.execute(sa.text(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(geom) AS e FROM admin_units "
            "WHERE valid_to IS NULL) s")).one()
        if box[0] is None:
            x0, y0, x1, y1 = settings.region_bbox
        else:
            x0, y0, x1, y1 = (float(v) for v in box)
        location = ((y0 + y1) / 2, (x0 + x1) / 2)
        fit = [[y0, x0], [y1, x1]]
    else:
        fit = None
    m = folium.Map(location=location, zoom_start=zoom, tiles=None, control_scale=True, prefer_canvas=False,
                   min_zoom=6, max_zoom=19, zoom_snap=0.25)
    if fit is not None:  # the province fills the screen; at once, so no tiles load for the first zoom
        _Script(f"{m.get_name()}.fitBounds({json.dumps(fit)}, {{animate: false, padding: [20, 20]}});").add_to(m)
    if settings.basemap_url:
        folium.TileLayer(tiles=settings.basemap_url, attr=settings.basemap_attribution, name="Basemap",
                         overlay=False, control=True, max_zoom=19).add_to(m)
    root = _root(m)
    root.header.add_child(Element(f'<title>{html.escape(title)}</title><link rel="icon" href="data:,">'),
                          name="title")
    root.header.add_child(Element(f"<style>html, body, .leaflet-container {{ background: {BACKGROUND}; }}</style>"),
                          name="background")
    return m


def _districts_on(conn: Connection) -> date:
    """Today if districts are in force, else their last day (Kon Tum's were abolished on 2025-07-01)."""
    today = date.today()
    last = conn.execute(sa.text(
        "SELECT bool_or(valid_to IS NULL OR valid_to > :d), max(valid_to) FROM admin_units WHERE level = 'district' "
        "AND valid_from <= :d"), {"d": today}).one()
    if last[0] or last[1] is None:
        return today
    return last[1] - timedelta(days=1)


def _units(conn: Connection, level: str, on: date, tolerance: float = 0.0004) -> list[dict[str, Any]]:
    rows = conn.execute(sa.text(
        "SELECT code, name, unit_type, ST_AsGeoJSON(ST_SimplifyPreserveTopology(geom, :tol), 6) AS g, "
        "ST_X(ST_PointOnSurface(geom)) AS lx, ST_Y(ST_PointOnSurface(geom)) AS ly, ST_Area(geom::geography) AS area "
        "FROM admin_units "
        f"WHERE level = :level AND {analysis.IN_FORCE} ORDER BY code"),
        {"level": level, "on": on, "tol": tolerance}).mappings().all()
    return [dict(r) for r in rows]


def _collection(units: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": u["code"], "geometry": json.loads(u["g"]),
         "properties": {"code": u["code"], "name": u["name"], "unit_type": u["unit_type"],
                        **{k: v.get(u["code"]) for k, v in extra.items()}}} for u in units]}


def _labels(units: list[dict[str, Any]], css_class: str, name: str, first_rank: int = 0) -> folium.FeatureGroup:
    """Unit names at a point on each unit's surface; where two would overlap, the larger unit's is drawn.

    ``data-rank`` orders them, larger units first from ``first_rank``; ``GisIocViews.declutter`` hides the rest.
    """
    group = folium.FeatureGroup(name=name, control=False)
    by_area = sorted(units, key=lambda u: -(u.get("area") or 0))
    for rank, u in enumerate(by_area, start=first_rank):
        folium.Marker((u["ly"], u["lx"]), icon=folium.DivIcon(
            html=f'<div class="gis-label {css_class}" data-rank="{rank}">{html.escape(u["name"])}</div>',
            icon_size=(0, 0), class_name="gis-label-anchor"), interactive=False).add_to(group)
    return group


def _style_colours(layer: Layer) -> dict[str, str]:
    return dict(layer.style.colors)


def _legend(title: str, rows: list[tuple[str, str, str]], columns: int = 1) -> str:
    """Legend rows of (shape class, colour, label), in one or two columns."""
    items = "".join(f'<div class="gis-legend-row"><span class="gis-swatch {shape}" style="--c:{colour}"></span>'
                    f"{html.escape(label)}</div>" for shape, colour, label in rows)
    return (f'<div class="gis-legend-block"><div class="gis-legend-title">{html.escape(title)}</div>'
            f'<div class="gis-legend-rows" style="column-count:{columns}">{items}</div></div>')


def _admin_layers(m: folium.Map, conn: Connection) -> dict[str, str]:
    """Former districts (with names) and communes in force today (names from zoom 11), as GeoJSON."""
    today = date.today()
    communes = _units(conn, "commune", today)
    district_day = _districts_on(conn)
    districts = _units(conn, "district", district_day, tolerance=0.0008)
    names = {}
    district_title = "Districts" if district_day == today else f"Districts (until {district_day + timedelta(days=1)})"
    if districts:
        layer = folium.GeoJson(
            _collection(districts), name=district_title,
            style_function=lambda f: {"color": "#9fb3c8", "weight": 3, "opacity": 0.9, "fill": False,
                                      "dashArray": "8 6", "className": "gis-admin gis-district"},
            tooltip=folium.GeoJsonTooltip(fields=["name", "code"], aliases=["District", "Code"]))
        layer.add_to(m)
        names["districts"] = layer.get_name()
        _labels(districts, "gis-district-label", "District names", first_rank=1000).add_to(m)
    if communes:
        layer = folium.GeoJson(
            _collection(communes), name="Communes",
            style_function=lambda f: {"color": "#52606d", "weight": 1.2, "opacity": 0.9, "fillColor": "#1f2933",
                                      "fillOpacity": 0.35, "className": "gis-admin gis-commune"},
            highlight_function=lambda f: {"weight": 2.5, "color": "#cbd2d9"},
            tooltip=folium.GeoJsonTooltip(fields=["name", "unit_type", "code"], aliases=["Commune", "Type", "Code"]))
        layer.add_to(m)
        names["communes"] = layer.get_name()
        # today's communes before the former districts (hidden below zoom 11: then the districts' names show)
        _labels(communes, "gis-commune-label", "Commune names").add_to(m)
    return names


DATA_LAYERS = {"infrastructure": "Infrastructure", "cameras": "Cameras", "incidents": "Incidents"}
BASE_LAYERS = "infrastructure,cameras"  # one tile for both; incidents come in their own, time-filtered tiles
assert BASE_LAYERS == tiles.WALL_LAYERS  # the tiles warmed at start are the wall's
TIME_STEP_MINUTES = 10  # the time filter moves in steps, so every wall asks for the same, cached, tiles
LIVE_HOURS = 24  # the live picture: active incidents and those that ended within the last 24 hours
ENDED_SINCE = "resolved_at >= TIMESTAMP('{since}') OR closed_at >= TIMESTAMP('{since}')"


def time_filter(hours: float | None, now: datetime | None = None) -> str:
    """The wall's time filter as CQL2: active incidents, and those that ended within ``hours`` (None: none).

    The start is ``now`` less ``hours``, taken down to a step of ``TIME_STEP_MINUTES`` (views.js makes the same
    text: a wall's tiles are the ones warmed and cached here).
    """
    active = "status IN (" + ", ".join(f"'{s}'" for s in ACTIVE_STATUSES) + ")"
    if hours is None:
        return active
    now = now or datetime.now(ZoneInfo("UTC"))
    step = TIME_STEP_MINUTES * 60
    since = datetime.fromtimestamp(now.timestamp() // step * step - hours * 3600, ZoneInfo("UTC"))
    at = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{active} OR {ENDED_SINCE.format(since=at)}"


def wall_tiles(now: datetime | None = None) -> list[tuple[str, dict[str, str]]]:
    """The tiles a wall asks for, as (layers, query): warmed at start (``tiles.warm``)."""
    return [(BASE_LAYERS, {}), ("incidents", {"filter": time_filter(LIVE_HOURS, now)})]


def data_tiles(m: folium.Map, server: str) -> dict[str, str]:
    """The wall's data layers as two vector tile layers: infrastructure and cameras in one, incidents apart.

    The incidents' tiles carry the time filter (``{filter}`` in their URL, set by views.js). Each layer keeps
    its own style and its own switch in the layer control (``GisIocViews.hidden``); cluster
    counts are written on the clusters (``GisIocViews.tileRenderer``).
    """
    from folium.plugins import VectorGridProtobuf

    names = {}
    live = f'"filter": {json.dumps(quote(time_filter(LIVE_HOURS), safe=""))}, '  # only the incidents' tiles
    for part, ids, query, extra in (("base", BASE_LAYERS, "", ""),
                                    ("incidents", "incidents", "?filter={filter}", live)):
        styles = ", ".join(f'"{lid}": GisIocViews.style("{lid}")' for lid in ids.split(","))
        options = ("{" f'"vectorTileLayerStyles": {{{styles}}}, "interactive": true, '
                   '"rendererFactory": GisIocViews.tileRenderer, "maxNativeZoom": 19, "maxZoom": 19, '
                   f'{extra}"fetchOptions": {{"cache": "no-cache"}}, "pane": "dataPane"' "}")
        grid = VectorGridProtobuf(f"{server}/tiles/{ids}/{{z}}/{{x}}/{{y}}.mvt{query}", f"{part} tiles", options,
                                  control=False)
        grid.add_to(m)
        names[part] = str(grid.get_name())
    return names


# the time bar: the live picture's window, and replays (views.js wires it; no inline script: the CSP allows none)
TIME_BAR = """<div id="gis-timebar" class="gis-panel">
 <label>Incidents shown <select id="gis-window">
  <option value="24" selected>active + ended in 24 h</option>
  <option value="168">active + ended in 7 days</option>
  <option value="">active only</option></select></label>
 <span class="gis-replay-buttons">Replay <button type="button" data-replay="24">last 24 h</button>
  <button type="button" data-replay="168">last 7 days</button></span>
 <div id="gis-replay" hidden>
  <button type="button" id="gis-play">▶ Play</button>
  <input type="range" id="gis-at" aria-label="Time of the replay">
  <select id="gis-speed" aria-label="Replay speed"><option value="1">1 min/s</option>
   <option value="10">10 min/s</option><option value="30">30 min/s</option><option value="60">1 h/s</option>
   <option value="180">3 h/s</option></select>
  <button type="button" id="gis-back">Back to live</button>
  <div id="gis-at-label"></div><div id="gis-replay-note" class="gis-muted"></div>
 </div>
</div>"""


def wall(conn: Connection, catalog: Catalog, settings: Settings, *, server: str = "",
         assets: Assets | None = None, since: str | None = None, versions: str | None = None) -> folium.Map:
    """The full-screen wall map: boundaries with names, infrastructure, cameras, incidents, live.

    Big layers (incidents, cameras, infrastructure) come as vector tiles from ``server`` (the page's own
    origin when empty); the page then follows ``/events`` and redraws only its data layers. ``since``: the id
    of the last change heard before the page was served (its stream starts there), or ``SINCE_MARK`` for a
    page kept and served many times (``with_since``; ``versions``: ``VERSIONS_MARK`` there).
    """
    assets = assets or Assets(server)
    m = _base_map(settings, conn, "gis-ioc — operations wall")
    for pane, z in (("fovPane", 425), ("dataPane", 430), ("livePane", 450)):
        folium.map.CustomPane(pane, z_index=z).add_to(m)
    admin = _admin_layers(m, conn)
    layers = {lid: catalog.get(lid, conn) for lid in DATA_LAYERS}
    grids = data_tiles(m, server)
    switches = {}
    for lid, title in DATA_LAYERS.items():  # empty groups: the layer control's switches for the tile layers
        group = folium.FeatureGroup(name=title, show=True)
        group.add_to(m)
        switches[lid] = group.get_name()
    control = folium.LayerControl(collapsed=False, position="topright")
    control.add_to(m)
    config = {
        "server": server, "timezone": settings.timezone, "clusterBelow": {
            lid: layer.tiles.cluster_below_zoom for lid, layer in layers.items()},
        "colors": {lid: _style_colours(layer) for lid, layer in layers.items()},
        "active": list(ACTIVE_STATUSES), "fovFromZoom": 13, "communeLabelsFromZoom": 11,
        "time": {"active": time_filter(None), "ended": ENDED_SINCE,
                 "step": TIME_STEP_MINUTES, "hours": LIVE_HOURS}, "since": since, "versions": versions,
    }
    legend = "".join([
        _legend("Incidents (CAP severity)", [("gis-dot", c, s) for s, c in _style_colours(layers["incidents"]).items()]
                + [("gis-dot gis-active", "#ffffff", "active: large, white ring"),
                   ("gis-dot gis-faded", "#bdbdbd", "ended in the time bar's window: faded"),
                   ("gis-square gis-area", "#fd8d3c", "an area (flood, forest fire): outlined, under the points"),
                   ("gis-dot gis-cluster", "#fd8d3c", "cluster below zoom "
                    f"{layers['incidents'].tiles.cluster_below_zoom}: its count, its commonest severity")]),
        _legend("Cameras", [("gis-dot", c, s) for s, c in _style_colours(layers["cameras"]).items()]
                + [("gis-sector", "#2ecc71", f"field of view (zoom ≥ {config['fovFromZoom']})")]),
        _legend("Infrastructure", [("gis-line" if k in ("road", "river") else "gis-square", c, k.replace("_", " "))
                                   for k, c in _style_colours(layers["infrastructure"]).items()], columns=2),
        _legend("Boundaries", [("gis-line gis-dashed", "#9fb3c8", "district (before the 2025 reform)"),
                               ("gis-line", "#52606d", "commune")]),
    ])
    _root(m).html.add_child(Element(
        '<div id="gis-clock" class="gis-panel"><div class="gis-time">--:--:--</div><div class="gis-date"></div>'
        '<div id="gis-live" class="gis-live-off">connecting…</div></div>'
        '<div id="gis-kpi" class="gis-panel"><div class="gis-panel-title">Operations</div>'
        '<div class="gis-kpi-body">loading…</div></div>'
        f'<div id="gis-legend" class="gis-panel gis-legend">{legend}</div>' + TIME_BAR))
    _Script(f"GisIocViews.startWall({m.get_name()}, {{grids: {{base: {grids['base']}, "
            f"incidents: {grids['incidents']}}}, "
            f"switches: {{{', '.join(f'{k}: {v}' for k, v in switches.items())}}}, "
            f"admin: {{{', '.join(f'{k}: {v}' for k, v in admin.items())}}}, control: {control.get_name()}}}, "
            f"{json.dumps(config)});").add_to(m)
    return _finish(m, "gis-wall", assets)


def kpis(conn: Connection, catalog: Catalog, settings: Settings) -> dict[str, Any]:
    """The wall's KPI panel: active incidents by severity, cameras online, incidents in 24 h by today's commune.

    The 24 hours are the last ones, or, when they hold no incident (a demo, an archive), the 24 hours up to the
    latest report, said so. The communes are today's (there are no districts since 1 July 2025): the ten with
    most incidents, and the province's total.
    """
    now = datetime.now(ZoneInfo(settings.timezone))
    active: dict[str, int] = dict(conn.execute(sa.text(  # the counts the database keeps (migration 018)
        "SELECT severity, sum(n) FROM incident_totals WHERE status = ANY(:s) GROUP BY 1"),
        {"s": list(ACTIVE_STATUSES)}).all())
    cameras = conn.execute(sa.text(
        "SELECT count(*) FILTER (WHERE status = 'online'), count(*) FROM cameras")).one()
    end = now
    total = conn.execute(sa.text("SELECT count(*) FROM incidents WHERE reported_at >= :t AND merged_into IS NULL"),
                         {"t": now - timedelta(hours=24)}).scalar() or 0
    if not total:
        latest = conn.execute(sa.text("SELECT max(reported_at) FROM incidents WHERE reported_at <= :t"),
                              {"t": now}).scalar()
        if latest is not None:
            end = latest.astimezone(ZoneInfo(settings.timezone))
            total = conn.execute(sa.text(
                "SELECT count(*) FROM incidents WHERE reported_at >= :a AND reported_at <= :b AND merged_into IS NULL"),
                {"a": end - timedelta(hours=24), "b": end}).scalar() or 0
    window = analysis.Window(end - timedelta(hours=24), None if end is now else end + timedelta(microseconds=1))
    by_commune: list[dict[str, Any]] = []
    if total:
        communes = analysis.stats(conn, catalog, "incidents", "commune", window=window, at=end.date())
        by_commune = [{"code": u["code"], "name": u["name"], "type": u.get("unit_type"), "count": u["count"]}
                      for u in sorted(communes["units"], key=lambda u: (-u["count"], u["code"])) if u["count"]][:10]
    return {
        "at": now.isoformat(timespec="seconds"),
        "active_by_severity": {s: int(active.get(s, 0)) for s in SEVERITIES},
        "active_total": int(sum(active.values())),
        "cameras": {"online": int(cameras[0]), "total": int(cameras[1]),
                    "online_pct": round(100 * cameras[0] / cameras[1], 1) if cameras[1] else None},
        "window": {"from": (end - timedelta(hours=24)).isoformat(),
                   "to": end.isoformat(),
                   "label": "last 24 h" if end is now else f"24 h to {end:%Y-%m-%d %H:%M} (the latest reports)"},
        "window_total": int(total),
        "top_communes": by_commune,
    }


def not_found_page(what: str) -> str:
    """A plain 404 page in the views' style (no external requests)."""
    links = " · ".join(f'<a href="/views/{v}">{v}</a>' for v in ("wall", "choropleth"))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Not found</title><style>body{{background:"
            f"{BACKGROUND};color:#e4e7eb;font:20px/1.5 'DejaVu Sans',sans-serif;padding:3em}}a{{color:#7cc4fa}}"
            f"</style></head><body><h1>Not found</h1><p>{html.escape(what)}</p><p>Views: {links}</p></body></html>")


def sign_in_page(following: str, problem: str = "") -> str:
    """The page a view shows when reads need a key: one field, posted to this server only."""
    note = f"<p class='bad'>{html.escape(problem)}</p>" if problem else ""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>gis-ioc — sign in</title><style>body{{background:"
            f"{BACKGROUND};color:#e4e7eb;font:20px/1.5 'DejaVu Sans',sans-serif;padding:3em}}input{{font:inherit;"
            "padding:.3em;width:32em;max-width:90%}}button{{font:inherit;padding:.3em 1em}}.bad{{color:#ff7b72}}"
            "</style></head><body><h1>gis-ioc</h1><p>This server shows its maps to holders of an API key (viewer or "
            f"above). The key is kept by this browser for this server only.</p>{note}"
            "<form method='post' action='/views/session'><p><input type='password' name='key' autocomplete='off' "
            f"autofocus placeholder='gioc_…' aria-label='API key'></p><input type='hidden' name='next' "
            f"value='{html.escape(following, quote=True)}'><p><button type='submit'>Open</button></p></form>"
            "</body></html>")
