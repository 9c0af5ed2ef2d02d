"""CAP 1.2: incidents as alerts (validated by the OASIS schema), the Atom feed, other agencies' alerts in."""

from __future__ import annotations

from pathlib import Path

import pytest
import shapely
import sqlalchemy as sa
from lxml import etree
from shapely.geometry import shape

from gis_ioc import auth, cap

from .conftest import table_snapshot
from .factories import CITY

SCHEMA = etree.XMLSchema(etree.parse(str(Path(__file__).parent / "schemas" / "CAP-v1.2.xsd")))
NS = {"cap": cap.NS, "atom": cap.ATOM}
POINT = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [CITY[0] + 0.001, CITY[1]]},
         "properties": {"type": "traffic_accident", "severity": "severe", "title": "Va chạm trên QL14",
                        "source": "113", "description": "Hai xe máy, một người bị thương"}}
AREA = {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [
    [[[CITY[0], CITY[1]], [CITY[0] + 0.01, CITY[1]], [CITY[0] + 0.01, CITY[1] + 0.01], [CITY[0], CITY[1]]]],
    [[[CITY[0] + 0.02, CITY[1]], [CITY[0] + 0.03, CITY[1]], [CITY[0] + 0.03, CITY[1] + 0.01],
      [CITY[0] + 0.02, CITY[1]]]]]},
        "properties": {"type": "flood", "severity": "extreme", "title": "Ngập sâu ven sông Đắk Bla"}}


@pytest.fixture
def operator(engine) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"Authorization": f"Bearer {auth.create_key(engine, 'cap-test', 'operator')}"}


def _valid(xml: bytes) -> etree._Element:
    document = etree.fromstring(xml)
    assert SCHEMA.validate(document), SCHEMA.error_log
    return document


def _text(document: etree._Element, path: str) -> str:
    return str(document.findtext(path, namespaces=NS))


def test_an_incident_is_a_valid_cap_alert_and_its_updates_reference_it(client, operator):
    path = client.post("/collections/incidents/items", json=POINT, headers=operator).headers["location"]
    path = path.split("testserver")[-1]
    first = client.get(path, params={"f": "cap"})
    assert first.status_code == 200 and first.headers["content-type"].startswith(cap.MEDIA)
    assert first.headers["etag"] == client.get(path).headers["etag"]
    alert = _valid(first.content)
    assert _text(alert, "cap:msgType") == "Alert" and _text(alert, "cap:status") == "Actual"
    assert _text(alert, "cap:info/cap:category") == "Transport"
    assert _text(alert, "cap:info/cap:severity") == "Severe"
    assert (_text(alert, "cap:info/cap:urgency"), _text(alert, "cap:info/cap:certainty")) == ("Immediate", "Likely")
    assert _text(alert, "cap:info/cap:headline") == POINT["properties"]["title"]
    circle = _text(alert, "cap:info/cap:area/cap:circle")
    assert circle == f"{CITY[1]:.6f},{CITY[0] + 0.001:.6f} 0"
    assert _text(alert, "cap:info/cap:area/cap:geocode/cap:valueName") == cap.GEOCODE
    code = client.get(path).json()["properties"]["commune_code"]
    assert code and _text(alert, "cap:info/cap:area/cap:geocode/cap:value") == code
    assert "+07:00" in _text(alert, "cap:sent")
    # Accept: application/cap+xml works as f=cap does
    assert client.get(path, headers={"Accept": cap.MEDIA}).content == first.content

    client.patch(path, json={"properties": {"status": "verified"}}, headers=operator)
    update = _valid(client.get(path, params={"f": "cap"}).content)
    assert _text(update, "cap:msgType") == "Update"
    assert _text(update, "cap:identifier") != _text(alert, "cap:identifier")
    sender, identifier, sent = _text(update, "cap:references").split(",")
    assert (sender, identifier, sent) == (_text(alert, "cap:sender"), _text(alert, "cap:identifier"),
                                          _text(alert, "cap:sent"))
    assert _text(update, "cap:info/cap:certainty") == "Observed"

    other = client.post("/collections/incidents/items", json=POINT, headers=operator).headers["location"]
    other = other.split("testserver")[-1]
    client.patch(other, json={"properties": {"status": "rejected"}}, headers=operator)
    cancel = _valid(client.get(other, params={"f": "cap"}).content)
    assert _text(cancel, "cap:msgType") == "Cancel" and _text(cancel, "cap:references")


def test_an_area_is_sent_as_its_polygons(client, operator):
    path = client.post("/collections/incidents/items", json=AREA, headers=operator).headers["location"]
    alert = _valid(client.get(path.split("testserver")[-1], params={"f": "cap"}).content)
    polygons = alert.findall("cap:info/cap:area/cap:polygon", namespaces=NS)
    assert len(polygons) == 2
    first = [tuple(map(float, p.split(","))) for p in polygons[0].text.split()]
    assert first[0] == first[-1] and first[0] == (round(CITY[1], 6), round(CITY[0], 6))


def test_cap_is_offered_for_incidents_only_and_unknown_ones_are_404(client):
    camera = client.get("/collections/cameras/items", params={"limit": 1}).json()["features"][0]["id"]
    response = client.get(f"/collections/cameras/items/{camera}", params={"f": "cap"})
    assert response.status_code == 400 and response.json()["parameter"] == "f"
    assert client.get("/collections/incidents/items/999999999", params={"f": "cap"}).status_code == 404


def test_the_atom_feed_lists_active_alerts_at_or_above_a_severity(client, engine, operator):
    client.post("/collections/incidents/items", json=POINT, headers=operator)
    client.post("/collections/incidents/items", json={**POINT, "properties": {**POINT["properties"],
                                                                              "severity": "minor"}}, headers=operator)
    response = client.get("/alerts.atom", params={"severity": "severe", "limit": 500})
    assert response.status_code == 200 and response.headers["content-type"].startswith(cap.ATOM_MEDIA)
    feed = etree.fromstring(response.content)
    entries = feed.findall("atom:entry", namespaces=NS)
    with engine.connect() as conn:
        expected = conn.execute(sa.text("SELECT count(*) FROM incidents WHERE severity IN ('severe', 'extreme') AND "
                                        "status IN ('new', 'verified', 'dispatched', 'in_progress', 'reopened')"))
        assert len(entries) == min(500, expected.scalar_one()) > 0
        assert all("Minor" not in e.findtext("atom:summary", namespaces=NS) for e in entries)
    link = entries[0].find("atom:link", namespaces=NS)
    assert link.get("type") == cap.MEDIA
    _valid(client.get(link.get("href").split("testserver")[-1]).content)  # each entry's alert is valid CAP
    for params, name in (({"severity": "bad"}, "severity"), ({"limit": 0}, "limit"), ({"limit": 501}, "limit")):
        refused = client.get("/alerts.atom", params=params)
        assert refused.status_code == 400 and refused.json()["parameter"] == name


def test_an_alert_round_trips_through_a_file_and_a_post(client, engine, operator, tmp_path, run_cli, settings):
    """Our alert read back as another agency's: the same kind, severity and area."""
    path = client.post("/collections/incidents/items", json=AREA, headers=operator).headers["location"]
    xml = client.get(path.split("testserver")[-1], params={"f": "cap"}).content
    before = shape(AREA["geometry"])
    file = tmp_path / "canh_bao.xml"
    file.write_bytes(xml)
    code, out, err = run_cli("load", str(file), "--layer", "incidents", "--local",
                             env={"GIS_IOC_DATABASE_URL": settings.database_url, "GIS_IOC_HOME": str(settings.home)})
    assert code == 0, err
    with engine.connect() as conn:
        loaded = conn.execute(sa.text("SELECT type, severity, source, status, ST_AsText(geom) AS wkt, description "
                                      "FROM incidents ORDER BY id DESC LIMIT 1")).one()
    assert (loaded.type, loaded.severity, loaded.source, loaded.status) == ("flood", "extreme", "agency", "new")
    assert shapely.from_wkt(loaded.wkt).equals_exact(before, 1e-6)
    assert "CAP urn:gis-ioc:" in loaded.description

    posted = client.post("/collections/incidents/items", content=xml, headers={**operator,
                                                                                "Content-Type": cap.MEDIA})
    assert posted.status_code == 201, posted.text
    assert posted.json()["properties"]["source"] == "agency"
    assert shape(posted.json()["geometry"]).equals_exact(before, 1e-6)
    assert "possible_duplicates" in posted.json()


CIRCLE = f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>KTTV-2026-1130-01</identifier><sender>kttv.kontum.gov.vn</sender>
  <sent>2026-11-30T06:00:00+07:00</sent><status>Actual</status><msgType>Alert</msgType><scope>Public</scope>
  <info><language>vi-VN</language><category>Geo</category><event>Nguy cơ sạt lở đất</event>
    <urgency>Expected</urgency><severity>Severe</severity><certainty>Likely</certainty>
    <headline>Nguy cơ sạt lở đất ở Đắk Glei</headline>
    <area><areaDesc>Đắk Glei</areaDesc><circle>{CITY[1]},{CITY[0]} 2.5</circle></area></info>
</alert>"""


def test_a_circle_becomes_an_area_of_its_radius(client, operator):
    posted = client.post("/collections/incidents/items", content=CIRCLE.encode(),
                         headers={**operator, "Content-Type": "application/xml"})
    assert posted.status_code == 201, posted.text
    props = posted.json()["properties"]
    assert (props["type"], props["severity"]) == ("landslide", "severe")
    assert props["title"] == "Nguy cơ sạt lở đất ở Đắk Glei"
    assert props["reported_at"].startswith("2026-11-29T23:00:00")
    area = shape(posted.json()["geometry"])
    from pyproj import Geod

    assert abs(abs(Geod(ellps="WGS84").geometry_area_perimeter(area)[0]) / 1e6 - 3.14159 * 2.5**2) < 0.1


def _next(kind: str, identifier: str, references: str, severity: str = "Severe") -> bytes:
    """The circle alert's sequel from the same agency: an Update or a Cancel of earlier messages."""
    return (CIRCLE.replace("KTTV-2026-1130-01", identifier).replace("<msgType>Alert</msgType>",
                                                                     f"<msgType>{kind}</msgType>"
                                                                     f"<references>{references}</references>")
            .replace("<severity>Severe</severity>", f"<severity>{severity}</severity>")
            .replace("Nguy cơ sạt lở đất ở Đắk Glei", f"Nguy cơ sạt lở đất ở Đắk Glei ({identifier})").encode())


def test_updates_and_cancels_from_an_agency_change_the_incident_its_alert_made(client, engine, operator):
    sender = "kttv.kontum.gov.vn"
    xml = {"Content-Type": cap.MEDIA, **operator}
    first = client.post("/collections/incidents/items", content=CIRCLE.encode(), headers=xml)
    assert first.status_code == 201, first.text
    incident = first.json()["id"]
    again = client.post("/collections/incidents/items", content=CIRCLE.encode(), headers=xml)
    assert again.status_code == 200 and again.json()["id"] == incident  # the same alert twice: one incident
    update = _next("Update", "KTTV-2026-1130-02", f"{sender},KTTV-2026-1130-01,2026-11-30T06:00:00+07:00",
                   severity="Extreme")
    changed = client.post("/collections/incidents/items", content=update, headers=xml)
    assert changed.status_code == 200 and changed.json()["id"] == incident, changed.text
    props = changed.json()["properties"]
    assert (props["severity"], props["title"]) == ("extreme", "Nguy cơ sạt lở đất ở Đắk Glei (KTTV-2026-1130-02)")
    # a Cancel that names only the Update still finds the incident the first alert made
    cancel = _next("Cancel", "KTTV-2026-1130-03", f"{sender},KTTV-2026-1130-02,2026-11-30T07:00:00+07:00")
    cancelled = client.post("/collections/incidents/items", content=cancel, headers=xml)
    assert cancelled.status_code == 200 and cancelled.json()["properties"]["status"] == "rejected", cancelled.text
    history = client.get(f"/collections/incidents/items/{incident}/history").json()
    steps = history["steps"]  # audited as any write: made, updated by the Update, rejected by the Cancel
    assert [step["operation"] for step in steps] == ["create", "update", "update"]
    assert steps[1]["changes"]["severity"] == {"from": "severe", "to": "extreme"}
    assert steps[2]["changes"]["status"] == {"from": "new", "to": "rejected"}
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM incidents WHERE title LIKE 'Nguy cơ sạt lở đất ở Đắk Glei%'"
                                    )).scalar_one()
    assert rows == 1


def test_a_cancel_of_nothing_known_or_of_an_incident_under_way_is_refused(client, engine, operator):
    xml = {"Content-Type": cap.MEDIA, **operator}
    before = table_snapshot(engine, "incidents")
    unknown = _next("Cancel", "X-2", "kttv.kontum.gov.vn,X-1,2026-11-30T07:00:00+07:00")
    refused = client.post("/collections/incidents/items", content=unknown, headers=xml)
    assert refused.status_code == 400 and "no incident here came from" in refused.json()["description"]
    assert table_snapshot(engine, "incidents") == before
    made = client.post("/collections/incidents/items", content=CIRCLE.replace("KTTV-2026-1130-01", "U-1").encode(),
                       headers=xml).json()["id"]
    for status in ("verified", "dispatched"):
        assert client.patch(f"/collections/incidents/items/{made}", json={"properties": {"status": status}},
                            headers=operator).status_code == 200
    late = client.post("/collections/incidents/items", headers=xml,
                       content=_next("Cancel", "U-2", "kttv.kontum.gov.vn,U-1,2026-11-30T06:00:00+07:00"))
    assert late.status_code == 400 and "dispatched" in late.json()["description"], late.text
    assert client.get(f"/collections/incidents/items/{made}").json()["properties"]["status"] == "dispatched"


def test_updates_and_cancels_from_another_sender_are_refused_and_change_nothing(client, engine, operator):
    xml = {"Content-Type": cap.MEDIA, **operator}
    first = client.post("/collections/incidents/items", content=CIRCLE.encode(), headers=xml)
    assert first.status_code == 201, first.text
    before = table_snapshot(engine, "incidents")
    reference = "kttv.kontum.gov.vn,KTTV-2026-1130-01,2026-11-30T06:00:00+07:00"
    for kind in ("Update", "Cancel"):
        spoofed = _next(kind, f"EVIL-{kind}", reference, severity="Minor").replace(
            b"<sender>kttv.kontum.gov.vn</sender>", b"<sender>evil.example</sender>")
        assert b"<sender>evil.example</sender>" in spoofed
        refused = client.post("/collections/incidents/items", content=spoofed, headers=xml)
        assert refused.status_code == 403, refused.text
        assert refused.json()["parameter"] == "sender"
        assert "evil.example" in refused.json()["description"]
    assert table_snapshot(engine, "incidents") == before
    props = client.get(f"/collections/incidents/items/{first.json()['id']}").json()["properties"]
    assert (props["status"], props["severity"]) == ("new", "severe")


BOMB = b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&lol2;</identifier></alert>"""
EXTERNAL = b"""<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&x;</identifier></alert>"""


@pytest.mark.parametrize(("body", "message"), [
    (BOMB, "unsafe XML"),
    (EXTERNAL, "unsafe XML"),
    (b"<alert", "not well-formed"),
    (b"<feed xmlns='http://www.w3.org/2005/Atom'/>", "no CAP 1.2 alert"),
    (CIRCLE.replace("2.5</circle>", "-3</circle>").encode(), "radius -3 km"),
    (_next("Update", "R-2", " ".join(f"a.vn,R-{i},2026-11-30T06:00:00+07:00" for i in range(1001))),
     "references names 1001 messages"),
    (CIRCLE.replace(f"{CITY[1]},{CITY[0]} 2.5", "95,10 1").encode(), "outside the earth"),
    (CIRCLE.replace(f"<circle>{CITY[1]},{CITY[0]} 2.5</circle>", "").encode(), "no polygon or circle"),
    (CIRCLE.replace(f"<circle>{CITY[1]},{CITY[0]} 2.5</circle>", "<polygon>1,2 3,4</polygon>").encode(),
     "closed ring"),
])
def test_bad_or_unsafe_alerts_are_refused_and_change_nothing(client, engine, operator, tmp_path, body, message):
    before = table_snapshot(engine, "incidents")
    posted = client.post("/collections/incidents/items", content=body, headers={**operator,
                                                                                 "Content-Type": cap.MEDIA})
    assert posted.status_code == 400 and message in posted.json()["description"], posted.text
    assert table_snapshot(engine, "incidents") == before
