"""The incident counts the database keeps (migration 018) stay equal to counting the rows, through every change."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from gis_ioc import analysis, demo, ingest, maps
from gis_ioc.ingest import store
from tests.conftest import DEMO_REF_TIME
from tests.factories import sample, write

ROWS = "type IS NOT NULL"  # a filter: the stats count the rows themselves


def _both(engine, catalog, breakdown: str | None = "status",  # type: ignore[no-untyped-def]
          window: analysis.Window | None = None) -> tuple[Any, Any]:
    with engine.connect() as conn:
        counted = analysis.stats(conn, catalog, "incidents", "commune", breakdown=breakdown, window=window)
        rows = analysis.stats(conn, catalog, "incidents", "commune", breakdown=breakdown, window=window,
                              filter_text=ROWS)
        sql = analysis.stats(conn, catalog, "incidents", "commune", breakdown=breakdown, window=window,
                             statement_only=True)["sql"]
        assert "incident_counts" not in analysis.stats(conn, catalog, "incidents", "commune", window=window,
                                                       filter_text=ROWS, statement_only=True)["sql"]
    kept = "incident_totals" if window is None else "incident_counts" if breakdown else "incident_unit_counts"
    assert kept in sql  # the counts answered (without a breakdown, the communes' own: migration 025)
    return counted, rows


def _hourly_equals_rows(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        diff = conn.execute(sa.text(
            "WITH rows AS (SELECT type, severity, status, date_trunc('hour', reported_at, 'UTC') AS hour, "
            "count(*) AS n FROM incidents WHERE merged_into IS NULL GROUP BY 1, 2, 3, 4), "
            "kept AS (SELECT type, severity, status, hour, sum(n) AS n FROM incident_counts GROUP BY 1, 2, 3, 4 "
            "HAVING sum(n) <> 0) "
            "SELECT count(*) FROM rows FULL JOIN kept USING (type, severity, status, hour) "
            "WHERE rows.n IS DISTINCT FROM kept.n")).scalar()
        daily = conn.execute(sa.text(  # the days (migration 022) are the sums of their hours
            "WITH hours AS (SELECT unit_code, type, severity, status, date_trunc('day', hour, 'UTC') AS day, "
            "sum(n) AS n FROM incident_counts GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0), "
            "days AS (SELECT * FROM incident_counts_daily WHERE n <> 0) "
            "SELECT count(*) FROM hours FULL JOIN days USING (unit_code, type, severity, status, day) "
            "WHERE hours.n IS DISTINCT FROM days.n")).scalar()
        units = conn.execute(sa.text(  # the communes' own counters (migration 025) are the sums of the others
            "WITH sums AS (SELECT 'hour' AS period, hour AS at, unit_code, sum(n) AS n FROM incident_counts "
            "GROUP BY 2, 3 UNION ALL SELECT 'day', day, unit_code, sum(n) FROM incident_counts_daily GROUP BY 2, 3), "
            "kept AS (SELECT * FROM incident_unit_counts) "
            "SELECT count(*) FROM (SELECT * FROM sums WHERE n <> 0) s FULL JOIN (SELECT * FROM kept WHERE n <> 0) k "
            "USING (period, at, unit_code) WHERE s.n IS DISTINCT FROM k.n")).scalar()
        assert conn.execute(sa.text("SELECT count(*) FROM incident_unit_counts")).scalar() > 0 or not conn.execute(
            sa.text("SELECT count(*) FROM incident_counts WHERE n <> 0")).scalar()
    assert diff == 0 and daily == 0 and units == 0


def _grid_places_as_the_pieces(engine) -> None:  # type: ignore[no-untyped-def]
    """Migration 027: every incident's commune by the grid (where it answers) is the one the pieces give."""
    with engine.connect() as conn:
        cells, by_grid, differ = conn.execute(sa.text(
            "WITH p AS (SELECT id, ST_PointOnSurface(geom) AS pt FROM incidents), "
            "placed AS (SELECT c.code AS grid, (SELECT q.code FROM incident_count_pieces q WHERE q.geom && p.pt "
            "AND ST_Intersects(q.geom, p.pt) ORDER BY q.code LIMIT 1) AS pieces FROM p "
            "LEFT JOIN incident_count_cells c ON c.cell = gis_ioc_count_cell(p.pt) AND gis_ioc_inside_cell(p.pt)) "
            "SELECT (SELECT count(*) FROM incident_count_cells), count(grid), "
            "count(*) FILTER (WHERE grid IS DISTINCT FROM pieces AND grid IS NOT NULL) FROM placed")).one()
    assert cells > 1000 and by_grid > 0 and differ == 0


@pytest.fixture
def loaded(engine, catalog):  # type: ignore[no-untyped-def]
    demo.load_demo(engine, catalog, scale=0.02, ref_time=DEMO_REF_TIME)
    return engine


def test_counts_equal_the_rows_through_writes_merges_deletes_and_loads(loaded, catalog, settings, tmp_path,
                                                                     monkeypatch):
    engine = loaded
    counted, rows = _both(engine, catalog)
    assert counted["units"] == rows["units"] and counted["total"] == rows["total"] > 0
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO incidents (type, severity, title, geom) SELECT 'fire', 'severe', 'kiểm tra ' || g, "
            "ST_SetSRID(ST_MakePoint(108.0 + g * 0.001, 14.35), 4326) FROM generate_series(1, 25) g"))
        conn.execute(sa.text("UPDATE incidents SET status = 'resolved' WHERE id % 7 = 0"))
        conn.execute(sa.text("UPDATE incidents SET title = title || '.' WHERE id % 5 = 0"))  # nothing counted moves
        conn.execute(sa.text("UPDATE incidents SET merged_into = (SELECT min(id) FROM incidents) "
                             "WHERE id IN (SELECT id FROM incidents WHERE merged_into IS NULL "
                             "ORDER BY id DESC LIMIT 3)"))
        conn.execute(sa.text("DELETE FROM incidents WHERE id % 11 = 0"))
        conn.execute(sa.text("UPDATE incidents SET geom = ST_Translate(geom, 0.2, 0) WHERE id % 13 = 0"))
    counted, rows = _both(engine, catalog)
    assert counted["units"] == rows["units"]
    _hourly_equals_rows(engine)
    ingest.load(engine, catalog, write(sample("incidents"), "gpkg", tmp_path, "a"), "incidents",
                region=settings.region_extent)  # a small load: into the table, the triggers count it
    monkeypatch.setattr(store, "BULK_ROWS", 1)
    ingest.load(engine, catalog, write(sample("incidents"), "gpkg", tmp_path, "b"), "incidents",
                region=settings.region_extent)  # through a shadow table: counted again after the swap
    counted, rows = _both(engine, catalog, "type")
    assert counted["units"] == rows["units"]
    _hourly_equals_rows(engine)
    with engine.connect() as conn:
        kpi = maps.kpis(conn, catalog, settings)
        active = conn.execute(sa.text(
            "SELECT count(*) FROM incidents WHERE merged_into IS NULL AND status = ANY(:s)"),
            {"s": list(maps.ACTIVE_STATUSES)}).scalar()
    assert kpi["active_total"] == active
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE incidents CASCADE"))
    counted, rows = _both(engine, catalog)
    assert counted["total"] == rows["total"] == 0


def test_new_units_count_again_and_stats_of_another_day_count_the_rows(loaded, catalog):
    engine = loaded
    with engine.begin() as conn:  # a commune's boundary moves: the counts follow it in the same transaction
        conn.execute(sa.text(
            "UPDATE admin_units SET geom = ST_Multi(ST_Buffer(geom, 0.01)) "
            "WHERE id = (SELECT min(id) FROM admin_units WHERE level = 'commune' AND valid_to IS NULL)"))
    counted, rows = _both(engine, catalog)
    assert counted["units"] == rows["units"]
    _grid_places_as_the_pieces(engine)  # the moved commune now overlaps its neighbours: their cells are left out
    with engine.connect() as conn:  # before the 2025 reform other communes were in force: the rows answer
        sql = analysis.stats(conn, catalog, "incidents", "commune", at=analysis.date(2025, 1, 1),
                             statement_only=True)["sql"]
        assert "incident_totals" not in sql
        filtered = analysis.stats(conn, catalog, "incidents", "commune", filter_text="type = 'fire'",
                                  statement_only=True)["sql"]
        assert "incident_totals" not in filtered


@pytest.mark.parametrize(("start", "end"), [
    ("2026-11-27T08:17:00Z", "2026-11-28T08:00:00Z"),  # a ragged start, an end on the hour
    ("2026-11-20T00:00:00Z", "2026-11-27T13:42:10Z"),  # whole hours, then a ragged end
    ("2026-11-20T05:30:00Z", "2026-11-27T13:42:10Z"),  # ragged, hours, whole days, hours, ragged
    ("2026-11-27T10:05:00Z", "2026-11-27T10:55:00Z"),  # within one hour: no whole hour at all
    ("2026-11-27T10:05:00Z", None),                    # open end
    (None, "2026-11-01T06:30:00Z"),                    # open start
    ("2026-11-20T05:10:00Z", "2026-11-27T13:12:10Z"),  # a start over half an hour before its hour: see below
])
def test_a_window_takes_its_whole_hours_from_the_counts_and_its_ends_from_the_rows(loaded, catalog, start, end):
    window = analysis.Window(start=start, end=end)
    for breakdown in (None, "severity"):
        counted, rows = _both(loaded, catalog, breakdown, window)
        assert counted["units"] == rows["units"], (start, end, breakdown)
    assert rows["total"] > 0 or start == "2026-11-27T10:05:00Z"
    with loaded.connect() as conn:  # a window over whole days reads them from the daily counts
        sql = analysis.stats(conn, catalog, "incidents", "commune", window=window, statement_only=True)["sql"]
        by_severity = analysis.stats(conn, catalog, "incidents", "commune", window=window, breakdown="severity",
                                     statement_only=True)["sql"]
    days = start is None or end is None or start[:10] < end[:10] and start[:10] != "2026-11-27"
    assert ("period = 'day'" in sql) == days, (start, end)  # the communes' own daily counters
    assert ("incident_counts_daily" in by_severity) == days, (start, end)
    assert "incident_counts_daily" not in sql and "incident_unit_counts" not in by_severity


def test_ragged_ends_counted_the_other_way_round_take_off_exactly_the_rows_outside(loaded, catalog):
    """A window whose ragged end is over half an hour long takes that hour from the counts, less the rows of the
    hour outside the window: rows on each side of every edge, severities and communes apart, count as the rows."""
    minutes = [2, 9, 10, 11, 29, 31, 45, 59]  # in the hours 08, 09, 13 (UTC) of 2026-11-27
    with loaded.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO incidents (type, severity, title, reported_at, geom) "
            "SELECT 'fire', (ARRAY['severe', 'minor', 'moderate'])[1 + (h + m) % 3], 'ven ' || h || ':' || m, "
            "make_timestamptz(2026, 11, 27, h, m, 0, 'UTC'), "
            "ST_SetSRID(ST_MakePoint(107.95 + m * 0.002, 14.33 + h * 0.004), 4326) "
            "FROM unnest(ARRAY[8, 9, 13]) h, unnest(CAST(:m AS int[])) m"), {"m": minutes})
    for start, end in [("2026-11-27T08:10:00Z", "2026-11-27T13:50:00Z"),  # both ends the other way round
                       ("2026-11-27T08:10:00Z", "2026-11-27T09:50:00Z"),  # and no whole hour between
                       ("2026-11-27T08:10:00Z", "2026-11-27T13:10:00Z"),  # the start so, the end from its rows
                       ("2026-11-27T08:45:00Z", "2026-11-27T13:45:00Z"),  # the start from its rows, the end so
                       ("2026-11-27T08:10:00Z", None),
                       (None, "2026-11-27T13:50:00Z")]:
        window = analysis.Window(start=start, end=end)
        for breakdown in (None, "severity"):
            counted, rows = _both(loaded, catalog, breakdown, window)
            assert counted["units"] == rows["units"], (start, end, breakdown)
        assert rows["total"] >= 5, (start, end)  # the rows inserted inside, at least
