"""Part 4 writes, keys and roles, the incident lifecycle, If-Match, imports, and the audit trail."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from gis_ioc import auth
from gis_ioc.settings import Settings
from gis_ioc.web.app import create_app

from .conftest import table_snapshot
from .factories import CITY, sample, write

INCIDENT = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [CITY[0] + 0.001, CITY[1]]},
            "properties": {"type": "traffic_accident", "severity": "severe", "title": "Va chạm trên QL14",
                           "source": "113"}}


@pytest.fixture
def keys(engine) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {role: auth.create_key(engine, f"{role}-test", role) for role in auth.ROLES}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _audit(engine) -> list:  # type: ignore[no-untyped-def,type-arg]
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT key_name, layer_id, feature_id, operation, before, after "
                                         "FROM audit_log ORDER BY id")))


def test_writes_need_a_key_and_a_strong_enough_role(client, engine, keys):
    before = table_snapshot(engine, "incidents")
    cases = [({}, 401), ({"Authorization": "Bearer gioc_nope"}, 401), (bearer(keys["viewer"]), 403)]
    for headers, status in cases:
        response = client.post("/collections/incidents/items", json=INCIDENT, headers=headers)
        assert response.status_code == status, response.text
        assert response.json()["code"] in ("unauthorized", "forbidden")
    response = client.delete("/collections/incidents/items/1", headers=bearer(keys["viewer"]))
    assert response.status_code == 403
    response = client.patch("/collections/incidents/items/1", json={"properties": {"severity": "minor"}})
    assert response.status_code == 401
    assert table_snapshot(engine, "incidents") == before
    assert _audit(engine) == []


def test_x_api_key_header_works_too(client, keys):
    response = client.post("/collections/incidents/items", json=INCIDENT, headers={"X-API-Key": keys["operator"]})
    assert response.status_code == 201


def test_create_an_incident(client, engine, keys):
    response = client.post("/collections/incidents/items", json=INCIDENT, headers=bearer(keys["operator"]))
    assert response.status_code == 201, response.text
    assert response.headers["etag"].startswith('"')
    location = response.headers["location"]
    feature = client.get(location).json()
    assert feature["properties"]["status"] == "new" and feature["properties"]["title"] == "Va chạm trên QL14"
    with engine.connect() as conn:
        expected = conn.execute(sa.text(
            "SELECT code FROM admin_units WHERE level = 'commune' AND valid_to IS NULL AND "
            "ST_Intersects(geom, ST_SetSRID(ST_MakePoint(:x, :y), 4326))"), {"x": CITY[0] + 0.001, "y": CITY[1]}
        ).scalar()
    assert feature["properties"]["commune_code"] == expected is not None
    assert client.get(location).headers["etag"] == response.headers["etag"]
    (row,) = _audit(engine)
    assert (row.key_name, row.layer_id, row.feature_id, row.operation) == ("operator-test", "incidents",
                                                                           str(feature["id"]), "create")
    assert row.before is None and row.after["title"] == "Va chạm trên QL14"


def test_incident_lifecycle(client, engine, keys):
    headers = bearer(keys["operator"])
    location = client.post("/collections/incidents/items", json=INCIDENT, headers=headers).headers["location"]
    path = location.split("testserver")[-1]
    verified = client.patch(path, json={"properties": {"status": "verified"}}, headers=headers)
    assert verified.status_code == 200, verified.text
    assert verified.json()["properties"]["verified_at"] is not None
    snapshot = table_snapshot(engine, "incidents")
    illegal = client.patch(path, json={"properties": {"status": "closed"}}, headers=headers)
    assert illegal.status_code == 400
    assert "'verified'" in illegal.json()["description"] and "'closed'" in illegal.json()["description"]
    assert illegal.json()["parameter"] == "properties.status"
    assert table_snapshot(engine, "incidents") == snapshot
    for status in ("dispatched", "in_progress", "resolved", "closed"):
        step = client.patch(path, json={"properties": {"status": status}}, headers=headers)
        assert step.status_code == 200, step.text
    final = client.get(path).json()["properties"]
    assert all(final[k] for k in ("verified_at", "dispatched_at", "resolved_at", "closed_at"))
    reopened = client.patch(path, json={"properties": {"status": "reopened"}}, headers=headers).json()
    assert reopened["properties"]["closed_at"] is None
    bad_start = client.post("/collections/incidents/items", headers=headers,
                            json={**INCIDENT, "properties": {**INCIDENT["properties"], "status": "closed"}})
    assert bad_start.status_code == 400


def test_an_incidents_history_comes_from_the_audit_trail(client, keys):
    headers = bearer(keys["operator"])
    location = client.post("/collections/incidents/items", json=INCIDENT, headers=headers).headers["location"]
    path = location.split("testserver")[-1]
    for status in ("verified", "dispatched"):
        assert client.patch(path, json={"properties": {"status": status}}, headers=headers).status_code == 200
    moved = {"type": "Point", "coordinates": [CITY[0] + 0.002, CITY[1]]}
    assert client.patch(path, json={"geometry": moved}, headers=headers).status_code == 200
    history = client.get(path + "/history").json()
    steps = history["steps"]
    assert [s["operation"] for s in steps] == ["create", "update", "update", "update"]
    assert all(s["by"] == "operator-test" and s["role"] == "operator" for s in steps)
    assert steps[1]["changes"]["status"] == {"from": "new", "to": "verified"}
    assert steps[1]["changes"]["verified_at"]["from"] is None and steps[1]["changes"]["verified_at"]["to"]
    assert steps[2]["changes"]["status"] == {"from": "verified", "to": "dispatched"}
    assert steps[3]["changes"] == {"geometry": "changed"}
    assert client.delete(path, headers=headers).status_code == 204
    assert client.get(path + "/history").json()["steps"][-1]["operation"] == "delete"  # kept after a delete
    missing = client.get("/collections/incidents/items/987654321/history")
    assert missing.status_code == 404 and missing.json()["parameter"] == "featureId"


def test_if_match_guards_against_lost_updates(client, engine, keys):
    headers = bearer(keys["operator"])
    created = client.post("/collections/cameras/items", headers=headers, json={
        "type": "Feature", "geometry": {"type": "Point", "coordinates": list(CITY)},
        "properties": {"name": "CAM chợ", "status": "online"}})
    path = created.headers["location"].split("testserver")[-1]
    first_tag = created.headers["etag"]
    changed = client.patch(path, headers={**headers, "If-Match": first_tag}, json={"properties": {"status": "offline"}})
    assert changed.status_code == 200 and changed.headers["etag"] != first_tag
    snapshot = table_snapshot(engine, "cameras")
    stale = client.patch(path, headers={**headers, "If-Match": first_tag}, json={"properties": {"status": "online"}})
    assert stale.status_code == 412 and stale.json()["code"] == "precondition_failed"
    stale_delete = client.delete(path, headers={**headers, "If-Match": first_tag})
    assert stale_delete.status_code == 412
    assert table_snapshot(engine, "cameras") == snapshot
    replaced = client.put(path, headers={**headers, "If-Match": changed.headers["etag"]}, json={
        "type": "Feature", "geometry": {"type": "Point", "coordinates": [CITY[0] + 0.002, CITY[1]]},
        "properties": {"name": "CAM chợ mới", "status": "maintenance"}})
    assert replaced.status_code == 200
    assert replaced.json()["properties"]["name"] == "CAM chợ mới"
    assert replaced.json()["properties"]["zone"] is None
    assert client.delete(path, headers=headers).status_code == 204
    assert client.get(path).status_code == 404
    operations = [r.operation for r in _audit(engine)]
    assert operations == ["create", "update", "replace", "delete"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ("not json", "body"),
        ('{"type": "FeatureCollection", "features": []}', "type"),
        (json.dumps({**INCIDENT, "geometry": {"type": "LineString", "coordinates": [[108, 14.3], [108.1, 14.4]]}}),
         "geometry"),
        (json.dumps({**INCIDENT, "geometry": {"type": "Point", "coordinates": [105.85, 21.03]}}), "geometry"),
        (json.dumps({**INCIDENT, "geometry": {"type": "Point", "coordinates": "here"}}), "geometry"),
        (json.dumps({**INCIDENT, "geometry": None}), "geometry"),
        (json.dumps({**INCIDENT, "properties": {**INCIDENT["properties"], "colour": "red"}}), "properties.colour"),
        (json.dumps({**INCIDENT, "properties": {**INCIDENT["properties"], "severity": "apocalyptic"}}),
         "properties.severity"),
        (json.dumps({**INCIDENT, "properties": {**INCIDENT["properties"], "reported_at": "last tuesday"}}),
         "properties.reported_at"),
        (json.dumps({**INCIDENT, "properties": {**INCIDENT["properties"], "created_at": "2026-01-01"}}),
         "properties.created_at"),
        (json.dumps({**INCIDENT, "properties": {"type": "fire"}}), "properties.title"),
    ],
)
def test_bad_bodies_are_refused_naming_the_field(client, engine, keys, body, param):
    before = table_snapshot(engine, "incidents")
    response = client.post("/collections/incidents/items", content=body, headers={
        **bearer(keys["operator"]), "Content-Type": "application/geo+json"})
    assert response.status_code in (400, 422), response.text
    assert response.json()["parameter"] == param
    assert table_snapshot(engine, "incidents") == before


def test_a_body_over_the_limit_is_413(settings, engine, catalog, keys):
    small = Settings(**{**settings.model_dump(), "max_body_bytes": 2048})
    with TestClient(create_app(small)) as client:
        big = {**INCIDENT, "properties": {**INCIDENT["properties"], "description": "x" * 5000}}
        response = client.post("/collections/incidents/items", json=big, headers=bearer(keys["operator"]))
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
    assert table_snapshot(engine, "incidents")[0] == 0


def test_admin_units_need_an_admin(client, keys):
    unit = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[108, 14.3], [108.01, 14.3],
                                                                                 [108.01, 14.31], [108, 14.3]]]},
            "properties": {"code": "99999", "level": "commune", "unit_type": "xã", "name": "Thử nghiệm",
                           "valid_from": "2026-01-01"}}
    assert client.post("/collections/admin_units/items", json=unit, headers=bearer(keys["operator"])).status_code == 403
    created = client.post("/collections/admin_units/items", json=unit, headers=bearer(keys["admin"]))
    assert created.status_code == 201, created.text
    assert client.get(created.headers["location"]).json()["geometry"]["type"] == "MultiPolygon"


def test_import_a_file_over_http(client, engine, keys, tmp_path):
    path = write(sample("cameras"), "geojson", tmp_path)
    before = table_snapshot(engine, "cameras")
    with open(path, "rb") as fh:
        refused = client.post("/collections/cameras/import", files={"file": ("cams.geojson", fh)},
                              data={"mode": "append"}, headers=bearer(keys["viewer"]))
    assert refused.status_code == 403
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"name": "x", '
                   '"status": "melted"}, "geometry": {"type": "Point", "coordinates": [108, 14.35]}}]}')
    with open(bad, "rb") as fh:
        failed = client.post("/collections/cameras/import", files={"file": ("bad.geojson", fh)},
                             headers=bearer(keys["operator"]))
    assert failed.status_code == 400 and "'melted' not allowed" in failed.json()["description"]
    assert table_snapshot(engine, "cameras") == before
    with open(path, "rb") as fh:
        done = client.post("/collections/cameras/import", files={"file": ("cams.geojson", fh)},
                           data={"mode": "append"}, headers=bearer(keys["operator"]))
    assert done.status_code == 200, done.text
    assert done.json()["loaded"] == 3
    assert table_snapshot(engine, "cameras")[0] == before[0] + 3


def test_create_a_layer_from_a_file(client, keys, tmp_path):
    path = write(sample("cameras")[["name", "geometry"]].rename(columns={"name": "ten"}), "gpkg", tmp_path)
    with open(path, "rb") as fh:
        assert client.post("/collections", files={"file": ("plan.gpkg", fh)}, data={"id": "camera_plan"},
                           headers=bearer(keys["operator"])).status_code == 403
    with open(path, "rb") as fh:
        created = client.post("/collections", files={"file": ("plan.gpkg", fh)},
                              data={"id": "camera_plan", "title": "Kế hoạch camera"}, headers=bearer(keys["admin"]))
    assert created.status_code == 201, created.text
    page = client.get("/collections/camera_plan/items").json()
    assert page["numberMatched"] == 3 and page["features"][0]["properties"]["ten"]
    new = client.post("/collections/camera_plan/items", headers=bearer(keys["operator"]), json={
        "type": "Feature", "geometry": {"type": "Point", "coordinates": list(CITY)}, "properties": {"ten": "mới"}})
    assert new.status_code == 201


def test_private_reads_need_a_viewer_key(settings, engine, catalog, keys):
    private = Settings(**{**settings.model_dump(), "public_read": False})
    with TestClient(create_app(private)) as client:
        assert client.get("/collections/cameras/items").status_code == 401
        assert client.get("/collections/cameras/items", headers=bearer(keys["viewer"])).status_code == 200
        assert client.get("/health").status_code == 200
        # tiles too (the plain ones never skip the key check), and a shared cache may not keep a keyed tile
        assert client.get("/tiles/cameras/10/813/478.mvt").status_code == 401
        tile = client.get("/tiles/cameras/10/813/478.mvt", headers=bearer(keys["viewer"]))
        assert tile.status_code == 200 and tile.headers["cache-control"].startswith("private")


def test_keys_from_the_command_line(settings, engine, run_cli):
    env = {"GIS_IOC_DATABASE_URL": settings.database_url or ""}
    code, key, err = run_cli("keys", "create", "--name", "desk-1", "--role", "operator", env=env)
    assert code == 0 and key.strip().startswith("gioc_") and "shown only now" in err
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT key_hash FROM api_keys WHERE name = 'desk-1'")).scalar()
    assert stored and key.strip() not in stored
    code, out, _ = run_cli("keys", "list", env=env)
    assert code == 0 and "desk-1" in out and key.strip() not in out
    code, _, err = run_cli("keys", "create", "--name", "x", "--role", "root", env=env)
    assert code == 2 and "not one of viewer, operator, admin" in err
    code, _, _ = run_cli("keys", "revoke", "desk-1", env=env)
    assert code == 0
    with engine.begin() as conn, pytest.raises(Exception, match="unknown or revoked"):
        auth.authenticate(conn, key.strip())


def test_a_new_report_comes_back_with_its_possible_duplicates(client, keys):
    headers = bearer(keys["operator"])
    first = client.post("/collections/incidents/items", json=INCIDENT, headers=headers).json()
    assert first["possible_duplicates"] == [] or all(d["id"] != first["id"] for d in first["possible_duplicates"])
    near = {**INCIDENT, "geometry": {"type": "Point", "coordinates": [CITY[0] + 0.0012, CITY[1]]},
            "properties": {**INCIDENT["properties"], "source": "114", "title": "Tai nạn QL14, gọi lại"}}
    second = client.post("/collections/incidents/items", json=near, headers=headers).json()
    same = [d for d in second["possible_duplicates"] if d["id"] == first["id"]]
    assert same and 15 < same[0]["distance_m"] < 30 and same[0]["minutes_apart"] <= 1 and same[0]["score"] > 0.5
    far = {**near, "geometry": {"type": "Point", "coordinates": [CITY[0] + 0.01, CITY[1]]}}  # ~1 km: not the same
    assert first["id"] not in [d["id"] for d in client.post("/collections/incidents/items", json=far,
                                                              headers=headers).json()["possible_duplicates"]]
    other = {**near, "properties": {**near["properties"], "type": "medical"}}  # another kind of event
    assert first["id"] not in [d["id"] for d in client.post("/collections/incidents/items", json=other,
                                                              headers=headers).json()["possible_duplicates"]]
    preview = client.get("/collections/incidents/duplicates", params={
        "lon": CITY[0] + 0.001, "lat": CITY[1], "type": "traffic_accident"}).json()["possible_duplicates"]
    assert first["id"] in [d["id"] for d in preview]  # what the desk shows while the operator types
    bad = client.get("/collections/incidents/duplicates", params={"lon": CITY[0], "lat": CITY[1], "type": "meteor"})
    assert bad.status_code == 400 and bad.json()["parameter"] == "type"
    assert client.get("/collections/cameras/duplicates", params={"lon": 108, "lat": 14.3, "type": "x"}).status_code \
        == 404


def test_a_write_that_committed_answers_201_though_the_database_goes_after_it(client, engine, monkeypatch):
    key = auth.create_key(engine, "desk-after-commit", "operator")
    listener = client.app.state.listener

    def database_gone(engine: Any) -> None:
        raise sa.exc.OperationalError("SELECT … FROM layer_versions", {}, Exception("server closed the connection"))

    monkeypatch.setattr(listener, "reload_versions", database_gone)
    body = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [108.003, 14.35]},
            "properties": {"type": "fire", "severity": "severe", "title": "Cháy sau khi ghi", "source": "114"}}
    posted = client.post("/collections/incidents/items", json=body, headers={"Authorization": f"Bearer {key}"})
    assert posted.status_code == 201, posted.text
    assert posted.json()["properties"]["title"] == "Cháy sau khi ghi" and posted.headers["ETag"]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM incidents WHERE title = 'Cháy sau khi ghi'")).scalar() == 1


def test_a_csv_export_neutralises_cells_a_spreadsheet_would_run(client, engine):
    import csv
    import io

    key = auth.create_key(engine, "desk-csv", "operator")
    names = ['=HYPERLINK("http://evil.example","x")', "@SUM(A1:A9)", "+1+1", "-2+3", "Camera Ngã ba"]
    for name in names:
        body = {"type": "Feature", "geometry": {"type": "Point", "coordinates": list(CITY)},
                "properties": {"name": name}}
        assert client.post("/collections/cameras/items", json=body,
                           headers={"Authorization": f"Bearer {key}"}).status_code == 201
    exported = client.get("/collections/cameras/items?f=csv&limit=10000&filter=" + "name LIKE '%'")
    cells = {row["name"] for row in csv.DictReader(io.StringIO(exported.text))}
    assert {"'" + n for n in names[:4]} | {names[4]} <= cells
    assert not any(c.startswith(("=", "+", "-", "@")) for c in cells)
