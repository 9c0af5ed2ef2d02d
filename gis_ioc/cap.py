"""CAP 1.2 (OASIS Common Alerting Protocol): incidents as alerts, an Atom feed of them, other agencies' alerts in.

Out: one incident is one alert (``/collections/incidents/items/{id}?f=cap``). Its identifier names the
incident and the version (the row's ``updated_at``); the first version is an ``Alert``, later ones are
``Update``s that reference it, a rejected incident is a ``Cancel``. Urgency and certainty follow the
lifecycle, severity is ours (already CAP's words), the area is the incident's polygon(s) (outer rings:
CAP has no holes) or a circle of radius 0 at its point, described by the commune it lies in, whose GSO
code is the geocode. ``/alerts.atom`` lists the active ones at or above a severity.

In: an alert (a file for ``gis-ioc load``, or a body POSTed to the incidents) becomes an incident with
its area: polygons as they are, circles as geodesic polygons (a point when the radius is 0). XML is
parsed by defusedxml: a document type, entities or external references are refused, never expanded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET
from zoneinfo import ZoneInfo

import defusedxml.ElementTree as SafeET
import shapely
import sqlalchemy as sa
from defusedxml import DefusedXmlException
from pyproj import Geod
from shapely.geometry import mapping, shape

from gis_ioc.errors import Forbidden, IngestError
from gis_ioc.ingest.rows import fold

NS = "urn:oasis:names:tc:emergency:cap:1.2"
ATOM = "http://www.w3.org/2005/Atom"
MEDIA = "application/cap+xml"
ATOM_MEDIA = "application/atom+xml"
MAX_ALERT_BYTES = 1 << 20  # one alert POSTed; files go through gis-ioc load / the import route
MAX_REFERENCES = 1000  # earlier messages an Update or Cancel may name

# our incident types: CAP category and the event's words (Vietnamese, the alerts' language)
TYPES: dict[str, tuple[str, str]] = {
    "traffic_accident": ("Transport", "Tai nạn giao thông"),
    "fire": ("Fire", "Cháy"),
    "forest_fire": ("Fire", "Cháy rừng"),
    "flood": ("Met", "Lũ lụt, ngập úng"),
    "landslide": ("Geo", "Sạt lở đất"),
    "public_security": ("Security", "An ninh trật tự"),
    "medical": ("Health", "Cấp cứu y tế"),
    "infrastructure_fault": ("Infra", "Sự cố hạ tầng"),
    "environment": ("Env", "Sự cố môi trường"),
    "urban_order": ("Safety", "Trật tự đô thị"),
    "other": ("Other", "Sự cố khác"),
}
SEVERITIES = ("unknown", "minor", "moderate", "severe", "extreme")  # CAP's, least first
ACTIVE = ("new", "verified", "dispatched", "in_progress", "reopened")
URGENCY = {"resolved": "Past", "closed": "Past", "rejected": "Past"}  # else Immediate
CERTAINTY = {"new": "Likely", "reopened": "Likely", "rejected": "Unlikely"}  # else Observed (an operator saw to it)
GEOCODE = "GSO_commune_code"
_GEOD = Geod(ellps="WGS84")
_CIRCLE_POINTS = 64


@dataclass(frozen=True)
class Sender:
    """Who the alerts come from."""

    sender: str  # CAP sender: globally unique, no spaces or commas (a domain name)
    name: str  # shown to people
    timezone: str  # times are written in the province's offset

    def __post_init__(self) -> None:
        if not self.sender or re.search(r"[\s,<&]", self.sender):
            raise ValueError("cap_sender: no spaces, commas, < or & (a domain name such as ioc.kontum.gov.vn)")


@dataclass(frozen=True)
class Message:
    """Who sent an alert and which earlier ones it changes: each as ``sender,identifier``."""

    ref: str
    kind: str  # Alert, Update, Cancel (Ack and Error are taken as Alerts: they describe nothing new)
    references: tuple[str, ...] = ()

    @property
    def sender(self) -> str:
        """The CAP sender of this message (a domain name)."""
        return self.ref.split(",", 1)[0]

    def check_sender(self) -> None:
        """Refuse a message that references another sender's alerts: a sender changes only what it sent.

        No API key widens this: a key lets its caller send alerts, and each alert speaks for its sender only.
        An operator changes another agency's incident as an operator (PATCH, audited under the key's name).
        """
        foreign = next((r for r in self.references if r.split(",", 1)[0] != self.sender), None)
        if foreign is not None:
            raise Forbidden(f"sender: {self.sender[:100]!r} may update or cancel only its own alerts; "
                            f"{foreign[:200]!r} was sent by {foreign.split(',', 1)[0][:100]!r}", param="sender")


def supports(properties: Iterable[str]) -> bool:
    """A layer whose rows can be written as alerts (the incidents' fields)."""
    return {"type", "severity", "status", "title", "reported_at"} <= set(properties)


def _time(value: datetime, zone: str) -> str:
    """CAP's dateTime: seconds, and the offset with a colon (never Z)."""
    text = value.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%dT%H:%M:%S%z")
    return f"{text[:-2]}:{text[-2:]}"


def _identifier(sender: Sender, incident_id: Any, version: datetime) -> str:
    return f"urn:gis-ioc:{sender.sender}:incident:{incident_id}:{version.strftime('%Y%m%dT%H%M%S%f')}"


def _add(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, f"{{{NS}}}{tag}")
    if text is not None:
        element.text = text
    return element


def _pairs(ring: Iterable[Iterable[float]]) -> str:
    return " ".join(f"{lat:.6f},{lon:.6f}" for lon, lat, *_ in ring)


def alert_element(row: dict[str, Any], sender: Sender, web: str) -> ET.Element:
    """One incident (``incident_rows``' row) as a CAP ``alert`` element."""
    alert = ET.Element(f"{{{NS}}}alert")
    created, updated = row["created_at"], row["updated_at"]
    first = _identifier(sender, row["id"], created)
    rejected = row["status"] == "rejected"
    changed = updated > created
    _add(alert, "identifier", _identifier(sender, row["id"], updated) if changed else first)
    _add(alert, "sender", sender.sender)
    _add(alert, "sent", _time(updated if changed else created, sender.timezone))
    _add(alert, "status", "Actual")
    _add(alert, "msgType", "Cancel" if rejected else "Update" if changed else "Alert")
    _add(alert, "scope", "Public")
    if changed or rejected:
        _add(alert, "references", f"{sender.sender},{first},{_time(created, sender.timezone)}")
    info = _add(alert, "info")
    category, event = TYPES.get(row["type"], TYPES["other"])
    _add(info, "language", "vi-VN")
    _add(info, "category", category)
    _add(info, "event", event)
    _add(info, "urgency", URGENCY.get(row["status"], "Immediate"))
    _add(info, "severity", str(row["severity"] or "unknown").capitalize())
    _add(info, "certainty", CERTAINTY.get(row["status"], "Observed"))
    _add(info, "eventCode").extend([_value("valueName", "gis-ioc:type"), _value("value", row["type"])])
    _add(info, "onset", _time(row["reported_at"], sender.timezone))
    _add(info, "senderName", sender.name)
    _add(info, "headline", row["title"])
    if row.get("description"):
        _add(info, "description", row["description"])
    _add(info, "web", web)
    area = _add(info, "area")
    _add(area, "areaDesc", row.get("commune") or sender.name)
    geometry = row["geometry"]
    if geometry["type"] == "Point":
        lon, lat = geometry["coordinates"][:2]
        _add(area, "circle", f"{lat:.6f},{lon:.6f} 0")
    else:
        polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
        for rings in polygons:
            _add(area, "polygon", _pairs(rings[0]))
    if row.get("commune_code"):
        geocode = _add(area, "geocode")
        geocode.extend([_value("valueName", GEOCODE), _value("value", row["commune_code"])])
    return alert


def _value(tag: str, text: str) -> ET.Element:
    element = ET.Element(f"{{{NS}}}{tag}")
    element.text = text
    return element


def alert(row: dict[str, Any], sender: Sender, web: str) -> bytes:
    """One incident as a CAP 1.2 document."""
    ET.register_namespace("", NS)
    return ET.tostring(alert_element(row, sender, web), encoding="utf-8", xml_declaration=True)


def feed(rows: list[dict[str, Any]], sender: Sender, self_url: str, item_url: str, min_severity: str) -> bytes:
    """An Atom feed of alerts (``item_url`` with ``{id}``): each entry links to the incident's CAP document."""
    ET.register_namespace("", ATOM)

    def add(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        if text is not None:
            element.text = text
        return element

    root = ET.Element(f"{{{ATOM}}}feed")
    add(root, "id", f"urn:gis-ioc:{sender.sender}:alerts:{min_severity}")
    add(root, "title", f"{sender.name}: active alerts, {min_severity} and above")
    latest = max((r["updated_at"] for r in rows), default=None)
    add(root, "updated", _time(latest, sender.timezone) if latest else _time(datetime.now(ZoneInfo("UTC")),
                                                                              sender.timezone))
    add(root, "link", rel="self", href=self_url, type=ATOM_MEDIA)
    add(add(root, "author"), "name", sender.name)
    for row in rows:
        entry = add(root, "entry")
        add(entry, "id", _identifier(sender, row["id"], row["updated_at"]))
        add(entry, "title", row["title"])
        add(entry, "updated", _time(row["updated_at"], sender.timezone))
        add(entry, "published", _time(row["created_at"], sender.timezone))
        category, event = TYPES.get(row["type"], TYPES["other"])
        add(entry, "category", term=category, label=event)
        add(entry, "summary", f"{event} — {str(row['severity']).capitalize()} — {row.get('commune') or sender.name}")
        add(entry, "link", rel="alternate", type=MEDIA, href=item_url.format(id=row["id"]))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def incident_rows(conn: Any, table: str, timezone: str, where: str, params: dict[str, Any],
                  limit: int = 1) -> list[dict[str, Any]]:
    """Incidents with what an alert needs: geometry (GeoJSON, CRS84), times, and the commune's name then."""
    sql = sa.text(
        f"SELECT i.id, i.type, i.severity, i.status, i.reported_at, i.title, i.description, i.commune_code, "
        f"i.created_at, i.updated_at, ST_AsGeoJSON(i.geom, 6)::json AS geometry, "
        f"(SELECT a.name FROM admin_units a WHERE a.level = 'commune' AND a.code = i.commune_code ORDER BY "
        f"(a.valid_from <= (i.reported_at AT TIME ZONE :tz)::date AND (a.valid_to IS NULL OR "
        f"a.valid_to > (i.reported_at AT TIME ZONE :tz)::date)) DESC, a.valid_from DESC LIMIT 1) AS commune "
        f"FROM {table} i WHERE {where} ORDER BY i.updated_at DESC, i.id DESC LIMIT :limit"
    )
    return [dict(r) for r in conn.execute(sql, {**params, "tz": timezone, "limit": limit}).mappings()]


# -- in: alerts of other agencies ----------------------------------------------------------------------


def _type_of(categories: list[str], event: str, codes: dict[str, str]) -> str:
    if codes.get("gis-ioc:type") in TYPES:
        return codes["gis-ioc:type"]
    words = fold(event)
    for needle, kind in (("rung", "forest_fire"), ("forest", "forest_fire"), ("sat lo", "landslide"),
                         ("landslide", "landslide"), ("lu", "flood"), ("ngap", "flood"), ("flood", "flood"),
                         ("giao thong", "traffic_accident"), ("traffic", "traffic_accident")):
        if re.search(rf"\b{needle}\b", words):
            return kind
    by_category = {"Fire": "fire", "Transport": "traffic_accident", "Health": "medical", "Security":
                   "public_security", "Infra": "infrastructure_fault", "Env": "environment", "Met": "flood",
                   "Geo": "landslide", "Safety": "urban_order"}
    return next((by_category[c] for c in categories if c in by_category), "other")


def _text(element: ET.Element, tag: str) -> str | None:
    found = element.find(f"{{{NS}}}{tag}")
    return found.text.strip() if found is not None and found.text and found.text.strip() else None


def _latlon(text: str, where: str) -> tuple[float, float]:
    try:
        lat_text, lon_text = text.split(",")
        lat, lon = float(lat_text), float(lon_text)
    except ValueError:
        raise IngestError(f"{where}: {text[:40]!r} is not 'latitude,longitude'", param="area") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise IngestError(f"{where}: {text[:40]!r} lies outside the earth", param="area")
    return lon, lat


def _area(area: ET.Element, where: str) -> list[Any]:
    shapes: list[Any] = []
    for polygon in area.findall(f"{{{NS}}}polygon"):
        points = [_latlon(p, f"{where} polygon") for p in (polygon.text or "").split()]
        if len(points) < 4 or points[0] != points[-1]:
            raise IngestError(f"{where} polygon: a closed ring of at least 4 points is expected", param="area")
        shapes.append(shapely.make_valid(shapely.Polygon(points)))
    for circle in area.findall(f"{{{NS}}}circle"):
        centre, _, radius = (circle.text or "").strip().partition(" ")
        lon, lat = _latlon(centre, f"{where} circle")
        try:
            km = float(radius)
        except ValueError:
            raise IngestError(f"{where} circle: radius {radius[:20]!r} is not a number of km", param="area") from None
        if not 0 <= km <= 1000:
            raise IngestError(f"{where} circle: radius {km:g} km is outside 0–1000", param="area")
        if km == 0:
            shapes.append(shapely.Point(lon, lat))
        else:
            lons, lats, _ = _GEOD.fwd([lon] * _CIRCLE_POINTS, [lat] * _CIRCLE_POINTS,
                                      [i * 360 / _CIRCLE_POINTS for i in range(_CIRCLE_POINTS)],
                                      [km * 1000] * _CIRCLE_POINTS)
            shapes.append(shapely.Polygon(list(zip(lons, lats, strict=True))))
    return shapes


def _geometry(shapes: list[Any], where: str) -> dict[str, Any]:
    areas = [s for s in shapes if shapely.get_dimensions(s) == 2 and not s.is_empty]
    if areas:
        parts = [p for s in areas for p in (s.geoms if hasattr(s, "geoms") else [s]) if p.geom_type == "Polygon"]
        return mapping(parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts))
    points = [s for s in shapes if s.geom_type == "Point"]
    if points:
        return mapping(points[0])
    raise IngestError(f"{where}: no polygon or circle to place it (a geocode alone cannot be mapped)", param="area")


def parse(data: bytes, source: str = "body") -> list[dict[str, Any]]:
    """The alerts of a CAP document (an ``alert``, or a document holding several) as GeoJSON-like features."""
    try:
        root = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise IngestError(f"{source}: unsafe XML refused (a document type, entities or external references)",
                          param="body") from None
    except ET.ParseError as err:
        raise IngestError(f"{source}: not well-formed XML ({err})", param="body") from None
    alerts = [root] if root.tag == f"{{{NS}}}alert" else list(root.iter(f"{{{NS}}}alert"))
    if not alerts:
        raise IngestError(f"{source}: no CAP 1.2 alert ({{{NS}}}alert) in the document", param="body")
    return [_feature(element, f"{source}: alert {number}") for number, element in enumerate(alerts, 1)]


def _feature(element: ET.Element, where: str) -> dict[str, Any]:
    identifier = _text(element, "identifier") or "?"
    where = f"{where} ({identifier[:80]})"
    infos = element.findall(f"{{{NS}}}info")
    if not infos:
        raise IngestError(f"{where}: no info block", param="body")
    info = next((i for i in infos if (_text(i, "language") or "").lower().startswith("vi")), infos[0])
    event = _text(info, "event") or ""
    codes = {_text(c, "valueName") or "": _text(c, "value") or "" for c in info.findall(f"{{{NS}}}eventCode")}
    categories = [c.text.strip() for c in info.findall(f"{{{NS}}}category") if c.text]
    shapes = [s for area in info.findall(f"{{{NS}}}area") for s in _area(area, where)]
    severity = (_text(info, "severity") or "Unknown").lower()
    message = _text(element, "msgType") or "Alert"
    urgency = _text(info, "urgency") or "Unknown"
    when = _text(info, "onset") or _text(info, "effective") or _text(element, "sent")
    sender = _text(info, "senderName") or _text(element, "sender") or "?"
    note = f"CAP {identifier} from {sender}"
    description = _text(info, "description")
    # references: "sender,identifier,sent" groups separated by white space; sender and identifier name a message
    earlier = tuple(",".join(group.split(",")[:2]) for group in (_text(element, "references") or "").split())
    if len(earlier) > MAX_REFERENCES:
        raise IngestError(f"{where}: references names {len(earlier)} messages (at most {MAX_REFERENCES})",
                          param="body")
    return {
        "type": "Feature",
        "cap": Message(re.sub(r"\s", "_", f"{_text(element, 'sender') or '?'},{identifier}"), message, earlier),
        "geometry": _geometry(shapes, where),
        "properties": {
            "type": _type_of(categories, event, codes),
            "severity": severity if severity in SEVERITIES else "unknown",
            "status": "rejected" if message == "Cancel" else "resolved" if urgency == "Past" else "new",
            "source": "agency",
            "title": (_text(info, "headline") or event or identifier)[:500],
            "description": f"{description}\n\n{note}" if description else note,
            "reported_at": when,
        },
    }


def linked(conn: Any, table: str, message: Message) -> tuple[Any, str] | None:
    """The incident this message changes, as its id and status, locked for the change; None for a new alert.

    That is the incident any of its references (or the message itself) made or changed. A message that
    references another sender's alert is ``Forbidden`` (403 naming ``sender``).
    """
    message.check_sender()
    names = [message.ref, *message.references]
    row = conn.execute(sa.text(
        f"SELECT id, status FROM {table} WHERE string_to_array(cap_messages, ' ') && CAST(:names AS text[]) "
        "AND cap_messages IS NOT NULL ORDER BY id LIMIT 1 FOR UPDATE"), {"names": names}).first()
    return None if row is None else (row[0], str(row[1]))


def remember(conn: Any, table: str, incident_id: Any, message: Message) -> None:
    """Note that this message made or changed the incident (its later Updates and Cancels will find it)."""
    conn.execute(sa.text(
        f"UPDATE {table} SET cap_messages = concat_ws(' ', cap_messages, CAST(:ref AS text)) WHERE id = :id "
        "AND NOT (coalesce(string_to_array(cap_messages, ' '), '{}') @> ARRAY[CAST(:ref AS text)])"),
        {"ref": message.ref, "id": incident_id})


def change_of(feature: dict[str, Any], message: Message, current_status: str) -> dict[str, Any] | None:
    """What an Update or Cancel changes in the incident it references (a PATCH body); None: nothing.

    An Update brings its severity, type, title, description and area; a Cancel rejects the incident, which the
    lifecycle (``edits.LIFECYCLE``) allows only while it is new or verified (once a response is under way, an
    operator decides).
    """
    from gis_ioc.edits import LIFECYCLE

    if message.kind == "Cancel":
        if current_status == "rejected":
            return None
        if "rejected" not in LIFECYCLE.get(current_status, ()):
            allowed = " or ".join(s for s, steps in LIFECYCLE.items() if "rejected" in steps)
            raise IngestError(f"body: the Cancel {message.ref} withdraws an alert whose incident is {current_status}: "
                              f"a Cancel rejects an incident only while it is {allowed} (an operator decides now)",
                              param="body")
        return {"properties": {"status": "rejected"}}
    if message.kind != "Update":
        return None  # the same alert again: the incident it made stands
    keep = ("type", "severity", "title", "description")
    return {"geometry": feature["geometry"], "properties": {k: feature["properties"][k] for k in keep}}


def read_file(path: Path) -> Any:
    """A CAP file as a GeoDataFrame of incidents (``gis-ioc load alert.xml --layer incidents``)."""
    import geopandas as gpd

    found = parse(path.read_bytes(), str(path))
    frame = gpd.GeoDataFrame([f["properties"] for f in found], geometry=[shape(f["geometry"]) for f in found],
                             crs=4326)
    return frame
