"""Incidents partitioned by month (migration 020): loads, writes, strays, upserts and the archive."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from gis_ioc import analysis, auth, demo, ingest, partitions, tile_cells
from gis_ioc.ingest import store
from gis_ioc.settings import Settings
from tests.conftest import DEMO_REF_TIME, table_snapshot

from .factories import CITY


def _where(engine) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Rows per partition of incidents."""
    with engine.connect() as conn:
        return {str(r[0]): int(r[1]) for r in conn.execute(sa.text(
            "SELECT tableoid::regclass::text, count(*) FROM incidents GROUP BY 1"))}


def _kept_equal_rows(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT coalesce(sum(n), 0) FROM incident_totals")).scalar_one()
        rows = conn.execute(sa.text("SELECT count(*) FROM incidents WHERE merged_into IS NULL")).scalar_one()
    assert kept == rows


@pytest.fixture
def loaded(engine, catalog):  # type: ignore[no-untyped-def]
    demo.load_demo(engine, catalog, scale=1.0, ref_time=DEMO_REF_TIME)  # 10,000 incidents: through a shadow table
    return engine


def test_a_big_load_fills_one_partition_per_month_with_the_names_and_indexes_of_the_last(loaded, catalog):
    engine = loaded
    where = _where(engine)
    assert "incidents_default" not in where and len(where) >= 6  # spring 2025, and the last 90 days
    assert all(name.startswith("incidents_p") for name in where)
    with engine.connect() as conn:
        kind = conn.execute(sa.text("SELECT relkind FROM pg_class WHERE oid = 'incidents'::regclass")).scalar()
        names = [r[0] for r in conn.execute(sa.text(
            "SELECT relname FROM pg_class WHERE relname LIKE 'incidents%' AND relkind IN ('r', 'p', 'i', 'I')"))]
        month = next(iter(where))
        indexes = {r[0] for r in conn.execute(sa.text("SELECT indexname FROM pg_indexes WHERE tablename = :t"),
                                              {"t": month})}
        triggers = {r[0] for r in conn.execute(sa.text(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'incidents'::regclass AND NOT tgisinternal"))}
    assert kind == "p"
    assert not [n for n in names if "gis_ioc_load" in n]  # the shadow's names all went
    assert f"{month}_geom_idx" in indexes and f"{month}_pkey" in indexes
    assert {"track_cells", "notify_change", "count_incidents_insert", "bump_layer_version"} <= triggers
    _kept_equal_rows(engine)
    # loaded again (a second swap), the months keep their names
    demo.load_demo(engine, catalog, scale=1.0, ref_time=DEMO_REF_TIME)
    assert _where(engine) == where


def test_a_report_dated_years_back_is_kept_and_moved_to_its_own_month(client, engine, catalog):
    key = auth.create_key(engine, "operator-test", "operator")
    headers = {"X-API-Key": key}
    feature = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [CITY[0] + 0.001, CITY[1]]},
               "properties": {"type": "fire", "severity": "severe", "title": "Cháy kho (báo muộn)",
                              "reported_at": "2019-05-04T03:00:00Z"}}
    response = client.post("/collections/incidents/items", json=feature, headers=headers)
    assert response.status_code == 201, response.text
    location = response.headers["location"]
    number = int(location.rsplit("/", 1)[1])

    def partition() -> str:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SELECT tableoid::regclass::text FROM incidents WHERE id = :i"),
                                    {"i": number}).scalar_one())

    assert partition() == "incidents_default"
    with engine.begin() as conn:
        assert partitions.ahead(conn) == 0  # the months ahead are there since the migration
    assert partition() == "incidents_p201905"
    got = client.get(location)
    assert got.status_code == 200 and got.json()["properties"]["title"] == "Cháy kho (báo muộn)"
    # a change of its time moves it to another month; it keeps its id
    etag = got.headers["etag"]
    patched = client.patch(location, json={"properties": {"reported_at": "2026-11-20T03:00:00Z"}},
                           headers={**headers, "If-Match": etag})
    assert patched.status_code == 200, patched.text
    assert partition() == "incidents_p202611"
    assert client.get(location).json()["id"] == got.json()["id"]
    _kept_equal_rows(engine)


def test_an_upsert_by_id_updates_and_adds_on_a_partitioned_layer(loaded, catalog, tmp_path):
    engine = loaded
    with engine.connect() as conn:
        first, last = conn.execute(sa.text("SELECT min(id), max(id) FROM incidents")).one()
        before = conn.execute(sa.text("SELECT count(*) FROM incidents")).scalar_one()
    rows = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [CITY[0], CITY[1]]},
             "properties": {"id": first, "type": "flood", "severity": "minor", "title": "sửa lại",
                            "reported_at": "2026-11-21T01:00:00Z"}},
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [CITY[0], CITY[1]]},
             "properties": {"id": last + 1000, "type": "fire", "severity": "minor", "title": "mới",
                            "reported_at": "2026-11-21T02:00:00Z"}}]
    path = tmp_path / "upsert.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": rows}))
    ingest.load(engine, catalog, path, "incidents", mode="upsert")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM incidents")).scalar_one() == before + 1
        assert conn.execute(sa.text("SELECT title FROM incidents WHERE id = :i"), {"i": first}).scalar() == "sửa lại"
        assert conn.execute(sa.text("SELECT count(*) FROM incidents WHERE id = :i"), {"i": first}).scalar() == 1
    _kept_equal_rows(engine)


def test_archive_moves_old_months_out_and_analysis_reads_them_when_asked(loaded, catalog, run_cli, db_url):
    engine = loaded
    with engine.connect() as conn:  # the tile cells, kept as a server keeps them
        tile_cells.sync_cell_config(conn, catalog)
        conn.execute(sa.text("SELECT gis_ioc_rebuild_cells('public.incidents')"))
        conn.commit()
    with engine.connect() as conn:
        everything = analysis.stats(conn, catalog, "incidents", "commune")["total"]
        spring = conn.execute(sa.text("SELECT count(*) FROM incidents WHERE merged_into IS NULL "
                                      "AND reported_at < '2025-07-01'")).scalar_one()
        version = conn.execute(sa.text("SELECT version FROM layer_versions WHERE table_name = 'public.incidents'"))\
            .scalar_one()
    assert spring > 0
    env = {"GIS_IOC_DATABASE_URL": db_url}
    code, out, err = run_cli("db", "archive", "--before", "2025-07-01", env=env)
    assert code == 0, err
    assert "archived 4 months" in out
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM incidents WHERE reported_at < '2025-07-01'")).scalar() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM archive.incidents WHERE merged_into IS NULL")).scalar() \
            == spring
        now = analysis.stats(conn, catalog, "incidents", "commune")
        with_old = analysis.stats(conn, catalog, "incidents", "commune", archived=True)
        assert conn.execute(sa.text("SELECT version FROM layer_versions WHERE table_name = 'public.incidents'"))\
            .scalar_one() > version
        cells = conn.execute(sa.text("SELECT coalesce(sum(n), 0) FROM tile_cells "
                                     "WHERE layer_table = 'public.incidents'")).scalar_one()
        rows = conn.execute(sa.text("SELECT count(*) FROM incidents WHERE merged_into IS NULL")).scalar_one()
    assert now["total"] == everything - spring and with_old["total"] == everything
    assert cells == rows  # the cells count what is left
    _kept_equal_rows(engine)
    # again: nothing left to archive; a bad date is one line and changes nothing
    code, out, _ = run_cli("db", "archive", "--before", "2025-07-01", env=env)
    assert code == 0 and "nothing archived" in out
    before = table_snapshot(engine, "incidents")
    code, out, err = run_cli("db", "archive", "--before", "July", env=env)
    assert code != 0 and "--before" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("db", "archive", "--before", "2026-01-01", "--layer", "cameras", env=env)
    assert code != 0 and "not partitioned" in err
    assert table_snapshot(engine, "incidents") == before
    code, out, err = run_cli("db", "months", env=env)
    assert code == 0 and "incidents_p2026" in out and "incidents_p2025" not in out


def test_the_server_keeps_the_last_months_and_archives_the_older_ones(loaded, run_cli, db_url):
    """GIS_IOC_KEEP_MONTHS: the months round archives what is older (one process at a time); the CLI does the same
    with --keep-months."""
    import threading
    from datetime import date

    engine = loaded
    with engine.connect() as conn:
        today = conn.execute(sa.text("SELECT CAST(now() AT TIME ZONE 'Asia/Ho_Chi_Minh' AS date)")).scalar_one()
        spring = conn.execute(sa.text("SELECT count(*) FROM incidents WHERE reported_at < '2025-07-01'")).scalar()
    keep = today.year * 12 + today.month - (2025 * 12 + 7) + 1  # from July 2025 on: the spring months go
    assert spring > 0
    with engine.connect() as holder:  # another process archiving: this one skips its round
        holder.execute(sa.text("SELECT pg_advisory_lock(hashtext('gis_ioc_archive_older'), "
                               "hashtext('public.incidents'))"))
        assert partitions.archive_older(engine, keep) is None
        holder.execute(sa.text("SELECT pg_advisory_unlock_all()"))
    with pytest.raises(partitions.InvalidInput):
        partitions.archive_older(engine, 0)
    for wrong in (0, 1201):  # GIS_IOC_KEEP_MONTHS outside 1..1200 stops the server at start, named
        with pytest.raises(ValueError, match="keep_months"):
            Settings(keep_months=wrong)
    stop = threading.Event()
    stop.set()  # one round, then return
    partitions.keep_ahead(engine, stop, keep_months=keep)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM incidents WHERE reported_at < '2025-07-01'")).scalar() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM archive.incidents")).scalar() == spring
        archived = {r[0] for r in conn.execute(sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'archive.incidents'::regclass"))}
    assert archived == {"incidents_p202503", "incidents_p202504", "incidents_p202505", "incidents_p202506"}
    _kept_equal_rows(engine)
    assert partitions.archive_older(engine, keep, today=date(today.year, today.month, 1)).months == []
    env = {"GIS_IOC_DATABASE_URL": db_url}
    code, out, err = run_cli("db", "archive", "--keep-months", str(keep), env=env)
    assert code == 0 and "nothing archived" in out, err
    for args in ([], ["--before", "2025-07-01", "--keep-months", "3"]):
        code, _, err = run_cli("db", "archive", *args, env=env)
        assert code != 0 and "either --before" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("db", "archive", "--keep-months", "0", env=env)
    assert code != 0 and "--keep-months" in err and "Traceback" not in err


def test_stats_archived_over_http(client, engine, catalog):
    demo.load_demo(engine, catalog, scale=0.05, ref_time=DEMO_REF_TIME)
    total = client.get("/analysis/stats", params={"layer": "incidents", "by": "commune"}).json()["total"]
    done = partitions.archive(engine, DEMO_REF_TIME.date().replace(day=1))
    assert done.months and done.rows > 0
    now = client.get("/analysis/stats", params={"layer": "incidents", "by": "commune"}).json()["total"]
    both = client.get("/analysis/stats", params={"layer": "incidents", "by": "commune", "archived": "true"})
    assert both.status_code == 200 and both.json()["total"] == total and now < total
    bad = client.get("/analysis/stats", params={"layer": "incidents", "archived": "maybe"})
    assert bad.status_code == 400 and "archived" in bad.text


def test_the_load_size_check_reads_the_partitioned_table(loaded, catalog):
    with loaded.begin() as conn:
        cur = conn.connection.cursor()
        assert store._unique(cur, "public.incidents", "id") is False
        assert store._unique(cur, "public.cameras", "id") is True


def test_closed_months_are_rewritten_in_spatial_order_and_nothing_else_changes(loaded, catalog, run_cli, db_url):
    """gis-ioc db order-months: a closed month's rows are laid in PostGIS's spatial order, swapped in with the same
    rows, indexes and triggers; the layer's version and kept counts do not move; each month once."""
    from gis_ioc import month_order

    engine = loaded
    month = "incidents_p202609"

    def indexes() -> list[tuple[str, str]]:
        with engine.connect() as conn:
            return [(str(n), str(d)) for n, d in conn.execute(sa.text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :t ORDER BY 1"), {"t": month})]

    def version() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT version FROM layer_versions WHERE table_name = 'public.incidents'")).scalar_one())

    def out_of_order() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(
                f"SELECT count(*) FROM (SELECT geom, lag(geom) OVER (ORDER BY ctid) AS prev FROM {month}) s "
                "WHERE geom < prev")).scalar_one())

    before, kept_indexes, kept_version = table_snapshot(engine, "incidents"), indexes(), version()
    rows = _where(engine)[month]
    assert out_of_order() > rows / 4  # as loaded: in the file's order, so about every other pair
    env = {"GIS_IOC_DATABASE_URL": db_url}
    code, out, err = run_cli("db", "order-months", "--before", "2026-10-01", env=env)
    assert code == 0, err
    assert f"{month}: " in out and "incidents_p202610" not in out and "incidents_p202503" in out
    assert out_of_order() < rows / 50  # in order (but where a big polygon left room that a later point took)
    assert table_snapshot(engine, "incidents") == before and indexes() == kept_indexes and version() == kept_version
    _kept_equal_rows(engine)
    with engine.connect() as conn:
        assert (conn.execute(sa.text(f"SELECT obj_description('{month}'::regclass, 'pg_class')")).scalar() or "") \
            .startswith(month_order.MARK)
    code, out, _ = run_cli("db", "order-months", "--before", "2026-10-01", env=env)
    assert code == 0 and "nothing to do" in " ".join(out.split())
    with engine.begin() as conn:  # the month takes writes as before: its triggers keep the counts
        conn.execute(sa.text(
            "INSERT INTO incidents (type, title, reported_at, geom) VALUES ('fire', 'Cháy thử', "
            "'2026-09-15T03:00:00Z', ST_SetSRID(ST_MakePoint(:x, :y), 4326))"), {"x": CITY[0], "y": CITY[1]})
    assert _where(engine)[month] == rows + 1
    _kept_equal_rows(engine)
    assert version() > kept_version
    code, _, err = run_cli("db", "order-months", "--before", "soon", env=env)
    assert code != 0 and "--before" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("db", "order-months", "--layer", "cameras", env=env)
    assert code != 0 and "not partitioned" in err


def test_the_servers_round_puts_closed_months_in_spatial_order_one_process_at_a_time(loaded):
    """GIS_IOC_ORDER_MONTHS: the months round rewrites the months that ended before last month began, once; a
    process finding another at it skips."""
    import threading

    from gis_ioc import month_order

    engine = loaded
    with engine.connect() as holder:  # another process rewriting: this one skips
        holder.execute(sa.text("SELECT pg_advisory_lock(hashtext('gis_ioc_order_months'), "
                               "hashtext('public.incidents'))"))
        assert month_order.order_months(engine, "public.incidents") is None
        holder.execute(sa.text("SELECT pg_advisory_unlock_all()"))
    before = table_snapshot(engine, "incidents")
    cutoff = month_order.closed_before(engine, "public.incidents")
    closed = [m.name for m in month_order.pending(engine, "public.incidents", cutoff)]
    this_month = f"public.incidents_p{cutoff.year + (cutoff.month + 1) // 13}{cutoff.month % 12 + 1:02d}"
    last_month = f"public.incidents_p{cutoff.year}{cutoff.month:02d}"
    assert "public.incidents_p202503" in closed and not {this_month, last_month} & set(closed)  # those two stay
    stop = threading.Event()
    stop.set()  # one round, then return
    partitions.keep_ahead(engine, stop, order=True)
    assert month_order.pending(engine, "public.incidents", cutoff) == []
    assert table_snapshot(engine, "incidents") == before
    assert month_order.order_months(engine, "public.incidents") == []  # each month once
    assert Settings(order_months=True).order_months and not Settings().order_months


def test_a_month_rewrite_that_cannot_take_the_table_leaves_the_month_as_it_was(loaded, monkeypatch):
    """Readers holding the table past the tries: Busy, and the month, its indexes and the table are as before."""
    from gis_ioc import db, month_order
    from gis_ioc.errors import Busy

    engine = loaded
    tries = []

    def readers_hold_the_table(cur, table, busy, mode="ACCESS EXCLUSIVE"):  # type: ignore[no-untyped-def]
        tries.append(table)
        if table == "public.incidents":
            raise Busy(busy)
        db.take_lock_briefly(cur, table, busy, mode)

    monkeypatch.setattr(month_order, "take_lock_briefly", readers_hold_the_table)
    before = table_snapshot(engine, "incidents")
    with engine.connect() as conn:
        tables = conn.execute(sa.text("SELECT count(*) FROM pg_class WHERE relname LIKE 'incidents%'")).scalar()
        month = next(m for m in partitions.months(conn, "public.incidents") if m.name.endswith("p202609"))
    with pytest.raises(Busy, match="readers held it"):
        month_order.order_month(engine, "public.incidents", month)
    assert tries == ["public.incidents_p202609", "public.incidents"]
    assert table_snapshot(engine, "incidents") == before
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pg_class WHERE relname LIKE 'incidents%'")).scalar() \
            == tables  # no table or index left behind
    assert "public.incidents_p202609" in [m.name for m in month_order.pending(
        engine, "public.incidents", month_order.closed_before(engine, "public.incidents"))]
