"""Backup and restore of the configured database (``gis-ioc db dump`` / ``gis-ioc db restore``).

A dump is PostgreSQL's own custom-format archive (``pg_dump -Fc``): the whole database, or with
``layers_only`` the layer tables, the boundary lineage, the imported layers and their registry.
A restore goes into a database that holds no features yet (the private cluster or
``GIS_IOC_DATABASE_URL``): the migrations build the schema, the archive brings the rows (and the
tables of imported layers), then, in the same transaction, every id sequence is moved past its
table's largest id, every layer's version is bumped (tile caches and clients keyed on a version
never mix the old data with the restored one) and the low-zoom tile cells are rebuilt. Any
failure rolls the whole restore back.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from gis_ioc.catalog import Catalog
from gis_ioc.cluster import find_postgres
from gis_ioc.errors import DatabaseUnavailable, InvalidInput

# Built-in tables whose rows a dump carries (the others are rebuilt or belong to the target's own migrations).
LAYER_TABLES = ["public.admin_units", "public.admin_lineage", "public.cameras", "public.incidents",
                "public.infrastructure", "public.layer_registry", "public.layer_notes"]
PARTITIONED_TABLES = ["public.incidents"]  # by month (migration 020): their rows are in incidents_pYYYYMM
ARCHIVE_SCHEMA = "archive"  # months detached from a layer (gis-ioc db archive): archive.incidents_pYYYYMM
SERVICE_TABLES = ["public.api_keys", "public.audit_log"]  # in a whole-database dump only
IMPORTED_SCHEMA = "user_layers"

AFTER_RESTORE = """
SELECT pg_catalog.set_config('search_path', 'public', false);
DO $$
DECLARE r record;
BEGIN
    FOR r IN
        SELECT c.oid::regclass AS tbl, a.attname AS col,
               pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname) AS seq
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE c.relkind IN ('r', 'p') AND n.nspname IN ('public', 'user_layers')
    LOOP
        IF r.seq IS NOT NULL THEN
            EXECUTE format('SELECT setval(%L, greatest((SELECT max(%I) FROM %s), 1))', r.seq, r.col, r.tbl);
        END IF;
    END LOOP;
END $$;
UPDATE layer_versions SET version = version + 1, changed_at = now();
INSERT INTO layer_versions AS v (table_name)
    SELECT definition->>'table' FROM layer_registry
    ON CONFLICT (table_name) DO UPDATE SET version = v.version + 1, changed_at = now();
-- rows of months the database had no partition for went to the default partition: each month gets its own
SELECT gis_ioc_month_partitions(to_regclass(table_name), now(), now() + interval '2 months') FROM month_partitioned;
SELECT gis_ioc_recount_incidents();
UPDATE tile_cell_config SET stale = true;
SELECT gis_ioc_rebuild_cells(layer_table) FROM tile_cell_config;
"""
# Before the rows: the months the archive holds, in the layer and in its archive, so that the rows (loaded through
# the partitioned table) find them and pg_restore's statements about each month have their table.
BEFORE_RESTORE = """
SELECT pg_catalog.set_config('search_path', 'public', false);
CREATE TEMP TABLE restored_months (schema_name text, parent text, month date) ON COMMIT DROP;
INSERT INTO restored_months VALUES {months};
SELECT gis_ioc_month_partitions(to_regclass(parent), month + 14, month + 14) FROM restored_months
WHERE schema_name = 'public';
DO $$
DECLARE r record; tz text;
BEGIN
    FOR r IN SELECT * FROM restored_months WHERE schema_name = 'archive' LOOP
        SELECT time_zone INTO tz FROM month_partitioned WHERE to_regclass(table_name) = to_regclass(r.parent);
        EXECUTE format('CREATE TABLE IF NOT EXISTS archive.%I PARTITION OF archive.%I FOR VALUES FROM (%L) TO (%L)',
                       split_part(r.parent, '.', 2) || '_p' || to_char(r.month, 'YYYYMM'), split_part(r.parent, '.', 2),
                       r.month::timestamp AT TIME ZONE tz, (r.month + interval '1 month')::timestamp AT TIME ZONE tz);
    END LOOP;
END $$;
"""


@dataclass
class Restored:
    """What a restore brought."""

    tables: int
    features: dict[str, int]


def _tool(name: str) -> str:
    found = find_postgres()
    if found is None:
        raise DatabaseUnavailable(f"{name} not found: install PostgreSQL's client programs (postgresql-client)")
    return found.tool(name)


def _libpq_env(url: str) -> dict[str, str]:
    """The connection as libpq environment variables (the password never shows in the process list)."""
    parsed = make_url(url)
    env = {**os.environ}
    for key, value in (("PGHOST", parsed.host), ("PGPORT", parsed.port), ("PGUSER", parsed.username),
                       ("PGPASSWORD", parsed.password), ("PGDATABASE", parsed.database)):
        if value is not None:
            env[key] = str(value)
    sslmode = parsed.query.get("sslmode")
    if isinstance(sslmode, str):
        env["PGSSLMODE"] = sslmode
    return env


def _run(args: list[str], url: str, what: str) -> str:
    done = subprocess.run(args, env=_libpq_env(url), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise DatabaseUnavailable(f"{what} failed: {lines[-1] if lines else 'exit code ' + str(done.returncode)}")
    return done.stdout


def dump(url: str, path: Path, *, layers_only: bool = False) -> None:
    """Write the database (or only its layers) to ``path`` as a pg_dump custom archive."""
    if path.is_dir():
        raise InvalidInput(f"FILE: {path} is a folder; give the name of the dump file", param="file")
    if not path.parent.exists():
        raise InvalidInput(f"FILE: the folder {path.parent} does not exist", param="file")
    partial = path.with_name(path.name + ".partial")
    # a partitioned table's rows (incidents, by month) are restored through it, into whatever months the target has
    args = [_tool("pg_dump"), "--format=custom", "--no-owner", "--load-via-partition-root", f"--file={partial}"]
    if layers_only:  # pg_dump 15 names no partition with --table: its months by their names
        args += [f"--table={t}" for t in LAYER_TABLES] + [f"--table={t}_p*" for t in PARTITIONED_TABLES]
        args += [f"--table={t}_default" for t in PARTITIONED_TABLES] + [f"--table={IMPORTED_SCHEMA}.*"]
        args += [f"--table={ARCHIVE_SCHEMA}.{t.split('.', 1)[1]}_p*" for t in PARTITIONED_TABLES]
    try:
        _run(args, url, "pg_dump")
        partial.replace(path)  # a failed dump never leaves a file that looks whole
    finally:
        partial.unlink(missing_ok=True)


def _entries(archive: Path, url: str) -> list[str]:
    """The archive's table of contents, one line per entry (``pg_restore --list``)."""
    if not archive.is_file():
        raise InvalidInput(f"FILE: {archive} does not exist", param="file")
    try:
        listing = _run([_tool("pg_restore"), "--list", str(archive)], url, "pg_restore --list")
    except DatabaseUnavailable:
        raise InvalidInput(f"FILE: {archive} is not a gis-ioc dump (pg_restore cannot read it)", param="file") \
            from None
    return [line for line in listing.splitlines() if line and not line.startswith(";")]


_ENTRY = re.compile(r"^\d+; \d+ \d+ (?P<kind>TABLE DATA|SEQUENCE SET|SEQUENCE OWNED BY|FK CONSTRAINT|DEFAULT ACL|"
                    r"[A-Z]+) (?P<schema>\S+) (?P<name>\S+)")


def _selected(entries: list[str]) -> list[str]:
    """What a restore takes: the rows of the layer and service tables, and imported layers whole."""
    wanted = {t.split(".", 1)[1] for t in [*LAYER_TABLES, *SERVICE_TABLES]}
    months = re.compile("^(" + "|".join(re.escape(t.split(".", 1)[1]) for t in PARTITIONED_TABLES)
                        + r")_(p\d{6}|default)$")
    keep = []
    for line in entries:
        found = _ENTRY.match(line)
        if not found:
            continue
        kind, schema, name = found["kind"], found["schema"], found["name"]
        if schema == IMPORTED_SCHEMA and kind not in ("SCHEMA", "ACL"):
            keep.append(line)
        elif schema == ARCHIVE_SCHEMA and kind == "TABLE DATA" and months.match(name):
            keep.append(line)
        elif schema == "public" and kind == "TABLE DATA" and (name in wanted or months.match(name)):
            keep.append(line)
        elif schema == "public" and kind == "SEQUENCE SET" and name.removesuffix("_id_seq") in wanted:
            keep.append(line)
    if not any(" TABLE DATA public admin_units " in line for line in keep):
        raise InvalidInput("FILE: the archive has no admin_units rows: it is not a gis-ioc dump", param="file")
    return keep


def month_values(selected: list[str]) -> str:
    """The months the selected entries hold, as SQL rows (schema, partitioned table, first day)."""
    rows = []
    for line in selected:
        found = _ENTRY.match(line)
        month = re.search(r"_p(\d{4})(\d{2})$", found["name"]) if found and found["kind"] == "TABLE DATA" else None
        if found is None or month is None:
            continue
        parent = next((t for t in PARTITIONED_TABLES if found["name"].startswith(t.split(".", 1)[1] + "_p")), None)
        if parent is not None and found["schema"] in ("public", ARCHIVE_SCHEMA):
            rows.append(f"('{found['schema']}', '{parent}', DATE '{month[1]}-{month[2]}-01')")
    return ", ".join(rows) or "(NULL, NULL, NULL)"


def features_in(engine: Engine, catalog: Catalog) -> dict[str, int]:
    """How many features each layer of a database holds."""
    counts = {}
    with engine.connect() as conn:
        for layer in catalog.layers():
            counts[layer.id] = int(conn.execute(sa.text(f"SELECT count(*) FROM {layer.table}")).scalar_one())
    return counts


def restore(url: str, engine: Engine, catalog: Catalog, archive: Path) -> Restored:
    """Restore a dump into a database that holds no features (migrated already); all or nothing."""
    selected = _selected(_entries(archive, url))
    held = {k: v for k, v in features_in(engine, catalog).items() if v}
    if held:
        named = ", ".join(f"{k} {v:,}" for k, v in held.items())
        raise InvalidInput(
            f"the database already holds features ({named}); a restore goes into a new one, e.g. "
            "GIS_IOC_DATABASE_URL=postgresql://…/gis_ioc_restored gis-ioc db restore FILE", param="database"
        )
    with tempfile.TemporaryDirectory(prefix="gis-ioc-restore-") as work:
        listing, after = Path(work, "entries.list"), Path(work, "after.sql")
        listing.write_text("\n".join(selected) + "\n")
        after.write_text(AFTER_RESTORE)
        before = Path(work, "before.sql")
        before.write_text(BEFORE_RESTORE.format(months=month_values(selected)))
        scripts = [f"--file={before}"]
        # imported layers' tables, then the rows (data only, so triggers and foreign keys wait: the rows come
        # as they were, in any order), then the imported tables' indexes, keys and triggers
        for section in ("pre-data", "data", "post-data"):
            script = Path(work, f"{section}.sql")
            _run([_tool("pg_restore"), "--no-owner", "--disable-triggers", f"--section={section}",
                  f"--use-list={listing}", f"--file={script}", str(archive)], url, "pg_restore")
            scripts.append(f"--file={script}")
        _run([_tool("psql"), "--no-psqlrc", "--quiet", "--single-transaction", "--set=ON_ERROR_STOP=1",
              *scripts, f"--file={after}"], url, "restore")
    from gis_ioc import tile_cells

    with engine.connect() as conn:  # a new database learns which layers keep tile cells, and builds them
        tile_cells.sync_cell_config(conn, catalog)
        conn.execute(sa.text("SELECT gis_ioc_rebuild_cells(layer_table) FROM tile_cell_config WHERE stale"))
        conn.commit()
    return Restored(len(selected), features_in(engine, catalog))
