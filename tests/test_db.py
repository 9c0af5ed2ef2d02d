"""Migrations and the schema rules: applied once, GiST everywhere, timestamps and versions kept by the database."""

from __future__ import annotations

import shutil

import psycopg2.errors
import pytest
import sqlalchemy as sa

from gis_ioc import db
from gis_ioc.errors import MigrationError
from gis_ioc.settings import PROJECT_ROOT


def test_migrate_is_idempotent(engine):
    assert db.migrate(engine, PROJECT_ROOT / "db") == []  # the template applied them all
    assert db.pending_migrations(engine, PROJECT_ROOT / "db") == []
    with engine.connect() as conn:
        versions = [r[0] for r in conn.execute(sa.text("SELECT version FROM schema_migrations ORDER BY 1"))]
    assert versions == [m.version for m in db.migrations(PROJECT_ROOT / "db")]


def test_an_edited_migration_is_refused(engine, tmp_path):
    folder = tmp_path / "db"
    shutil.copytree(PROJECT_ROOT / "db", folder)
    first = sorted(folder.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        db.migrate(engine, folder)


def test_a_new_migration_is_applied_once(engine, tmp_path):
    folder = tmp_path / "db"
    shutil.copytree(PROJECT_ROOT / "db", folder)
    (folder / "900_extra.sql").write_text("CREATE TABLE extra_test (id int);")
    assert [m.name for m in db.migrate(engine, folder)] == ["extra"]
    assert db.migrate(engine, folder) == []


def test_a_failing_migration_names_the_file_and_changes_nothing(engine, tmp_path):
    folder = tmp_path / "db"
    shutil.copytree(PROJECT_ROOT / "db", folder)
    (folder / "901_broken.sql").write_text("CREATE TABLE half_done (id int);\nSELECT no_such_function();")
    with pytest.raises(MigrationError, match="901_broken.sql"):
        db.migrate(engine, folder)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('half_done')")).scalar() is None


def test_every_geometry_has_a_gist_index_and_srid_4326(engine):
    with engine.connect() as conn:
        columns = conn.execute(sa.text(
            "SELECT f_table_schema, f_table_name, f_geometry_column, srid FROM geometry_columns")).all()
        assert {c.f_table_name for c in columns} >= {"admin_units", "cameras", "incidents", "infrastructure"}
        for schema, table, column, srid in columns:
            assert srid == 4326, table
            gist = conn.execute(sa.text(
                "SELECT count(*) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
                "JOIN pg_am am ON am.oid = i.relam JOIN pg_attribute a ON a.attrelid = x.indrelid "
                "AND a.attnum = ANY(x.indkey) WHERE x.indrelid = to_regclass(:t) AND am.amname = 'gist' "
                "AND a.attname = :c"), {"t": f"{schema}.{table}", "c": column}).scalar()
            assert gist == 1, f"{table}.{column} has no GiST index"


def test_timestamps_and_layer_versions_are_kept_by_the_database(engine):
    with engine.begin() as conn:
        version = conn.execute(sa.text(
            "SELECT version FROM layer_versions WHERE table_name = 'public.cameras'")).scalar()
        cam = conn.execute(sa.text(
            "INSERT INTO cameras (name, geom) VALUES ('c', ST_SetSRID(ST_MakePoint(108, 14.35), 4326)) "
            "RETURNING id, created_at, updated_at")).one()
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE cameras SET status = 'offline' WHERE id = :i"), {"i": cam.id})
        after = conn.execute(sa.text("SELECT created_at, updated_at FROM cameras WHERE id = :i"), {"i": cam.id}).one()
        new_version = conn.execute(sa.text(
            "SELECT version FROM layer_versions WHERE table_name = 'public.cameras'")).scalar()
    assert after.created_at == cam.created_at
    assert after.updated_at > cam.updated_at
    assert new_version == version + 2


def test_constraints_refuse_values_outside_the_domain(engine):
    with pytest.raises(sa.exc.IntegrityError):
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO incidents (type, title, geom) VALUES ('alien', 't', "
                "ST_SetSRID(ST_MakePoint(108, 14.35), 4326))"))
    with pytest.raises(sa.exc.IntegrityError):
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO incidents (type, title, geom) VALUES ('fire', 't', "
                "ST_SetSRID(ST_MakeLine(ST_MakePoint(108, 14.35), ST_MakePoint(108.1, 14.4)), 4326))"))


def test_admin_units_key_is_code_and_valid_from(engine):
    square = "ST_Multi(ST_MakeEnvelope(108, 14.3, 108.01, 14.31, 4326))"
    with engine.begin() as conn:
        for valid_from, valid_to in (("2008-01-01", "2025-07-01"), ("2025-07-01", None)):
            conn.execute(sa.text(
                f"INSERT INTO admin_units (code, level, unit_type, name, valid_from, valid_to, geom) "
                f"VALUES ('23281', 'commune', 'xã', 'A', :f, :t, {square})"), {"f": valid_from, "t": valid_to})
    with pytest.raises(sa.exc.IntegrityError):
        with engine.begin() as conn:
            conn.execute(sa.text(
                f"INSERT INTO admin_units (code, level, unit_type, name, valid_from, geom) "
                f"VALUES ('23281', 'commune', 'xã', 'B', '2025-07-01', {square})"))


def test_rows_on_the_drivers_cursor_are_heard_and_named(engine):
    """``db.rows`` skips SQLAlchemy, yet the engine's listeners hear its statement (bench routing replays them)."""
    heard: list[str] = []

    def record(conn, cursor, statement, parameters, context, many):
        heard.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        with db.autocommit(engine) as conn:
            found = db.rows(conn, "SELECT n, n * 2 AS twice FROM generate_series(1, 3) n")
            first = db.one_row(conn, "SELECT 'a:b %s' AS t")
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert [(r.n, r.twice) for r in found] == [(1, 2), (2, 4), (3, 6)]
    assert first == ("a:b %s",)  # neither SQLAlchemy's :name nor the driver's %s is read as a value
    assert heard == ["SELECT n, n * 2 AS twice FROM generate_series(1, 3) n", "SELECT 'a:b %s' AS t"]


def test_rows_with_bound_values_are_quoted_by_the_driver_and_replayable(engine):
    """``db.rows`` with ``:name`` values: compiled once, quoted by the driver; what listeners hear replays as run."""
    heard: list[str] = []

    def record(conn, cursor, statement, parameters, context, many):
        heard.append(cursor.mogrify(statement, parameters).decode())

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        with db.autocommit(engine) as conn:
            sql = "SELECT CAST(:a AS text) AS a, CAST(:b AS int) + 1 AS b, 7 % 3 AS m, '50%' AS p"
            found = [db.rows(conn, sql, {"a": value, "b": 41}) for value in ("it's", "x'); DROP TABLE t; --")]
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    with engine.connect() as conn:
        replayed = [tuple(conn.exec_driver_sql(s.replace("%", "%%")).one()) for s in heard]
    assert [tuple(r[0]) for r in found] == [("it's", 42, 1, "50%"), ("x'); DROP TABLE t; --", 42, 1, "50%")]
    assert replayed == [tuple(r[0]) for r in found]
    assert db.bound.cache_info().hits >= 1  # the second call reused the compiled statement


def test_a_prepared_statement_is_planned_once_and_leaves_the_session_as_it_was(engine):
    """``db.rows(prepare=True)``: PREPARE on a connection's first use, then EXECUTE with the generic plan.

    The same rows as unprepared; the session's plan_cache_mode is back after each call, and after a failed one;
    a statement let go on the server is prepared again.
    """
    sql = ("SELECT CAST(:a AS text) AS a, x FROM generate_series(1, CAST(:n AS int)) x "
           "WHERE x % 2 = 1 AND '50%' <> CAST(:a AS text) ORDER BY x")
    with db.autocommit(engine) as conn:
        plain = db.rows(conn, sql, {"a": "it's", "n": 5})
        first = db.rows(conn, sql, {"a": "it's", "n": 5}, prepare=True)
        again = db.rows(conn, sql, {"a": "x'); --", "n": 3}, prepare=True)
        raw = conn.connection.dbapi_connection
        with raw.cursor() as cur:
            cur.execute("SELECT name, generic_plans, custom_plans FROM pg_prepared_statements")
            held = cur.fetchall()
            cur.execute("SHOW plan_cache_mode")
            mode = cur.fetchone()[0]
        with pytest.raises(psycopg2.errors.DivisionByZero):
            db.rows(conn, "SELECT 1 / CAST(:d AS int) AS q", {"d": 0}, prepare=True)
        with raw.cursor() as cur:
            cur.execute("SHOW plan_cache_mode")
            after_error = cur.fetchone()[0]
            cur.execute("DEALLOCATE ALL")
        with pytest.raises(psycopg2.errors.InvalidSqlStatementName):
            db.rows(conn, sql, {"a": "b", "n": 1}, prepare=True)
        later = db.rows(conn, sql, {"a": "b", "n": 1}, prepare=True)
    assert [tuple(r) for r in first] == [tuple(r) for r in plain] == [("it's", 1), ("it's", 3), ("it's", 5)]
    assert [tuple(r) for r in again] == [("x'); --", 1), ("x'); --", 3)]
    assert len(held) == 1 and held[0][0].startswith("gis_ioc_") and held[0][1:] == (2, 0)  # planned once, generic
    assert mode == after_error == "auto"
    assert [tuple(r) for r in later] == [("b", 1)]
    with engine.connect() as conn:  # in a transaction: set for the statement, and back after it
        inside = db.rows(conn, sql, {"a": "c", "n": 1}, prepare=True)
        mode = conn.exec_driver_sql("SHOW plan_cache_mode").scalar()
    assert [tuple(r) for r in inside] == [("c", 1)] and mode == "auto"
