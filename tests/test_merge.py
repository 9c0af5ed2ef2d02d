"""Merging duplicate reports: one event counted once, audited on both sides, reversible."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from gis_ioc import auth, maps

from .conftest import table_snapshot
from .factories import CITY

ACCIDENT = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [CITY[0] + 0.001, CITY[1]]},
            "properties": {"type": "traffic_accident", "severity": "severe", "title": "Va chạm trên QL14",
                           "source": "113"}}
AGAIN = {**ACCIDENT, "geometry": {"type": "Point", "coordinates": [CITY[0] + 0.0012, CITY[1]]},
         "properties": {**ACCIDENT["properties"], "source": "app", "title": "Tai nạn QL14 (ứng dụng)"}}


@pytest.fixture
def headers(engine) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"Authorization": f"Bearer {auth.create_key(engine, 'merge-test', 'operator')}"}


def _new(client: TestClient, headers: dict[str, str], body: dict) -> dict:  # type: ignore[type-arg]
    response = client.post("/collections/incidents/items", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _counts(engine) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Events in the low-zoom cells, and events in the table."""
    with engine.connect() as conn:
        cells = conn.execute(sa.text("SELECT coalesce(sum(n), 0) FROM tile_cells WHERE layer_table = "
                                     "'public.incidents'")).scalar_one()
        events = conn.execute(sa.text("SELECT count(*) FROM incidents WHERE merged_into IS NULL")).scalar_one()
    return int(cells), int(events)


def test_a_merged_report_is_one_event_and_the_merge_can_be_undone(client, engine, catalog, settings, headers):
    main = _new(client, headers, ACCIDENT)
    report = _new(client, headers, AGAIN)
    assert main["id"] in [d["id"] for d in report["possible_duplicates"]]
    with engine.connect() as conn:
        kpis_before = maps.kpis(conn, catalog, settings)
        conn.execute(sa.text("SELECT gis_ioc_rebuild_cells('public.incidents')"))
        conn.commit()
    cells, events = _counts(engine)
    assert cells == events

    merged = client.post(f"/collections/incidents/items/{main['id']}/merge", json={"duplicate": report["id"]},
                         headers=headers)
    assert merged.status_code == 200, merged.text
    assert merged.json()["properties"]["reports"] == 1 and merged.headers["etag"]
    kept = client.get(f"/collections/incidents/items/{report['id']}").json()["properties"]
    assert kept["merged_into"] == main["id"]
    assert (kept["source"], kept["reported_at"], kept["title"]) == (
        "app", report["properties"]["reported_at"], AGAIN["properties"]["title"])  # the report keeps its row
    with engine.connect() as conn:
        kpis_after = maps.kpis(conn, catalog, settings)
    assert kpis_after["active_total"] == kpis_before["active_total"] - 1
    assert kpis_after["active_by_severity"]["severe"] == kpis_before["active_by_severity"]["severe"] - 1
    assert _counts(engine) == (cells - 1, events - 1)  # the cells follow the merge row by row
    # a later report of the same accident is not offered the merged report as its duplicate, only the event
    third = _new(client, headers, {**AGAIN, "properties": {**AGAIN["properties"], "source": "114"}})
    offered = [d["id"] for d in third["possible_duplicates"]]
    assert main["id"] in offered and report["id"] not in offered
    # merging again changes nothing
    again = client.post(f"/collections/incidents/items/{main['id']}/merge", json={"duplicate": report["id"]},
                        headers=headers)
    assert again.status_code == 200 and again.json()["properties"]["reports"] == 1
    # both sides carry the step in their history
    steps = client.get(f"/collections/incidents/items/{main['id']}/history").json()["steps"]
    assert steps[-1]["operation"] == "merge" and steps[-1]["changes"]["reports"] == {"from": 0, "to": 1}
    steps = client.get(f"/collections/incidents/items/{report['id']}/history").json()["steps"]
    assert steps[-1]["operation"] == "merged" and steps[-1]["changes"]["merged_into"]["to"] == main["id"]

    undone = client.delete(f"/collections/incidents/items/{main['id']}/merge/{report['id']}", headers=headers)
    assert undone.status_code == 200 and undone.json()["properties"]["reports"] == 0
    assert client.get(f"/collections/incidents/items/{report['id']}").json()["properties"]["merged_into"] is None
    assert _counts(engine) == (cells + 1, events + 1)  # the third report counts too
    steps = client.get(f"/collections/incidents/items/{report['id']}/history").json()["steps"]
    assert steps[-1]["operation"] == "unmerged"


def test_a_report_brings_its_own_reports_and_deletes_keep_both_sides_true(client, engine, headers):
    a, b, c = (_new(client, headers, ACCIDENT)["id"] for _ in range(3))
    assert client.post(f"/collections/incidents/items/{b}/merge", json={"duplicate": c}, headers=headers).json()[
        "properties"]["reports"] == 1
    joined = client.post(f"/collections/incidents/items/{a}/merge", json={"duplicate": b}, headers=headers)
    assert joined.json()["properties"]["reports"] == 2  # b, and c which was merged into b
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT id, merged_into FROM incidents WHERE id IN (:b, :c)"),
                                 {"b": b, "c": c}).all())
    assert rows == {b: a, c: a}  # no chain: every report names the event
    assert client.delete(f"/collections/incidents/items/{c}", headers=headers).status_code == 204
    assert client.get(f"/collections/incidents/items/{a}").json()["properties"]["reports"] == 1
    assert client.delete(f"/collections/incidents/items/{a}", headers=headers).status_code == 204
    assert client.get(f"/collections/incidents/items/{b}").json()["properties"]["merged_into"] is None


def test_bad_merges_are_refused_naming_what_is_wrong_and_change_nothing(client, engine, engine_viewer_key,
                                                                         headers):
    a, b, c = (_new(client, headers, ACCIDENT)["id"] for _ in range(3))
    client.post(f"/collections/incidents/items/{a}/merge", json={"duplicate": b}, headers=headers)
    before = table_snapshot(engine, "incidents")
    for path, body, status, param in (
        (a, {"duplicate": a}, 400, "duplicate"),
        (a, {"duplicate": 999999999}, 404, "duplicate"),
        (999999999, {"duplicate": a}, 404, "featureId"),
        (b, {"duplicate": c}, 400, "featureId"),  # b is itself a report of a
        (c, {"duplicate": b}, 400, "duplicate"),  # b is merged into a already
        (a, {"duplicat": c}, 400, "duplicate"),
        (a, {"duplicate": True}, 400, "duplicate"),
        (a, {"duplicate": "x"}, 404, "duplicate"),
        (a, [c], 400, "duplicate"),
    ):
        response = client.post(f"/collections/incidents/items/{path}/merge", json=body, headers=headers)
        assert response.status_code == status and response.json()["parameter"] == param, (path, body, response.text)
    stale = client.post(f"/collections/incidents/items/{a}/merge", json={"duplicate": c},
                        headers={**headers, "If-Match": '"old"'})
    assert stale.status_code == 412
    forbidden = client.post(f"/collections/incidents/items/{a}/merge", json={"duplicate": c},
                            headers={"Authorization": f"Bearer {engine_viewer_key}"})
    assert forbidden.status_code == 403
    assert client.post("/collections/cameras/items/1/merge", json={"duplicate": 2}, headers=headers).status_code \
        in (403, 404)
    not_merged = client.delete(f"/collections/incidents/items/{a}/merge/{c}", headers=headers)
    assert not_merged.status_code == 404 and not_merged.json()["parameter"] == "duplicate"
    assert table_snapshot(engine, "incidents") == before


@pytest.fixture
def engine_viewer_key(engine) -> str:  # type: ignore[no-untyped-def]
    return auth.create_key(engine, "merge-viewer", "viewer")
