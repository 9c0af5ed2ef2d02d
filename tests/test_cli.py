"""The command line as a user types it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa


def test_demo_upgrade_and_list(db_url, engine, run_cli):
    env = {"GIS_IOC_DATABASE_URL": db_url}
    code, out, err = run_cli("db", "upgrade", env=env)
    assert code == 0 and "up to date" in out, err
    code, out, err = run_cli("demo", "--scale", "0.05", "--ref-time", "2026-11-28T08:00:00", env=env)
    assert code == 0, err
    assert "incidents" in out and "500" in out
    code, out, _ = run_cli("demo", "--if-empty", env=env)
    assert code == 0 and "not loaded" in out
    code, out, _ = run_cli("layers", "list", env=env)
    assert code == 0
    for layer in ("admin_units", "cameras", "incidents", "infrastructure"):
        assert layer in out
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM cameras")).scalar() == 10


def test_usage_errors_are_one_line(run_cli):
    for args, message in (
        (["nope"], "No such command 'nope'"),
        (["load", "x.geojson"], "Missing option '--layer'"),
        (["demo", "--scale", "0"], "--scale"),
        (["bench", "scale", "--larger", "gis_ioc_s1000"], "larger: a database URL"),  # before any server starts
    ):
        code, out, err = run_cli(*args)
        assert code == 2
        assert len(err.strip().splitlines()) == 1 and message in err
        assert "Traceback" not in err + out


def test_an_unreachable_database_is_one_line(run_cli):
    code, _, err = run_cli("layers", "list", env={"GIS_IOC_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert code == 1
    assert err.startswith("gis-ioc: error: cannot connect to the database") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("env", "name"), [
    ({"GIS_IOC_PORT": "abc"}, "GIS_IOC_PORT"),
    ({"GIS_IOC_REPLICA_MAX_LAG_MS": "-5"}, "GIS_IOC_REPLICA_MAX_LAG_MS"),
    ({"GIS_IOC_REPLICA_URLS": "replica-two,postgresql://u:secret@h/db"}, "GIS_IOC_REPLICA_URLS"),
])
def test_a_setting_out_of_range_is_one_line_naming_the_variable(run_cli, env, name):
    code, out, err = run_cli("layers", "list", env=env)
    assert code == 2 and err.startswith(f"gis-ioc: error: {name}: ") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out and "secret" not in err  # a URL's password is never echoed
