-- 020: incidents partitioned by month of report (declarative partitioning, months in the province's local time).
-- A partition per month that holds incidents (incidents_pYYYYMM), one for the months ahead, and a default one for
-- strays (a report dated years back through the API); gis_ioc_split_default moves strays into partitions of their
-- own months. Old months can be detached into the schema archive (gis-ioc db archive), where archive.incidents
-- keeps them queryable. The primary key becomes (id, reported_at): a partitioned table's unique keys must hold
-- the partition key; ids still come from the one identity sequence. Everything tied to the table (indexes,
-- triggers, grants) moves over as it was; the row triggers run on the partitions, so the cell trigger finds its
-- layer at the partition's root.

CREATE TABLE month_partitioned (
    table_name   text PRIMARY KEY,          -- schema.name of the partitioned layer table
    column_name  text NOT NULL,             -- the timestamptz column it is partitioned by
    time_zone    text NOT NULL              -- months begin at local midnight of the 1st in this zone
);
INSERT INTO month_partitioned VALUES ('public.incidents', 'reported_at', 'Asia/Ho_Chi_Minh');

-- The partition of `parent` for the month beginning at local time `month` (created, empty, when missing).
CREATE FUNCTION gis_ioc_month_partition(parent regclass, month timestamp, tz text) RETURNS regclass
    LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    sch text;
    base text;
    part text;
BEGIN
    SELECT n.nspname, c.relname INTO sch, base FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = parent;
    part := format('%I.%I', sch, left(base, 54) || '_p' || to_char(month, 'YYYYMM'));
    IF to_regclass(part) IS NULL THEN
        EXECUTE format('CREATE TABLE %s PARTITION OF %s FOR VALUES FROM (%L) TO (%L)', part, parent,
                       month AT TIME ZONE tz, (month + interval '1 month') AT TIME ZONE tz);
    END IF;
    RETURN to_regclass(part);
END $$;

-- Move the rows of `parent`'s default partition into partitions of their months (made as plain tables, filled,
-- then attached: no row trigger runs, nothing is counted twice). Holds ACCESS EXCLUSIVE on the parent while it
-- runs: on a live table the default holds only strays; a load's shadow table has no readers. Returns the number
-- of months that got a partition. Creates the default partition when there is none.
CREATE FUNCTION gis_ioc_split_default(parent regclass, col text, tz text) RETURNS integer
    LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    sch text;
    base text;
    dflt regclass;
    dflt_name text;
    has_rows boolean;
    month timestamp;
    part text;
    months integer := 0;
BEGIN
    SELECT n.nspname, c.relname INTO sch, base FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = parent;
    SELECT c.oid::regclass, c.relname INTO dflt, dflt_name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = parent AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT';
    IF dflt IS NULL THEN
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s DEFAULT', sch, left(base, 55) || '_default', parent);
        RETURN 0;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', dflt) INTO has_rows;
    IF NOT has_rows THEN
        RETURN 0;
    END IF;
    EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', parent, dflt);
    FOR month IN EXECUTE format('SELECT DISTINCT date_trunc(''month'', %I AT TIME ZONE %L) FROM %s ORDER BY 1',
                                col, tz, dflt) LOOP
        part := format('%I.%I', sch, left(base, 54) || '_p' || to_char(month, 'YYYYMM'));
        EXECUTE format('CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part, parent);
        EXECUTE format('INSERT INTO %s SELECT * FROM %s WHERE %I >= %L AND %I < %L', part, dflt,
                       col, month AT TIME ZONE tz, col, (month + interval '1 month') AT TIME ZONE tz);
        EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)', parent, part,
                       month AT TIME ZONE tz, (month + interval '1 month') AT TIME ZONE tz);
        months := months + 1;
    END LOOP;
    EXECUTE format('DROP TABLE %s', dflt);
    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s DEFAULT', sch, dflt_name, parent);
    RETURN months;
END $$;

-- Partitions for the months from `first` to `last` (strays in the default moved first); returns those created.
CREATE FUNCTION gis_ioc_month_partitions(parent regclass, first timestamptz, last timestamptz) RETURNS integer
    LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    cfg month_partitioned;
    month timestamp;
    made integer := 0;
BEGIN
    SELECT m.* INTO cfg FROM month_partitioned m WHERE to_regclass(m.table_name) = parent;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not partitioned by month', parent;
    END IF;
    PERFORM gis_ioc_split_default(parent, cfg.column_name, cfg.time_zone);
    FOR month IN SELECT generate_series(date_trunc('month', first AT TIME ZONE cfg.time_zone),
                                        date_trunc('month', last AT TIME ZONE cfg.time_zone), interval '1 month') LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = parent
                       AND c.relname = left((SELECT relname FROM pg_class WHERE oid = parent), 54) || '_p'
                                       || to_char(month, 'YYYYMM')) THEN
            PERFORM gis_ioc_month_partition(parent, month, cfg.time_zone);
            made := made + 1;
        END IF;
    END LOOP;
    RETURN made;
END $$;

-- Add (sign 1) or take away (sign -1) the counts of the rows of a table shaped like incidents (migration 018's
-- counts): a month archived out of incidents takes its rows' counts with it.
CREATE FUNCTION gis_ioc_count_rows(tbl regclass, sign integer) RETURNS void LANGUAGE plpgsql
    SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(72010002);
    EXECUTE format(
        'WITH delta AS ('
        '    SELECT gis_ioc_count_unit(geom) AS unit_code, type, severity, status, '
        '           date_trunc(''hour'', reported_at, ''UTC'') AS hour, %s * count(*) AS n '
        '    FROM %s WHERE merged_into IS NULL GROUP BY 1, 2, 3, 4, 5), '
        'hourly AS ('
        '    INSERT INTO incident_counts AS c (unit_code, type, severity, status, hour, n) '
        '    SELECT * FROM delta ORDER BY 1, 2, 3, 4, 5 '
        '    ON CONFLICT (unit_code, type, severity, status, hour) DO UPDATE SET n = c.n + EXCLUDED.n) '
        'INSERT INTO incident_totals AS c (unit_code, type, severity, status, n) '
        'SELECT unit_code, type, severity, status, sum(n) FROM delta GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4 '
        'ON CONFLICT (unit_code, type, severity, status) DO UPDATE SET n = c.n + EXCLUDED.n', sign, tbl);
END $$;

-- Take the rows of `part` (a partition about to leave the layer `tbl`) out of the layer's tile cells, as
-- gis_ioc_add_cells put them in (migrations 010, 014).
CREATE FUNCTION gis_ioc_take_cells(tbl text, part regclass) RETURNS void LANGUAGE plpgsql
    SET search_path = public, pg_temp AS $$
DECLARE
    cfg tile_cell_config;
BEGIN
    SELECT * INTO cfg FROM tile_cell_config WHERE layer_table = tbl FOR UPDATE;
    IF NOT FOUND OR cfg.stale THEN
        RETURN;  -- no cells kept, or they will be rebuilt anyway
    END IF;
    EXECUTE format(
        'INSERT INTO tile_cells AS c (layer_table, cx, cy, category, n, sum_lon, sum_lat) '
        'SELECT %L, gis_ioc_cell_x(x, %s), gis_ioc_cell_y(y, %s), category, -count(*), -sum(x), -sum(y) '
        'FROM (SELECT ST_X(p) AS x, ST_Y(p) AS y, category FROM (SELECT CASE WHEN GeometryType(geom) = ''POINT'' '
        'THEN geom ELSE ST_PointOnSurface(geom) END AS p, %s AS category FROM %s WHERE %s) s0) s '
        'GROUP BY 2, 3, 4 '
        'ON CONFLICT ON CONSTRAINT tile_cells_pkey DO UPDATE SET n = c.n + EXCLUDED.n, '
        'sum_lon = c.sum_lon + EXCLUDED.sum_lon, sum_lat = c.sum_lat + EXCLUDED.sum_lat',
        tbl, cfg.cells, cfg.cells,
        CASE WHEN cfg.category_column IS NULL THEN '''''' ELSE format('coalesce(%I::text, '''')', cfg.category_column) END,
        part,
        CASE WHEN cfg.not_counted_column IS NULL THEN 'true' ELSE format('%I IS NULL', cfg.not_counted_column) END);
    DELETE FROM tile_cells WHERE layer_table = tbl AND n <= 0;
END $$;

-- Row triggers run on the partition a row is in: the cells are those of the layer, the partition's root.
CREATE OR REPLACE FUNCTION gis_ioc_track_cells() RETURNS trigger LANGUAGE plpgsql
    SET search_path = public, pg_temp AS $$
DECLARE
    tbl text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
    cfg tile_cell_config;
BEGIN
    SELECT * INTO cfg FROM tile_cell_config WHERE layer_table = tbl;
    IF NOT FOUND THEN
        SELECT n.nspname || '.' || c.relname INTO tbl FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = pg_partition_root(TG_RELID);
        SELECT * INTO cfg FROM tile_cell_config WHERE layer_table = tbl;
    END IF;
    IF NOT FOUND OR cfg.stale THEN
        RETURN NULL;  -- no cells kept, or they will be rebuilt anyway
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE')
       AND (cfg.not_counted_column IS NULL OR to_jsonb(OLD) ->> cfg.not_counted_column IS NULL) THEN
        PERFORM gis_ioc_cell_add(tbl, cfg, OLD.geom, to_jsonb(OLD) ->> cfg.category_column, -1);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT')
       AND (cfg.not_counted_column IS NULL OR to_jsonb(NEW) ->> cfg.not_counted_column IS NULL) THEN
        PERFORM gis_ioc_cell_add(tbl, cfg, NEW.geom, to_jsonb(NEW) ->> cfg.category_column, 1);
    END IF;
    DELETE FROM tile_cells WHERE layer_table = tbl AND n <= 0;
    RETURN NULL;
END $$;

-- The table itself: a partitioned copy takes the old one's rows, then its indexes, triggers and grants.
ALTER TABLE incidents RENAME TO incidents_unpartitioned;
CREATE TABLE incidents (LIKE incidents_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY
                        INCLUDING GENERATED INCLUDING COMMENTS INCLUDING STORAGE) PARTITION BY RANGE (reported_at);
CREATE TABLE incidents_default PARTITION OF incidents DEFAULT;
SELECT gis_ioc_month_partition('incidents', m, 'Asia/Ho_Chi_Minh')
FROM (SELECT DISTINCT date_trunc('month', reported_at AT TIME ZONE 'Asia/Ho_Chi_Minh') AS m
      FROM incidents_unpartitioned) months ORDER BY m;
SELECT gis_ioc_month_partitions('incidents', now(), now() + interval '2 months');
INSERT INTO incidents OVERRIDING SYSTEM VALUE SELECT * FROM incidents_unpartitioned;

CREATE TEMP TABLE moved_definitions ON COMMIT DROP AS
    SELECT 1 AS step, pg_get_indexdef(i.indexrelid) AS definition
    FROM pg_index i WHERE i.indrelid = 'incidents_unpartitioned'::regclass AND NOT i.indisprimary
    UNION ALL
    SELECT 2, pg_get_triggerdef(t.oid) FROM pg_trigger t
    WHERE t.tgrelid = 'incidents_unpartitioned'::regclass AND NOT t.tgisinternal
    UNION ALL
    SELECT 3, format('GRANT %s ON incidents TO %s%s', a.privilege_type,
                     CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                     CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
    FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = 'incidents_unpartitioned'::regclass
      AND a.grantee <> c.relowner;
CREATE TEMP TABLE moved_sequence ON COMMIT DROP AS
    SELECT last_value, is_called FROM incidents_id_seq;

DROP TABLE incidents_unpartitioned;
ALTER TABLE incidents ADD CONSTRAINT incidents_pkey PRIMARY KEY (id, reported_at);
DO $$
DECLARE
    d text;
BEGIN
    FOR d IN SELECT definition FROM moved_definitions ORDER BY step, definition LOOP
        EXECUTE replace(d, ' ON public.incidents_unpartitioned ', ' ON public.incidents ');
    END LOOP;
END $$;
DO $$
DECLARE
    seq text := pg_get_serial_sequence('public.incidents', 'id');
BEGIN
    IF seq <> 'public.incidents_id_seq' THEN
        EXECUTE format('ALTER SEQUENCE %s RENAME TO incidents_id_seq', seq);
    END IF;
    PERFORM setval('public.incidents_id_seq', s.last_value, s.is_called) FROM moved_sequence s;
END $$;
ANALYZE incidents;

-- The archive: months detached from a layer keep their rows here, under a partitioned table of the same shape.
CREATE SCHEMA archive;
CREATE TABLE archive.incidents (LIKE incidents INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (reported_at);
-- a month attached here brings its own indexes; these match them (nothing is built again)
CREATE INDEX incidents_geom_idx ON archive.incidents USING gist (geom);
CREATE INDEX incidents_reported_at_idx ON archive.incidents (reported_at);
