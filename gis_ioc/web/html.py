"""HTML pages of the API: browsable, with a small map drawn as inline SVG (no request leaves the server)."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from gis_ioc.catalog import Layer

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#10151c;color:#e6edf3}
header{background:#1b2430;padding:.6rem 1.2rem;font-weight:600}
header a{color:#e6edf3;text-decoration:none;margin-right:1rem}
main{padding:1rem 1.2rem}
a{color:#7cc4ff}
table{border-collapse:collapse;font-size:.9rem}
td,th{border-bottom:1px solid #2d3947;padding:.25rem .6rem;text-align:left;vertical-align:top}
svg{background:#0b0f14;border:1px solid #2d3947}
.muted{color:#8b98a5}
"""


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)} — gis-ioc</title>"
        f"<meta name='viewport' content='width=device-width'><style>{STYLE}</style></head><body>"
        "<header><a href='/'>gis-ioc</a><a href='/collections?f=html'>layers</a>"
        "<a href='/conformance?f=html'>conformance</a><a href='/docs'>API</a></header>"
        f"<main><h1>{escape(title)}</h1>{body}</main></body></html>"
    )


def _links(links: list[dict[str, str]]) -> str:
    rows = "".join(
        f"<tr><td>{escape(link['rel'])}</td><td><a href='{escape(link['href'])}'>"
        f"{escape(link.get('title') or link['href'])}</a></td><td class='muted'>{escape(link['type'])}</td></tr>"
        for link in links
    )
    return f"<table>{rows}</table>"


def landing(body: dict[str, Any]) -> str:
    """The landing page."""
    return _page(body["title"], f"<p>{escape(body['description'])}</p>{_links(body['links'])}")


def conformance(classes: list[str]) -> str:
    """The conformance classes."""
    return _page("Conformance", "<ul>" + "".join(f"<li>{escape(c)}</li>" for c in classes) + "</ul>")


def collections(body: dict[str, Any]) -> str:
    """The layer list."""
    rows = "".join(
        f"<tr><td><a href='/collections/{escape(c['id'])}?f=html'>{escape(c['id'])}</a></td>"
        f"<td>{escape(c['title'])}</td><td>{', '.join(c['geometryTypes'])}</td>"
        f"<td>{'~' if c.get('countIsEstimate') else ''}{c.get('numberOfFeatures', '')}</td>"
        f"<td><a href='/collections/{escape(c['id'])}/items?f=html'>features</a></td></tr>"
        for c in body["collections"]
    )
    head = "<tr><th>id</th><th>title</th><th>geometry</th><th>features</th><th></th></tr>"
    return _page("Layers", f"<table>{head}{rows}</table>")


def collection(body: dict[str, Any], layer: Layer) -> str:
    """One layer."""
    props = "".join(
        f"<tr><td>{escape(name)}</td><td>{p.type.value}</td><td>{escape(p.description)}"
        f"{' (' + ', '.join(map(escape, p.enum)) + ')' if p.enum else ''}</td></tr>"
        for name, p in layer.properties.items()
    )
    extent = escape(json.dumps(body.get("extent", {})))
    note = f"<p class='muted'>{escape(body['note'])}</p>" if body.get("note") else ""
    return _page(layer.title, f"<p>{escape(layer.description)}</p>{note}<p>{body.get('numberOfFeatures', '')} "
                 f"features · extent <code>{extent}</code></p>{_links(body['links'])}<h2>Properties</h2>"
                 f"<table>{props}</table>")


def _parts(kind: str, c: Any) -> list[Any]:
    """The point groups or rings of a GeoJSON geometry, to draw one by one."""
    if kind == "Point":
        return [[c]]
    if kind in ("MultiPoint", "LineString"):
        return [c]
    if kind in ("MultiLineString", "Polygon"):
        return list(c)
    if kind == "MultiPolygon":
        return [ring for polygon in c for ring in polygon]
    return []


def _svg(features: list[dict[str, Any]], layer: Layer, width: int = 640, height: int = 420) -> str:
    """A small map of GeoJSON features (lon/lat), coloured like the layer's default style."""
    coords: list[tuple[float, float]] = []

    def walk(value: Any) -> None:
        if isinstance(value, list) and value and isinstance(value[0], int | float):
            coords.append((float(value[0]), float(value[1])))
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for f in features:
        if f.get("geometry"):
            walk(f["geometry"]["coordinates"])
    if not coords:
        return "<p class='muted'>nothing to draw</p>"
    xs, ys = [c[0] for c in coords], [c[1] for c in coords]
    xmin, xmax, ymin, ymax = min(xs), max(xs), min(ys), max(ys)
    span = max(xmax - xmin, ymax - ymin, 1e-4)
    scale = min(width, height) / span * 0.92

    def pt(x: float, y: float) -> str:
        return f"{(x - xmin) * scale + 12:.1f},{(ymax - y) * scale + 12:.1f}"

    style = layer.style
    shapes = []
    for f in features:
        geom = f.get("geometry")
        if not geom:
            continue
        value = (f.get("properties") or {}).get(style.color_by or "")
        color = style.colors.get(str(value), style.color)
        kind, c = geom["type"], geom["coordinates"]
        parts = _parts(kind, c)
        for part in parts:
            if kind in ("Point", "MultiPoint"):
                for p in part:
                    shapes.append(f"<circle cx='{pt(*p).split(',')[0]}' cy='{pt(*p).split(',')[1]}' r='3' "
                                  f"fill='{color}'/>")
            else:
                closed = kind in ("Polygon", "MultiPolygon")
                tag = "polygon" if closed else "polyline"
                fill = f"fill='{color}' fill-opacity='0.25'" if closed else "fill='none'"
                shapes.append(f"<{tag} points='{' '.join(pt(*p) for p in part)}' stroke='{color}' {fill}/>")
    return f"<svg width='{width}' height='{height}' viewBox='0 0 {width} {height}'>{''.join(shapes)}</svg>"


def items(layer: Layer, features: list[dict[str, Any]], page: Any, links: list[dict[str, str]], req: Any) -> str:
    """A page of features: a map, paging links, a table."""
    names = req.properties if req.properties is not None else [n for n in layer.properties if n != layer.id_column]
    head = "<tr><th>id</th>" + "".join(f"<th>{escape(n)}</th>" for n in names) + "</tr>"
    rows = "".join(
        f"<tr><td><a href='/collections/{layer.id}/items/{f['id']}?f=html'>{f['id']}</a></td>"
        + "".join(f"<td>{escape(str((f.get('properties') or {}).get(n, '')))}</td>" for n in names)
        + "</tr>"
        for f in features
    )
    nav = " ".join(f"<a href='{escape(link['href'])}'>{escape(link['rel'])}</a>" for link in links
                   if link["rel"] in ("next", "prev"))
    matched = f" of {page.matched}" if page.matched is not None else ""
    return _page(f"{layer.title}: features", f"<p>{page.returned}{matched} features {nav}</p>"
                 f"{_svg(features, layer)}<table>{head}{rows}</table>")


def feature(layer: Layer, feat: dict[str, Any]) -> str:
    """One feature."""
    rows = "".join(f"<tr><td>{escape(k)}</td><td>{escape(str(v))}</td></tr>"
                   for k, v in (feat.get("properties") or {}).items())
    return _page(f"{layer.title} {feat['id']}", f"{_svg([feat], layer)}<table>{rows}</table>"
                 f"<p><a href='/collections/{layer.id}/items?f=html'>all features</a></p>")
