"""The view of one incident (``/views/incidents/{id}``), made with the views' common parts (``gis_ioc.maps``).

Its commune, the cameras that see it or why not, the infrastructure around it, and the fire station, hospital
and police soonest there by road with their ETAs.

Live on a server (made again when what it shows changes), a snapshot in a file or a notebook.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import folium
import shapely
import shapely.geometry
import shapely.ops
import sqlalchemy as sa
from branca.element import Element
from sqlalchemy.engine import Connection

from gis_ioc import analysis, features
from gis_ioc.catalog import Catalog
from gis_ioc.errors import InvalidInput, NotFound
from gis_ioc.maps import Assets, _base_map, _finish, _root, _Script, _style_colours
from gis_ioc.settings import Settings


def incident(conn: Connection, catalog: Catalog, settings: Settings, incident_id: int, *,
             assets: Assets | None = None, cameras: int = 5, radius_m: float = 2000,
             server: str | None = "", since: str | None = None,
             versions: Mapping[str, int] | None = None) -> folium.Map:
    """One incident: its admin unit, its nearest online cameras and what they see, infrastructure within 2 km.

    Its ETAs (leaving now) follow the clock. ``server``: where the page hears of changes (``""``: the server
    that made it), made again when the incident, one of its cameras or a camera in its circle changes; None: a
    snapshot (a file, a notebook), never made again. ``since``: the id of the last change the server had heard
    before the page was read (``ChangeListener.here``): the page's event stream starts after it, so a change
    made while the page loads is not missed. ``versions``: the layer versions heard then, for a stream from
    another process (several workers), where ``since`` means nothing.
    """
    layer = catalog.get("incidents", conn)
    found = features.item(conn, layer, incident_id)
    if found is None:
        raise NotFound(f"incident {incident_id} does not exist")
    feature = json.loads(found)
    props = feature["properties"]
    point = conn.execute(sa.text("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) AS p FROM incidents "
                                 "WHERE id = :i) s"), {"i": incident_id}).one()
    lon, lat = float(point[0]), float(point[1])
    units = analysis.locate(conn, lon, lat)
    near = analysis.nearest(conn, catalog, "cameras", incident=incident_id, k=cameras, filter_text="status = 'online'")
    seeing = {c["id"] for c in analysis.cameras_seeing(conn, lon, lat, online_only=True)}
    reach = analysis.impact(conn, catalog, incident=incident_id, radius_m=radius_m, layers=("infrastructure",))
    m = _base_map(settings, conn, f"Incident {incident_id}: {props.get('title') or ''}", zoom=15, location=(lat, lon))
    commune = units.get("commune")
    if commune:
        geom = conn.execute(sa.text(
            "SELECT ST_AsGeoJSON(geom, 6) FROM admin_units WHERE code = :c AND valid_from = :f"),
            {"c": commune["code"], "f": commune["valid_from"]}).scalar()
        folium.GeoJson({"type": "Feature", "geometry": json.loads(str(geom)), "properties": {"name": commune["name"]}},
                       name=f"Commune {commune['name']}",
                       style_function=lambda f: {"color": "#9fb3c8", "weight": 2, "fillColor": "#1f2933",
                                                 "fillOpacity": 0.35, "className": "gis-admin"}).add_to(m)
    colours = _style_colours(layer)
    camera_group = folium.FeatureGroup(name="Nearest online cameras")
    camera_rows = []
    reach_deg = radius_m / 111_000
    corners = [(lat - reach_deg, lon - reach_deg), (lat + reach_deg, lon + reach_deg)]
    # Each camera and facility is a numbered badge on the map and a numbered row in the panel: their names in
    # full beside each of them piled up over the city (a label shows on hover)
    for number, cam in enumerate(near["features"], 1):
        cp = cam["properties"]
        x, y = cam["geometry"]["coordinates"][:2]
        sees = cam["id"] in seeing
        colour = "#2ecc71" if sees else "#7b8794"
        sector = analysis.fov_sector(x, y, cp.get("heading_deg") or 0, cp.get("fov_deg") or 360,
                                     cp.get("range_m") or 50)
        folium.GeoJson(sector.__geo_interface__, style_function=lambda f, c=colour: {
            "color": c, "weight": 1.5, "fillColor": c, "fillOpacity": 0.25, "className": "gis-fov"},
        ).add_to(camera_group)
        label = f"C{number} {cp.get('name') or ''} · {cp['distance_m']:,.0f} m{' · sees it' if sees else ''}"
        folium.CircleMarker((y, x), radius=8, color="#0b1220", weight=2, fill=True, fill_color=colour, fill_opacity=1,
                            class_name="gis-camera", tooltip=folium.Tooltip(html.escape(label), direction="right"),
                            ).add_to(camera_group)
        _badge((y, x), f"C{number}", colour).add_to(camera_group)
        corners.append((y, x))
        camera_rows.append((f"C{number}", cp.get("name") or str(cam["id"]), cp["distance_m"],
                            "sees it" if sees else _why_not(cp, x, y, lon, lat)))
    camera_group.add_to(m)
    infra_group = folium.FeatureGroup(name="Infrastructure within 2 km")
    infra_rows = []
    infra_colours = _style_colours(catalog.get("infrastructure", conn))
    here = shapely.Point(lon, lat)
    for number, f in enumerate(reach["layers"]["infrastructure"], 1):
        fp = f["properties"]
        colour = infra_colours.get(fp.get("kind"), "#5dade2")
        label = f"F{number} {fp.get('kind', '').replace('_', ' ')}: {fp.get('name') or ''} — {fp['distance_m']:.0f} m"
        folium.GeoJson(f, style_function=lambda _, c=colour: {"color": c, "weight": 3, "className": "gis-infra"},
                       marker=folium.CircleMarker(radius=7, fill=True, fill_color=colour, color="#0b1220",
                                                  fill_opacity=1, weight=2),
                       tooltip=folium.Tooltip(html.escape(label), direction="right"),
                       ).add_to(infra_group)
        # the badge where the facility is nearest the incident (a road: the point of it that is 283 m away)
        spot = shapely.ops.nearest_points(shapely.geometry.shape(f["geometry"]), here)[0]
        _badge((spot.y, spot.x), f"F{number}", colour).add_to(infra_group)
        infra_rows.append((f"F{number}", fp.get("kind", ""), fp.get("name") or "", fp["distance_m"]))
    infra_group.add_to(m)
    road_rows = _by_road(conn, catalog, m, incident_id, infra_colours, settings.timezone)
    folium.Circle((lat, lon), radius=radius_m, color="#f5f7fa", weight=1, dash_array="6 6", fill=False,
                  interactive=False).add_to(m)
    severity_colour = colours.get(props.get("severity") or "unknown", "#bdbdbd")
    folium.GeoJson(feature, name="Incident", style_function=lambda _: {
        "color": "#ffffff", "weight": 3, "fillColor": severity_colour, "fillOpacity": 0.6, "className": "gis-incident"},
        marker=folium.CircleMarker(radius=13, fill=True, fill_color=severity_colour, color="#ffffff", weight=3,
                                   fill_opacity=1)).add_to(m)
    folium.LayerControl(collapsed=False).add_to(m)
    south, west = min(c[0] for c in corners), min(c[1] for c in corners)
    north, east = max(c[0] for c in corners), max(c[1] for c in corners)
    _Script(f"{m.get_name()}.fitBounds({json.dumps([[south, west], [north, east]])}, "
            "{animate: false, paddingTopLeft: [440, 20], paddingBottomRight: [20, 20]});").add_to(m)
    live = {"id": incident_id, "lon": lon, "lat": lat, "radius_m": radius_m, "server": server,
            "cameras": [c["id"] for c in near["features"]], "timezone": settings.timezone, "every_s": LIVE_EVERY_S,
            "route_kinds": _route_kinds(catalog), "since": since,
            "versions": dict(versions) if versions is not None else None}
    _Script(f"GisIocViews.startIncident({m.get_name()}, {json.dumps(live)});").add_to(m)
    unit_line = " · ".join(f"{u['unit_type']} {u['name']} ({u['code']})" for u in (units.get("commune"),
                                                                                    units.get("district")) if u)
    rows_cam = "".join(f"<tr><td class='gis-ref'>{i}</td><td>{html.escape(n)}</td><td class='num'>{d:,.0f} m</td>"
                       f"<td>{html.escape(s)}</td></tr>" for i, n, d, s in camera_rows) or \
        "<tr><td colspan=4>no online camera</td></tr>"
    rows_infra = "".join(f"<tr><td class='gis-ref'>{i}</td><td>{html.escape(k.replace('_', ' '))}</td>"
                         f"<td>{html.escape(n)}</td><td class='num'>{d:,.0f} m</td></tr>"
                         for i, k, n, d in infra_rows) or "<tr><td colspan=4>nothing within 2 km</td></tr>"
    when = _local_time(props.get("reported_at"), settings.timezone)
    _root(m).html.add_child(Element(
        f'<div id="gis-incident" class="gis-panel gis-side"><div class="gis-panel-title">Incident {incident_id}'
        f'{"" if server is None else "<span id=gis-live class=gis-live-off>connecting…</span>"}</div>'
        f'<h2>{html.escape(str(props.get("title") or ""))}</h2>'
        f'<div class="gis-badge" style="--c:{severity_colour}">{html.escape(str(props.get("severity")))}</div> '
        f'<span class="gis-status">{html.escape(str(props.get("status")))}</span>'
        f'<p>{html.escape(str(props.get("type") or "").replace("_", " "))} · reported {html.escape(when)}</p>'
        f'<p>{html.escape(unit_line) or "outside every administrative unit"}</p>'
        f'<h3>Nearest online cameras</h3><table id="gis-cameras">{rows_cam}</table>'
        f'<h3>Infrastructure within {radius_m / 1000:g} km</h3><table id="gis-infra">{rows_infra}</table>'
        f'<h3>Soonest there by road</h3><table id="gis-by-road">{road_rows}</table></div>'))
    return _finish(m, "gis-view", assets)


BY_ROAD = (("fire_station", "fire station"), ("hospital", "hospital"), ("police", "police"))
LIVE_EVERY_S = 5  # an incident's view is made again at most this often when what it shows changes


def _by_road(conn: Connection, catalog: Catalog, m: folium.Map, incident_id: int, colours: dict[str, str],
             timezone: str) -> str:
    """The fire station, hospital and police soonest at the incident by road (their routes and times).

    The panel names the one nearest in a straight line when it is not the soonest.
    """
    from gis_ioc import routing

    group = folium.FeatureGroup(name="Routes by road")
    rows = []
    for kind, label in BY_ROAD:
        try:
            found = routing.nearest_by_time(conn, catalog, "infrastructure", filter_text=f"kind = '{kind}'",
                                            incident=incident_id, k=1)
        except InvalidInput as err:  # no road near the incident, no network: said, the page still shown
            rows.append(f"<tr><td>{label}</td><td colspan=3>{html.escape(err.message)}</td></tr>")
            continue
        if not found["features"]:
            rows.append(f"<tr><td>{label}</td><td colspan=3>none reachable by road</td></tr>")
            continue
        best = found["features"][0]
        bp = best["properties"]
        colour = colours.get(kind, "#5dade2")
        folium.GeoJson(best["geometry"], style_function=lambda _, c=colour: {
            "color": c, "weight": 5, "opacity": 0.9, "className": "gis-route"},
            tooltip=folium.Tooltip(html.escape(f"{bp['name']}: {bp['minutes']} min by road"))).add_to(group)
        eta = datetime.now(ZoneInfo(timezone)) + timedelta(seconds=bp["time_s"] or 0)  # leaving now
        other = found["nearest_by_distance"]
        note = "" if other["also_soonest"] else (
            f"<div class='gis-muted'>nearest in a straight line: {html.escape(other['name'] or '')} "
            f"({other['straight_m'] / 1000:.1f} km), slower by road</div>")
        rows.append(f"<tr><td>{label}</td><td>{html.escape(bp['name'] or '')}{note}</td>"
                    f"<td class='num gis-eta'>{bp['minutes']:.0f} min<div class='gis-muted'>ETA "
                    f"<span data-eta-s='{bp['time_s'] or 0:.0f}'>{eta:%H:%M}</span></div></td>"
                    f"<td class='num'>{bp['road_m'] / 1000:.1f} km</td></tr>")
    group.add_to(m)
    return "".join(rows)


def _route_kinds(catalog: Catalog) -> list[str]:
    """The kinds of infrastructure whose change can change the routes shown: the facilities and the roads."""
    network = catalog.builtin["infrastructure"].network if "infrastructure" in catalog.builtin else None
    roads = [str(v) for k, v in (network.where if network else {}).items() if k == "kind"]
    return [k for k, _ in BY_ROAD] + roads


def _badge(at: tuple[float, float], text: str, colour: str) -> folium.Marker:
    """A small numbered badge beside a point (its row in the side panel has the same number)."""
    return folium.Marker(at, interactive=False, icon=folium.DivIcon(
        html=f'<div class="gis-badge-num" style="--c:{colour}">{html.escape(text)}</div>', icon_size=(0, 0),
        class_name="gis-label-anchor"))


def _local_time(value: Any, timezone: str) -> str:
    """An RFC 3339 time as local ``YYYY-MM-DD HH:MM (UTC+7)``."""
    if not value:
        return "unknown time"
    moment = datetime.fromisoformat(str(value)).astimezone(ZoneInfo(timezone))
    offset = moment.utcoffset() or timedelta()
    return f"{moment:%Y-%m-%d %H:%M} (UTC{offset.total_seconds() / 3600:+g})"


def _why_not(camera: dict[str, Any], x: float, y: float, lon: float, lat: float) -> str:
    """Why a camera does not see a point: too far for its range, or looking another way."""
    from pyproj import Geod

    bearing, _, metres = Geod(ellps="WGS84").inv(x, y, lon, lat)
    reach = camera.get("range_m") or 50
    if metres > reach:
        return f"out of range ({metres:,.0f} m; it sees {reach:,.0f} m)"
    heading, fov = camera.get("heading_deg") or 0, camera.get("fov_deg") or 360
    off = abs((bearing - heading + 180) % 360 - 180)
    if fov < 360 and off > fov / 2:
        return f"looks elsewhere (it faces {heading % 360:.0f}°, the incident is at {bearing % 360:.0f}°)"
    return "not in its field of view"
