"""The synthetic Kon Tum province: what a planner would check about it."""

from __future__ import annotations

import sqlalchemy as sa
from shapely.geometry import Point

from gis_ioc import demo, demo_province

from .conftest import DEMO_REF_TIME, DEMO_SCALE

DISTRICTS = {"608": "Kon Tum", "610": "Đắk Glei", "611": "Ngọc Hồi", "612": "Đắk Tô", "613": "Kon Plông",
             "614": "Kon Rẫy", "615": "Đắk Hà", "616": "Sa Thầy", "617": "Tu Mơ Rông", "618": "Ia H'Drai"}


def _q(engine, sql: str, **params):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def test_districts_have_their_real_names_and_codes(demo_engine):
    rows = _q(demo_engine, "SELECT code, name, parent_code, valid_to FROM admin_units WHERE level = 'district'")
    assert {r.code: r.name for r in rows} == DISTRICTS
    assert {r.parent_code for r in rows} == {"62"}
    assert {str(r.valid_to) for r in rows} == {"2025-07-01"}


def test_communes_tile_their_district_without_gaps_or_overlaps(demo_engine):
    communes = _q(demo_engine, "SELECT count(*) FROM admin_units WHERE level = 'commune' AND valid_to IS NOT NULL")
    assert communes[0][0] == 102
    mismatch = _q(demo_engine, """
        SELECT d.code, abs(ST_Area(d.geom) - sum(ST_Area(c.geom))) / ST_Area(d.geom)
        FROM admin_units d JOIN admin_units c ON c.parent_code = d.code AND c.level = 'commune'
        WHERE d.level = 'district' GROUP BY d.code, d.geom""")
    assert len(mismatch) == 10
    assert all(share < 1e-6 for _, share in mismatch)
    overlaps = _q(demo_engine, """
        SELECT count(*) FROM admin_units a JOIN admin_units b ON a.id < b.id AND a.geom && b.geom
        WHERE a.level = 'commune' AND b.level = 'commune' AND a.valid_from = b.valid_from
          AND ST_Area(ST_Intersection(a.geom, b.geom)) > 1e-12""")  # about 0.01 m²
    assert overlaps[0][0] == 0


def test_the_2025_reform_is_versioned_with_lineage(demo_engine):
    current = _q(demo_engine, "SELECT level, count(*) FROM admin_units WHERE valid_to IS NULL GROUP BY level")
    assert dict(current)["province"] == 1 and "district" not in dict(current)
    assert 25 <= dict(current)["commune"] <= 50
    assert _q(demo_engine, "SELECT min(valid_from) FROM admin_units WHERE valid_to IS NULL")[0][0].isoformat() \
        == "2025-07-01"
    relations = dict(_q(demo_engine, "SELECT relation, count(*) FROM admin_lineage GROUP BY relation"))
    assert set(relations) == {"merged", "split", "renamed"}
    # every old commune has a successor, and the shares of each add up to its whole area
    shares = _q(demo_engine, """
        SELECT a.code, coalesce(sum(l.area_share), 0) FROM admin_units a
        LEFT JOIN admin_lineage l ON l.old_code = a.code AND l.old_valid_from = a.valid_from
        WHERE a.level = 'commune' AND a.valid_to IS NOT NULL GROUP BY a.code""")
    assert all(abs(total - 1) < 1e-4 for _, total in shares)
    reused = _q(demo_engine, "SELECT code FROM admin_units WHERE level = 'commune' GROUP BY code HAVING count(*) = 2")
    assert reused, "the reform reuses commune codes for different areas"


def test_towns_lie_in_their_districts(demo_engine):
    for d in demo_province.DISTRICTS:
        lon, lat = demo_province.TOWNS[d.seat]
        found = _q(demo_engine, "SELECT code FROM admin_units WHERE level = 'district' AND "
                                "ST_Intersects(geom, ST_SetSRID(ST_MakePoint(:x, :y), 4326))", x=lon, y=lat)
        assert [r.code for r in found] == [d.code], d.name


def test_points_lie_in_the_province_and_cluster_in_towns(demo_engine):
    outside = _q(demo_engine, """
        SELECT (SELECT count(*) FROM cameras c WHERE NOT ST_Intersects(c.geom, p.geom)),
               (SELECT count(*) FROM incidents i WHERE NOT ST_Intersects(i.geom, p.geom))
        FROM admin_units p WHERE p.level = 'province' AND p.valid_to IS NULL""")
    assert outside[0] == (0, 0)
    near_city = _q(demo_engine, "SELECT count(*) FILTER (WHERE ST_DWithin(geom::geography, "
                                "ST_SetSRID(ST_MakePoint(108.003, 14.35), 4326)::geography, 10000)) * 1.0 / count(*) "
                                "FROM incidents")[0][0]
    assert near_city > 0.2  # the city holds a large share, as in real call records


def test_sizes_follow_the_scale(demo_engine):
    cams = _q(demo_engine, "SELECT count(*) FROM cameras")[0][0]
    incs = _q(demo_engine, "SELECT count(*) FROM incidents")[0][0]
    assert cams == round(200 * DEMO_SCALE) and incs == round(10_000 * DEMO_SCALE)
    kinds = {r[0] for r in _q(demo_engine, "SELECT DISTINCT kind FROM infrastructure")}
    assert {"hospital", "police", "fire_station", "school", "bridge", "border_gate", "hydropower", "road"} <= kinds
    roads = {r[0] for r in _q(demo_engine, "SELECT name FROM infrastructure WHERE road_class = 'national'")}
    assert roads == {"QL14", "QL24", "QL40", "QL40B"}


def test_incidents_cover_the_last_90_days_and_spring_2025(demo_engine):
    first, last, recent = _q(demo_engine, """
        SELECT min(reported_at), max(reported_at),
               count(*) FILTER (WHERE reported_at > :ref - interval '90 days') * 1.0 / count(*)
        FROM incidents""", ref=DEMO_REF_TIME)[0]
    assert last <= DEMO_REF_TIME
    assert first.year == 2025 and first.month in (2, 3)
    assert 0.8 < recent < 0.9


def test_incidents_know_the_commune_of_their_report_date(demo_engine):
    wrong = _q(demo_engine, """
        SELECT count(*) FROM incidents i
        WHERE NOT EXISTS (SELECT 1 FROM admin_units a WHERE a.code = i.commune_code AND a.level = 'commune'
                            AND a.valid_from <= i.reported_at::date
                            AND (a.valid_to IS NULL OR a.valid_to > i.reported_at::date)
                            AND ST_Intersects(a.geom, ST_PointOnSurface(i.geom)))""")
    assert wrong[0][0] == 0


def test_metadata_says_the_boundaries_are_generated(demo_engine):
    notes = dict(_q(demo_engine, "SELECT layer_id, note FROM layer_notes"))
    assert set(notes) == {"admin_units", "cameras", "incidents", "infrastructure"}
    assert "generated" in notes["admin_units"] and "not surveyed" in notes["admin_units"]


def test_the_same_seed_gives_the_same_province():
    a = demo.generate(scale=0.05, seed=7, ref_time=DEMO_REF_TIME)
    b = demo.generate(scale=0.05, seed=7, ref_time=DEMO_REF_TIME)
    assert a.incidents.drop(columns="geometry").equals(b.incidents.drop(columns="geometry"))
    assert a.admin_units.geometry.geom_equals(b.admin_units.geometry).all()
    assert a.cameras.geometry.iloc[0] == b.cameras.geometry.iloc[0]
    assert demo_province.province_outline().contains(Point(demo_province.BO_Y_GATE))
