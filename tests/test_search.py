"""Search: any place written five ways, roads by number, coordinates in every usual form (to the metre)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pyproj import Geod, Transformer

from gis_ioc import search
from gis_ioc.bench_search import typed_forms
from gis_ioc.settings import Settings
from gis_ioc.web.app import create_app

REGION = (106.83, 13.42, 109.05, 15.92)


@pytest.fixture(scope="module")
def client(demo_url: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with TestClient(create_app(Settings(database_url=demo_url, home=tmp_path_factory.mktemp("home")))) as c:
        yield c


def _names(demo_engine, n: int = 30) -> list[str]:  # type: ignore[no-untyped-def]
    with demo_engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT DISTINCT name FROM admin_units WHERE level = 'commune' ORDER BY name"))
        names = [r[0] for r in rows]
    assert len(names) >= n
    return names[:n]


def test_thirty_places_written_five_ways_are_found_first_or_second(client, demo_engine):
    missed = []
    for name in _names(demo_engine):
        folded = search.fold(name)
        for form in typed_forms(name):  # as written, no diacritics, GADM's Ð, capitals, one typo
            results = client.get("/search", params={"q": form, "types": "unit", "limit": 5}).json()["results"]
            top = [search.fold(r["name"]) for r in results[:2]]
            if folded not in top:
                missed.append((name, form, [r["name"] for r in results[:3]]))
    assert not missed, missed


def test_former_units_point_to_todays(client, demo_engine):
    with demo_engine.connect() as conn:
        gone = conn.execute(sa.text("SELECT name FROM admin_units WHERE valid_to IS NOT NULL AND level = 'district' "
                                    "AND unit_type = 'huyện' "
                                    "ORDER BY code LIMIT 1")).scalar_one()
    results = client.get("/search", params={"q": f"huyện {search.fold(gone)}"}).json()["results"]
    first = results[0]
    assert first["name"] == gone and first["type"] == "huyện" and first["valid_to"]
    assert first["today"]["code"] and first["today"]["name"]


@pytest.mark.parametrize("typed", ["QL14", "ql 14", "quốc lộ 14", "Quoc lo 14"])
def test_roads_by_number_and_name(client, typed):
    first = client.get("/search", params={"q": typed}).json()["results"][0]
    assert (first["kind"], first["name"]) == ("road", "QL14")


def test_facilities_cameras_and_incidents(client, demo_engine):
    first = client.get("/search", params={"q": "benh vien da khoa kon tum"}).json()["results"][0]
    assert first["kind"] == "facility" and first["type"] == "hospital" and first["lies_in"]["name"]
    with demo_engine.connect() as conn:
        camera = conn.execute(sa.text("SELECT name FROM cameras ORDER BY id LIMIT 1")).scalar_one()
        incident = conn.execute(sa.text("SELECT id FROM incidents ORDER BY id LIMIT 1")).scalar_one()
    assert client.get("/search", params={"q": camera.split(" ")[0]}).json()["results"][0]["name"] == camera
    found = client.get("/search", params={"q": f"#{incident}"}).json()["results"][0]
    assert (found["kind"], found["id"]) == ("incident", incident)


@pytest.mark.parametrize("form", ["lat,lon", "lon lat", "dms", "dms lon first", "vn2000"])
def test_coordinates_in_every_usual_form_land_within_a_metre(client, form):
    lon, lat = 108.0045, 14.3512

    def dms(value: float, hemi: str) -> str:
        d = int(value)
        m = int((value - d) * 60)
        s = (value - d - m / 60) * 3600
        return f"{d}°{m:02d}'{s:06.3f}\"{hemi}"

    x, y = Transformer.from_crs(4326, 9216, always_xy=True).transform(lon, lat)
    typed = {"lat,lon": f"{lat}, {lon}", "lon lat": f"{lon} {lat}", "dms": f"{dms(lat, 'N')} {dms(lon, 'E')}",
             "dms lon first": f"{dms(lon, 'E')}, {dms(lat, 'N')}", "vn2000": f"{y:.3f} {x:.3f}"}[form]
    first = client.get("/search", params={"q": typed}).json()["results"][0]
    assert first["kind"] == "coordinates"
    got_lon, got_lat = first["geometry"]["coordinates"]
    assert Geod(ellps="WGS84").inv(lon, lat, got_lon, got_lat)[2] < 1.0
    assert first["lies_in"]["name"]


@pytest.mark.parametrize(("params", "param"), [({"q": ""}, "q"), ({"q": "x" * 201}, "q"), ({"q": "a\x00"}, "q"),
                                               ({"q": "dak", "types": "planets"}, "types"),
                                               ({"q": "dak", "near": "abc"}, "near"),
                                               ({"q": "dak", "limit": 0}, "limit"),
                                               ({"q": "!!!"}, "q")])
def test_bad_searches_name_the_parameter(client, params, param):
    response = client.get("/search", params=params)
    assert response.status_code == 400 and response.json()["parameter"] == param


def test_fold_is_the_databases_fold(demo_engine):
    samples = ["ÐẮK HÀ", "Đắk Hà", "Ia H'Drai", "Thị trấn Plei Kần", "ĐT676", "Ơ Ư ư", "  Kon Rẫy ", "CAM-00012"]
    with demo_engine.connect() as conn:
        for text in samples:
            assert conn.execute(sa.text("SELECT gis_ioc_fold(:t)"), {"t": text}).scalar_one() == search.fold(text)


def test_a_name_one_letter_off_finds_the_unit_first(client):
    found = client.get("/search", params={"q": "dak pec"}).json()["results"]
    assert (found[0]["kind"], found[0]["name"]) == ("unit", "Đắk Pek"), found[:3]


def test_units_of_one_name_are_told_apart(client):
    found = [r for r in client.get("/search", params={"q": "xã Đắk Hà", "types": "unit"}).json()["results"]
             if r["name"] == "Đắk Hà" and "valid_to" not in r]
    assert len(found) >= 2
    labels = [r["label"] for r in found]
    assert len(set(labels)) == len(labels) and all(r["code"] in r["label"] for r in found), labels
