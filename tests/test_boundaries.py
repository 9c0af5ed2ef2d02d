"""Boundaries as a lifecycle: replace scoped to a period, upsert by (code, valid_from), --set, lineage kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gis_ioc import db, ingest
from gis_ioc.catalog import Catalog
from gis_ioc.errors import IngestError
from gis_ioc.settings import Settings

from .conftest import PROJECT_ROOT, demo_copy, table_snapshot

PRE = "valid_to = DATE '2025-07-01'"  # the units in force before the 2025 reform


@pytest.fixture
def units(server_url: str, demo_url: str, tmp_path: Path) -> Iterator[tuple[Engine, Catalog, Settings]]:
    with demo_copy(server_url, demo_url, "gis_ioc_test_boundaries") as url:
        settings = Settings(database_url=url, home=tmp_path / "home")
        engine = db.make_engine(url, pool_size=2)
        try:
            yield engine, Catalog.from_folder(PROJECT_ROOT / "layers", engine), settings
        finally:
            engine.dispose()


def _frame(engine: Engine, where: str, columns: str = "code, level, unit_type, name, parent_code, valid_from, "
           "valid_to") -> gpd.GeoDataFrame:
    with engine.connect() as conn:
        return gpd.read_postgis(sa.text(f"SELECT {columns}, geom FROM admin_units WHERE {where} ORDER BY code"),
                                conn, geom_col="geom")


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            "pre": conn.execute(sa.text(f"SELECT count(*) FROM admin_units WHERE {PRE}")).scalar_one(),
            "current": conn.execute(sa.text("SELECT count(*) FROM admin_units WHERE valid_to IS NULL")).scalar_one(),
            "lineage": conn.execute(sa.text("SELECT count(*) FROM admin_lineage")).scalar_one(),
        }


def test_a_pre_reform_file_replaces_only_its_period_and_keeps_the_lineage(units, tmp_path):
    engine, catalog, settings = units
    before = _counts(engine)
    current = table_snapshot(engine, "(SELECT * FROM admin_units WHERE valid_to IS NULL) ")
    path = tmp_path / "truoc_2025.gpkg"
    _frame(engine, PRE).assign(name=lambda f: f["name"] + " (2008)").to_file(path)

    report = ingest.load(engine, catalog, path, "admin_units", mode="replace", region=settings.region_extent)

    assert _counts(engine) == before  # today's units and all 104 lineage rows are still there
    assert table_snapshot(engine, "(SELECT * FROM admin_units WHERE valid_to IS NULL) ") == current
    assert (report.updated, report.inserted, report.deleted, report.cascaded) == (before["pre"], 0, 0, {})
    assert report.period == "2008-01-01 – 2025-07-01"
    with engine.connect() as conn:
        renamed = conn.execute(sa.text(f"SELECT count(*) FROM admin_units WHERE {PRE} AND name LIKE '%(2008)'"))
        assert renamed.scalar_one() == before["pre"]
        # locate still finds today's commune at the centre of Kon Tum city
        found = conn.execute(sa.text("SELECT count(*) FROM admin_units WHERE valid_to IS NULL AND level = 'commune' "
                                     "AND ST_Intersects(geom, ST_SetSRID(ST_MakePoint(108.0, 14.35), 4326))"))
        assert found.scalar_one() == 1


def test_a_replace_that_would_drop_lineage_is_refused_naming_it_unless_cascade(units, tmp_path):
    engine, catalog, settings = units
    before = table_snapshot(engine, "admin_units"), table_snapshot(engine, "admin_lineage")
    frame = _frame(engine, PRE)
    gone = frame.loc[frame.level == "commune", "code"].iloc[0]
    path = tmp_path / "thieu_mot_xa.gpkg"
    frame[frame.code != gone].to_file(path)

    with pytest.raises(IngestError) as refused:
        ingest.load(engine, catalog, path, "admin_units", mode="replace", region=settings.region_extent)
    message = str(refused.value)
    assert "admin_lineage" in message and f"old_code={gone}" in message and "--cascade" in message
    assert (table_snapshot(engine, "admin_units"), table_snapshot(engine, "admin_lineage")) == before

    with engine.connect() as conn:
        tied = conn.execute(sa.text("SELECT count(*) FROM admin_lineage WHERE old_code = :c"), {"c": gone}).scalar()
    report = ingest.load(engine, catalog, path, "admin_units", mode="replace", cascade=True,
                         region=settings.region_extent)
    assert report.deleted == 1 and report.cascaded == {"admin_lineage": tied}
    assert _counts(engine)["lineage"] == 104 - tied


def test_set_gives_a_column_one_value_and_upsert_matches_the_natural_key(units, tmp_path, run_cli):
    engine, _catalog, settings = units
    districts = _frame(engine, f"{PRE} AND level = 'district'", "code, unit_type, name, parent_code, valid_to")
    assert "level" not in districts.columns and "valid_from" not in districts.columns
    path = tmp_path / "huyen.gpkg"
    districts.assign(name=lambda f: "Huyện " + f["name"]).to_file(path)
    env = {"GIS_IOC_DATABASE_URL": settings.database_url, "GIS_IOC_HOME": str(settings.home)}

    code, _out, err = run_cli("load", str(path), "--layer", "admin_units", "--mode", "upsert", "--set",
                              "level=district", "--set", "valid_from=2008-01-01", env=env)
    assert code == 0, err
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT count(*) FILTER (WHERE name LIKE 'Huyện %'), count(*) FROM admin_units "
                                    f"WHERE {PRE} AND level = 'district'")).one()
    assert tuple(rows) == (len(districts), len(districts))  # updated in place, none added
    assert _counts(engine)["lineage"] == 104

    code, _out, err = run_cli("load", str(path), "--layer", "admin_units", "--set", "rank=1", env=env)
    assert code != 0 and "--set rank=1" in err and "Traceback" not in err


def test_appending_a_unit_again_names_its_key(units, tmp_path):
    engine, catalog, settings = units
    before = table_snapshot(engine, "admin_units")
    path = tmp_path / "lai.gpkg"
    one = _frame(engine, f"{PRE} AND level = 'commune'").iloc[:1]
    one.to_file(path)
    with pytest.raises(IngestError, match=rf"code={one.code.iloc[0]}, valid_from=2008-01-01.*--mode upsert"):
        ingest.load(engine, catalog, path, "admin_units", region=settings.region_extent)
    assert table_snapshot(engine, "admin_units") == before
