"""Loading files into layers: formats, CRS, repair, modes, and bad input that changes nothing."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import shapely
import sqlalchemy as sa
from pyproj import Geod, Transformer
from shapely.geometry import LineString, Point, Polygon

from gis_ioc import ingest
from gis_ioc.catalog import Catalog
from gis_ioc.errors import IngestError, LayerNotFound
from gis_ioc.ingest import rows, store

from .conftest import table_snapshot
from .factories import CITY, sample, write

LAYERS = ["admin_units", "cameras", "incidents", "infrastructure"]
FORMATS = ["geojson", "gpkg", "shp.zip", "csv"]


def _count(engine, table: str) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("layer_id", LAYERS)
def test_each_format_loads_into_each_layer(engine, catalog, settings, tmp_path, layer_id, fmt):
    frame = sample(layer_id)
    path = write(frame, fmt, tmp_path)
    # Shapefile cuts column names at 10 characters: the user maps them back.
    mapping = {c[:10]: c for c in frame.columns if len(c) > 10} if fmt == "shp.zip" else {}
    crs = "EPSG:4326" if fmt == "csv" else None  # a CSV has no CRS of its own
    report = ingest.load(engine, catalog, path, layer_id, crs=crs, mapping=mapping, region=settings.region_extent)
    assert (report.rows_read, report.rows_loaded, report.refused) == (3, 3, 0)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT * FROM {layer_id} ORDER BY id")).mappings().all()
    assert len(rows) == 3
    key = {"admin_units": "name", "cameras": "name", "incidents": "title", "infrastructure": "name"}[layer_id]
    assert [r[key] for r in rows] == list(frame[key])
    if layer_id == "cameras":
        assert [r["heading_deg"] for r in rows] == [0.0, 90.5, 271.0]
        assert [r["camera_type"] for r in rows] == ["fixed"] * 3  # the column default, not NULL
    if layer_id == "incidents":
        assert str(rows[0]["reported_at"]) == "2026-11-20 01:00:00+00:00"
        assert [r["status"] for r in rows] == ["new"] * 3
        assert [r["source"] for r in rows] == ["113", "114", "115"]


@pytest.mark.parametrize("fmt", ["fgb", "kml"])
def test_flatgeobuf_and_kml(engine, catalog, settings, tmp_path, fmt):
    frame = sample("cameras")[["name", "geometry"]]
    path = write(frame, fmt, tmp_path)
    report = ingest.load(engine, catalog, path, "cameras", region=settings.region_extent, ignore_unknown=True)
    assert report.rows_loaded == 3
    assert _count(engine, "cameras") == 3


def test_vn2000_point_lands_within_a_metre(engine, catalog, settings, tmp_path):
    """A point given in VN-2000 / TM-3 107-30 (EPSG:9216) lands where pyproj puts it in WGS 84."""
    lon, lat = 108.0045, 14.3512
    to_vn2000 = Transformer.from_crs(4326, 9216, always_xy=True)
    x, y = to_vn2000.transform(lon, lat)
    frame = gpd.GeoDataFrame({"name": ["CAM VN-2000"]}, geometry=[Point(x, y)], crs=9216)
    path = write(frame, "gpkg", tmp_path)
    report = ingest.load(engine, catalog, path, "cameras", region=settings.region_extent)
    assert report.source_crs == "EPSG:9216"
    with engine.connect() as conn:
        got_lon, got_lat = conn.execute(sa.text("SELECT ST_X(geom), ST_Y(geom) FROM cameras")).one()
    _, _, metres = Geod(ellps="WGS84").inv(lon, lat, got_lon, got_lat)
    assert metres < 1.0


def test_crs_option_overrides_a_file_without_crs(engine, catalog, settings, tmp_path):
    """The same VN-2000 coordinates in a CSV without CRS load once --crs names it."""
    x, y = Transformer.from_crs(4326, 9216, always_xy=True).transform(*CITY)
    path = tmp_path / "cams.csv"
    path.write_text(f"name,x,y\nCAM 1,{x},{y}\n", encoding="utf-8")
    with pytest.raises(IngestError, match="no coordinate reference system"):
        ingest.load(engine, catalog, path, "cameras", region=settings.region_extent)
    ingest.load(engine, catalog, path, "cameras", crs="9216", region=settings.region_extent)
    with engine.connect() as conn:
        got = conn.execute(sa.text("SELECT ST_X(geom), ST_Y(geom) FROM cameras")).one()
    assert got == pytest.approx(CITY, abs=1e-5)


def test_invalid_geometry_is_repaired_and_counted_or_refused_when_strict(engine, catalog, settings, tmp_path):
    x, y = CITY
    bowtie = Polygon([(x, y), (x + 0.01, y + 0.01), (x + 0.01, y), (x, y + 0.01)])
    frame = gpd.GeoDataFrame({"kind": ["reservoir", "reservoir"], "name": ["Hồ A", "Hồ B"]},
                             geometry=[bowtie, Polygon([(x, y), (x + 0.01, y), (x, y + 0.01)])], crs=4326)
    path = write(frame, "geojson", tmp_path)
    with pytest.raises(IngestError, match="--strict: 1 invalid geometry, row\\(s\\) 1"):
        ingest.load(engine, catalog, path, "infrastructure", strict=True, region=settings.region_extent)
    assert _count(engine, "infrastructure") == 0
    report = ingest.load(engine, catalog, path, "infrastructure", region=settings.region_extent)
    assert (report.rows_loaded, report.repaired) == (2, 1)
    with engine.connect() as conn:
        valid = conn.execute(sa.text("SELECT bool_and(ST_IsValid(geom)), min(GeometryType(geom)) "
                                     "FROM infrastructure")).one()
    assert valid[0] is True and valid[1] == "MULTIPOLYGON"


def test_empty_geometries_are_refused_and_counted(engine, catalog, settings, tmp_path):
    frame = gpd.GeoDataFrame({"name": ["A", "B"]}, geometry=[Point(CITY), None], crs=4326)
    path = write(frame, "gpkg", tmp_path)
    report = ingest.load(engine, catalog, path, "cameras", region=settings.region_extent)
    assert (report.rows_read, report.rows_loaded, report.refused) == (2, 1, 1)


def test_replace_and_upsert(engine, catalog, settings, tmp_path):
    frame = sample("cameras")
    ingest.load(engine, catalog, write(frame, "gpkg", tmp_path, "a"), "cameras", region=settings.region_extent)
    ingest.load(engine, catalog, write(frame, "gpkg", tmp_path, "b"), "cameras", mode="replace",
                region=settings.region_extent)
    assert _count(engine, "cameras") == 3
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(sa.text("SELECT id FROM cameras ORDER BY id"))]
    update = frame.iloc[:1].assign(id=[ids[0]], status=["offline"], name=["CAM đổi tên"])
    new = frame.iloc[:1].assign(id=[ids[-1] + 100], name=["CAM mới"])
    both = gpd.GeoDataFrame(pd_concat([update, new]), crs=4326)
    report = ingest.load(engine, catalog, write(both, "geojson", tmp_path, "c"), "cameras", mode="upsert",
                         region=settings.region_extent)
    assert report.rows_loaded == 2
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, name, status FROM cameras ORDER BY id")).all()
        next_id = conn.execute(sa.text("INSERT INTO cameras (name, geom) VALUES ('x', "
                                       "ST_SetSRID(ST_MakePoint(108, 14.3), 4326)) RETURNING id")).scalar()
    assert len(rows) == 4
    assert (rows[0].name, rows[0].status) == ("CAM đổi tên", "offline")
    assert rows[-1].name == "CAM mới"
    assert next_id > ids[-1] + 100  # the id sequence moved past the loaded ids


def pd_concat(frames):  # type: ignore[no-untyped-def]
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def test_upsert_needs_ids(engine, catalog, settings, tmp_path):
    path = write(sample("cameras"), "geojson", tmp_path)
    with pytest.raises(IngestError, match="upsert needs the id column"):
        ingest.load(engine, catalog, path, "cameras", mode="upsert", region=settings.region_extent)


def test_database_refusal_mid_load_leaves_the_layer_as_it_was(engine, catalog, settings, tmp_path):
    """A replace whose rows the database refuses (fov 0 breaks a CHECK) keeps the old rows."""
    ingest.load(engine, catalog, write(sample("cameras"), "gpkg", tmp_path, "ok"), "cameras",
                region=settings.region_extent)
    before = table_snapshot(engine, "cameras")
    bad = sample("cameras").assign(fov_deg=[60.0, 0.0, 90.0])
    with pytest.raises(IngestError, match="the database refused the rows"):
        ingest.load(engine, catalog, write(bad, "gpkg", tmp_path, "bad"), "cameras", mode="replace",
                    region=settings.region_extent)
    assert table_snapshot(engine, "cameras") == before


@pytest.mark.parametrize("bulk_rows", [1, 10**9], ids=["shadow table", "in place"])
def test_a_load_keeps_the_layer_readable_and_is_seen_whole_at_commit(engine, catalog, settings, monkeypatch,
                                                                      tmp_path, bulk_rows):
    """Readers are never locked out: they see the old rows during the load, the new ones after it commits."""
    ingest.load(engine, catalog, write(sample("cameras"), "gpkg", tmp_path, "first"), "cameras",
                region=settings.region_extent)
    before = _count(engine, "cameras")
    monkeypatch.setattr(store, "CHUNK_ROWS", 1)  # several chunks through the COPY pipe
    monkeypatch.setattr(store, "BULK_ROWS", bulk_rows)
    halfway, go_on = threading.Event(), threading.Event()
    real_check = rows.check_rows

    def slow_check(frame, plan, offset=0):  # type: ignore[no-untyped-def]
        if offset == 1:  # the first row is in the COPY: hold the load open here
            halfway.set()
            go_on.wait(30)
        return real_check(frame, plan, offset)

    monkeypatch.setattr(store, "check_rows", slow_check)
    calls: list[tuple[int, int]] = []
    loading = threading.Thread(target=ingest.load, args=(engine, catalog, write(sample("cameras"), "gpkg", tmp_path,
                                                                                 "second"), "cameras"),
                               kwargs={"region": settings.region_extent,
                                       "progress": lambda done, total: calls.append((done, total))})
    loading.start()
    try:
        assert halfway.wait(30)
        reader = sa.create_engine(engine.url)
        with reader.connect() as conn:
            conn.execute(sa.text("SET lock_timeout = '500ms'"))
            assert conn.execute(sa.text("SELECT count(*) FROM cameras WHERE geom && "
                                        "ST_MakeEnvelope(100, 0, 120, 30, 4326)")).scalar() == before
            held = conn.execute(sa.text("SELECT mode FROM pg_locks WHERE relation = 'cameras'::regclass "
                                        "AND pid <> pg_backend_pid()")).scalars().all()
        reader.dispose()
        assert "AccessExclusiveLock" not in held and "ShareLock" not in held
    finally:
        go_on.set()
        loading.join(30)
    assert _count(engine, "cameras") == before + 3
    assert calls[-1] == (3, 3)
    with engine.connect() as conn:
        indexes = {r[0] for r in conn.execute(sa.text("SELECT indexname FROM pg_indexes WHERE tablename = 'cameras'"))}
    assert {"cameras_geom_idx", "cameras_status_idx", "cameras_pkey"} <= indexes


def _shape(engine, table: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """What a table is besides its rows: columns, indexes, constraints, triggers, grants, its id sequence."""
    with engine.connect() as conn:
        def rows(sql: str) -> list:  # type: ignore[type-arg]
            return sorted(tuple(r) for r in conn.execute(sa.text(sql), {"t": table}))

        return {
            "columns": rows("SELECT attname, format_type(atttypid, atttypmod), attnotnull, attidentity, "
                            "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a LEFT JOIN pg_attrdef d ON "
                            "d.adrelid = a.attrelid AND d.adnum = a.attnum WHERE attrelid = CAST(:t AS regclass) "
                            "AND attnum > 0 AND NOT attisdropped"),
            "indexes": rows("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname || '.' || tablename = :t"),
            "constraints": rows("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                                "WHERE conrelid = CAST(:t AS regclass)"),
            "triggers": rows("SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger "
                             "WHERE tgrelid = CAST(:t AS regclass) AND NOT tgisinternal"),
            "grants": rows("SELECT grantee, privilege_type FROM information_schema.role_table_grants "
                           "WHERE table_schema || '.' || table_name = :t"),
            "sequence": rows("SELECT pg_get_serial_sequence(:t, 'id')"),
        }


@pytest.mark.parametrize("mode", ["replace", "append"])
def test_a_shadow_load_leaves_the_table_as_it_was_built(engine, catalog, settings, monkeypatch, tmp_path, mode):
    """A big load goes through a shadow table: the layer's table comes out with everything it had, ids go on."""
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE ROLE gis_ioc_reader_test"))  # a reader's grant must survive the swap
        conn.execute(sa.text("GRANT SELECT ON incidents TO gis_ioc_reader_test"))
    try:
        ingest.load(engine, catalog, write(sample("incidents"), "gpkg", tmp_path, "a"), "incidents",
                    region=settings.region_extent)
        shape, before = _shape(engine, "public.incidents"), _count(engine, "incidents")
        with engine.connect() as conn:
            last_id = conn.execute(sa.text("SELECT max(id) FROM incidents")).scalar()
            old_table = conn.execute(sa.text("SELECT 'incidents'::regclass::oid")).scalar()
        monkeypatch.setattr(store, "BULK_ROWS", 1)
        report = ingest.load(engine, catalog, write(sample("incidents"), "gpkg", tmp_path, "b"), "incidents",
                             mode=mode, region=settings.region_extent)
        assert report.deleted == (before if mode == "replace" else 0)  # the report says what a replace removed
        assert report.analyze is False  # statistics made after the commit, by the load itself
        assert _shape(engine, "public.incidents") == shape
        assert _count(engine, "incidents") == (3 if mode == "replace" else before + 3)
        with engine.connect() as conn:  # it was a shadow table that took the layer's place
            assert conn.execute(sa.text("SELECT 'incidents'::regclass::oid")).scalar() != old_table
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT min(id) FROM incidents WHERE title = 'Cấp cứu' AND id > :i"),
                                {"i": last_id}).scalar() is not None  # new ids go on from the old ones
            assert not conn.execute(sa.text("SELECT relname FROM pg_class WHERE relname LIKE '%gis_ioc_load%'")).all()
            new = conn.execute(sa.text(
                "INSERT INTO incidents (type, title, geom) VALUES ('fire', 'sau khi nạp', "
                "ST_SetSRID(ST_MakePoint(108.0, 14.35), 4326)) RETURNING id, commune_code")).one()
            assert new.id > last_id + 3  # the identity sequence went on, and the row triggers work again
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("REVOKE ALL ON incidents FROM gis_ioc_reader_test"))
            conn.execute(sa.text("DROP ROLE gis_ioc_reader_test"))


def test_a_table_a_view_depends_on_is_loaded_in_place(engine, catalog, settings, monkeypatch, tmp_path):
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE VIEW online_cameras AS SELECT * FROM cameras WHERE status = 'online'"))
        table = conn.execute(sa.text("SELECT 'cameras'::regclass::oid")).scalar()
    monkeypatch.setattr(store, "BULK_ROWS", 1)
    ingest.load(engine, catalog, write(sample("cameras"), "gpkg", tmp_path), "cameras", region=settings.region_extent)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM online_cameras")).scalar() == 1
        assert conn.execute(sa.text("SELECT 'cameras'::regclass::oid")).scalar() == table  # loaded in place


def test_incident_communes_are_derived_as_the_trigger_derives_them(engine, catalog, settings, tmp_path):
    """A file without commune_code gets, in bulk, the commune the database trigger gives one row at a time."""
    from gis_ioc import demo

    province = demo.generate(scale=0.05, ref_time=datetime(2026, 11, 28, 8, tzinfo=UTC))
    units = catalog.get("admin_units")
    ingest.load_frame(engine, units, ingest.prepare(province.admin_units, units), mode="append")
    incidents = province.incidents.drop(columns=["id", "commune_code"])
    # points right on commune boundaries and vertices too, before and after the 2025 reform
    edges = shapely.get_coordinates(province.admin_units.geometry.boundary.values)[::40][:200]
    extra = gpd.GeoDataFrame({"type": "flood", "title": "trên ranh giới", "reported_at": [
        datetime(2025, 3, 1, tzinfo=UTC) if i % 2 else datetime(2026, 3, 1, tzinfo=UTC) for i in range(len(edges))]},
        geometry=shapely.points(edges), crs=4326)
    path = write(pd.concat([incidents, extra], ignore_index=True), "gpkg", tmp_path)
    ingest.load(engine, catalog, path, "incidents", region=settings.region_extent)
    with engine.begin() as conn:
        derived = dict(conn.execute(sa.text("SELECT id, commune_code FROM incidents")).all())
        conn.execute(sa.text("UPDATE incidents SET commune_code = NULL, geom = geom"))  # the trigger, row by row
        by_trigger = dict(conn.execute(sa.text("SELECT id, commune_code FROM incidents")).all())
    assert len(derived) == len(incidents) + len(edges)
    assert sum(v is not None for v in derived.values()) > 0.95 * len(derived)
    assert derived == by_trigger


def test_import_file_as_new_layer_is_seen_by_every_catalog(engine, catalog, settings, tmp_path):
    x, y = CITY
    frame = gpd.GeoDataFrame(
        {"Tên": ["Chợ Kon Tum", "Bến xe"], "so_quay": [120, 30], "dien_tich": [1.5, 0.7],
         "mo_cua": ["2020-01-05", "2019-03-01"]},
        geometry=[Point(x, y), Point(x + 0.01, y)], crs=4326,
    )
    path = write(frame, "gpkg", tmp_path)
    report = ingest.import_layer(engine, catalog, path, "cho_ben_xe", title="Chợ và bến xe",
                                 region=settings.region_extent)
    assert report.rows_loaded == 2
    other_process = Catalog.from_folder(settings.layers_dir, engine)
    layer = other_process.get("cho_ben_xe")
    assert layer.source == "imported" and layer.title == "Chợ và bến xe"
    assert layer.properties["so_quay"].type.value == "integer"
    assert layer.style.label == "ten"  # "Tên", folded to ASCII
    assert layer.properties["dien_tich"].type.value == "number"
    assert layer.table == "user_layers.cho_ben_xe"
    assert "cho_ben_xe" in [lyr.id for lyr in other_process.layers()]
    assert _count(engine, "user_layers.cho_ben_xe") == 2
    # and a later load into it goes through the same checks
    ingest.load(engine, other_process, path, "cho_ben_xe", region=settings.region_extent)
    assert _count(engine, "user_layers.cho_ben_xe") == 4
    with pytest.raises(IngestError, match="exists already"):
        ingest.import_layer(engine, other_process, path, "cho_ben_xe", region=settings.region_extent)


def test_import_that_fails_creates_nothing(engine, catalog, settings, tmp_path):
    frame = gpd.GeoDataFrame({"name": ["far"]}, geometry=[Point(2.35, 48.85)], crs=4326)
    with pytest.raises(IngestError, match="far outside"):
        ingest.import_layer(engine, catalog, write(frame, "gpkg", tmp_path), "paris",
                            region=settings.region_extent)
    with pytest.raises(LayerNotFound):
        Catalog.from_folder(settings.layers_dir, engine).get("paris")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('user_layers.paris')")).scalar() is None


# -- bad input through the CLI: one line, non-zero exit, the table unchanged -----------------------


@pytest.fixture
def loaded(engine, catalog, settings, tmp_path):  # type: ignore[no-untyped-def]
    """Cameras with three rows, and the snapshot every failed load must leave."""
    ingest.load(engine, catalog, write(sample("cameras"), "gpkg", tmp_path, "base"), "cameras",
                region=settings.region_extent)
    return table_snapshot(engine, "cameras")


def _bad_files(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    x, y = CITY
    empty = tmp_path / "empty.geojson"
    empty.write_text("")
    no_features = tmp_path / "none.geojson"
    no_features.write_text('{"type": "FeatureCollection", "features": []}')
    garbage = tmp_path / "garbage.gpkg"
    garbage.write_bytes(b"this is not a geopackage" * 10)
    no_crs = tmp_path / "nocrs.csv"
    no_crs.write_text("name,lon,lat\nCAM,108.0,14.35\n")
    unknown_col = write(sample("cameras").assign(megapixels=[4, 8, 2]), "geojson", tmp_path, "unknown_col")
    line = write(gpd.GeoDataFrame({"name": ["L"]}, geometry=[LineString([(x, y), (x + 0.01, y)])], crs=4326),
                 "geojson", tmp_path, "line")
    far = write(gpd.GeoDataFrame({"name": ["Hà Nội"]}, geometry=[Point(105.85, 21.03)], crs=4326),
                "geojson", tmp_path, "far")
    swapped = write(gpd.GeoDataFrame({"name": ["swapped"]}, geometry=[Point(y, x)], crs=4326),
                    "geojson", tmp_path, "swapped")
    bad_enum = write(sample("cameras").assign(status=["online", "broken", "online"]), "geojson", tmp_path, "enum")
    no_name = write(sample("cameras").drop(columns=["name"]), "geojson", tmp_path, "no_name")
    good = write(sample("cameras"), "geojson", tmp_path, "good")
    return {
        "missing file": ([str(tmp_path / "nope.geojson"), "--layer", "cameras"], "no such file"),
        "unreadable file": ([str(garbage), "--layer", "cameras"], "cannot read the file"),
        "empty file": ([str(empty), "--layer", "cameras"], "the file is empty"),
        "no features": ([str(no_features), "--layer", "cameras"], "no features"),
        "unknown layer": ([str(good), "--layer", "bridges"], "no layer 'bridges'"),
        "unknown column": ([str(unknown_col), "--layer", "cameras"], "unknown column(s) megapixels"),
        "unknown mapped column": ([str(good), "--layer", "cameras", "--map", "ten=name"], "no column 'ten'"),
        "mapped to unknown property": ([str(good), "--layer", "cameras", "--map", "zone=khu_vuc"],
                                       "no property 'khu_vuc'"),
        "wrong geometry type": ([str(line), "--layer", "cameras"], "wrong geometry type: 1 feature(s) are LineString"),
        "no CRS": ([str(no_crs), "--layer", "cameras"], "no coordinate reference system; give one with --crs"),
        "unknown CRS": ([str(good), "--layer", "cameras", "--crs", "EPSG:999999"], "unknown coordinate reference"),
        "far outside the province": ([str(far), "--layer", "cameras"], "far outside the province"),
        "lon/lat swapped": ([str(swapped), "--layer", "cameras"], "latitude, longitude (swapped)"),
        "value not allowed": ([str(bad_enum), "--layer", "cameras"], "'broken' not allowed"),
        "required column missing": ([str(no_name), "--layer", "cameras"], "needs column(s) name"),
        "bad mode": ([str(good), "--layer", "cameras", "--mode", "merge"], "'merge' is not one of"),
    }


BAD_CASES = [
    "missing file", "unreadable file", "empty file", "no features", "unknown layer", "unknown column",
    "unknown mapped column", "mapped to unknown property", "wrong geometry type", "no CRS", "unknown CRS",
    "far outside the province", "lon/lat swapped", "value not allowed", "required column missing", "bad mode",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_clear_line_and_changes_nothing(case, loaded, engine, settings, tmp_path, run_cli):
    args, message = _bad_files(tmp_path)[case]
    if "--mode" not in args:
        args = [*args, "--mode", "replace"]  # even a replace that fails keeps the old rows
    code, out, err = run_cli("load", *args, env={"GIS_IOC_DATABASE_URL": settings.database_url or ""})
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gis-ioc: error: ")
    assert message in lines[0]
    assert "Traceback" not in err + out
    assert table_snapshot(engine, "cameras") == loaded


def test_cli_load_prints_a_summary(engine, settings, tmp_path, run_cli):
    path = write(sample("cameras"), "geojson", tmp_path)
    code, out, err = run_cli("load", str(path), "--layer", "cameras",
                             env={"GIS_IOC_DATABASE_URL": settings.database_url or ""})
    assert code == 0, err
    for word in ("rows read", "loaded", "repaired", "refused", "seconds"):
        assert word in out
    assert _count(engine, "cameras") == 3


def test_an_error_in_a_later_chunk_aborts_the_copy_and_keeps_the_old_rows(engine, catalog, settings, monkeypatch,
                                                                         tmp_path):
    """Rows are checked while earlier chunks are already being copied; a bad third row still changes nothing."""
    ingest.load(engine, catalog, write(sample("cameras"), "gpkg", tmp_path, "ok"), "cameras",
                region=settings.region_extent)
    before = table_snapshot(engine, "cameras")
    monkeypatch.setattr(store, "CHUNK_ROWS", 1)
    bad = sample("cameras").assign(status=["online", "offline", "exploded"])
    with pytest.raises(IngestError, match=r"'exploded' not allowed \(row 3\)") as refused:
        ingest.load(engine, catalog, write(bad, "gpkg", tmp_path, "bad"), "cameras", mode="replace",
                    region=settings.region_extent)
    assert refused.value.message.startswith("column 'status'")  # issue 11: the cause first, no COPY internals
    assert "COPY" not in refused.value.message and "database" not in refused.value.message
    assert table_snapshot(engine, "cameras") == before


def test_a_file_of_only_unusable_geometries_loads_nothing(engine, catalog, settings, tmp_path):
    ingest.load(engine, catalog, write(sample("cameras"), "gpkg", tmp_path, "ok"), "cameras",
                region=settings.region_extent)
    before = table_snapshot(engine, "cameras")
    frame = gpd.GeoDataFrame({"name": ["A", "B"]}, geometry=[None, None], crs=4326)
    with pytest.raises(IngestError, match="no feature has a usable geometry"):
        ingest.load(engine, catalog, write(frame, "gpkg", tmp_path, "empty"), "cameras", mode="replace",
                    region=settings.region_extent)
    assert table_snapshot(engine, "cameras") == before


def test_a_big_load_leaves_statistics_and_the_pool_as_it_found_it(engine, catalog, settings, monkeypatch, tmp_path):
    """The planner needs the table's statistics after a load: without them a page of 10 in a wide bbox took 2 s
    at 1M incidents (ANALYZE had run in a transaction the pool rolled back)."""
    monkeypatch.setattr(store, "BULK_ROWS", 1)
    ingest.load(engine, catalog, write(sample("incidents"), "gpkg", tmp_path, "a"), "incidents",
                region=settings.region_extent)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pg_stats WHERE schemaname = 'public' "
                                    "AND tablename = 'incidents' AND attname = 'geom'")).scalar() == 1
    before = _count(engine, "incidents")
    with pytest.raises(RuntimeError), engine.begin() as conn:  # the pool's connections are transactional again
        conn.execute(sa.text("DELETE FROM incidents"))
        raise RuntimeError("changed my mind")
    assert _count(engine, "incidents") == before


def test_file_ids_up_to_the_largest_exact_number_load_and_new_rows_follow(engine, catalog, settings, tmp_path):
    path = tmp_path / "cameras.csv"
    path.write_text(f"id,name,lon,lat\n9007199254740991,Camera X,{CITY[0]},{CITY[1]}\n")
    assert ingest.load(engine, catalog, path, "cameras", crs="EPSG:4326",
                       region=settings.region_extent).rows_loaded == 1
    with engine.begin() as conn:
        added = conn.execute(sa.text("INSERT INTO cameras (name, geom) VALUES ('next', "
                                     "ST_SetSRID(ST_MakePoint(:x, :y), 4326)) RETURNING id"),
                             {"x": CITY[0], "y": CITY[1]}).scalar_one()
    assert added == 9007199254740992
