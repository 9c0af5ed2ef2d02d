-- 014: a report of the same event as another incident is merged into it (gis_ioc.merge). The report keeps its
-- row, its source and its time (merged_into names the main incident); the main incident counts its reports.
-- Counts — the low-zoom cells, the KPIs, the wall — see the event once: a merged report is not counted.
ALTER TABLE incidents ADD COLUMN merged_into bigint, ADD COLUMN reports integer NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD CONSTRAINT incidents_merged_into_check CHECK (merged_into IS DISTINCT FROM id);
CREATE INDEX incidents_merged_into_idx ON incidents (merged_into) WHERE merged_into IS NOT NULL;

-- No foreign key (a table others point at cannot be loaded through a shadow table): a statement trigger
-- keeps the two sides true when incidents are deleted. A deleted report is one report fewer for its main
-- incident; the reports of a deleted main incident stand alone again.
CREATE FUNCTION gis_ioc_merged_deleted() RETURNS trigger LANGUAGE plpgsql
    SET search_path = public, pg_temp AS $$
BEGIN
    UPDATE incidents i SET reports = greatest(i.reports - g.n, 0)
    FROM (SELECT merged_into, count(*) AS n FROM gone WHERE merged_into IS NOT NULL GROUP BY 1) g
    WHERE i.id = g.merged_into;
    UPDATE incidents SET merged_into = NULL WHERE merged_into IN (SELECT id FROM gone WHERE reports > 0);
    RETURN NULL;
END $$;
CREATE TRIGGER merged_deleted AFTER DELETE ON incidents REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION gis_ioc_merged_deleted();

-- cells count only the rows whose not_counted_column is empty (set from the layer catalog)
ALTER TABLE tile_cell_config ADD COLUMN not_counted_column text;

CREATE OR REPLACE FUNCTION gis_ioc_add_cells(tbl text, cfg tile_cell_config, rows_where text) RETURNS void
    LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    EXECUTE format(
        'INSERT INTO tile_cells AS c (layer_table, cx, cy, category, n, sum_lon, sum_lat) '
        'SELECT %L, gis_ioc_cell_x(x, %s), gis_ioc_cell_y(y, %s), category, count(*), sum(x), sum(y) '
        'FROM (SELECT ST_X(p) AS x, ST_Y(p) AS y, category FROM (SELECT CASE WHEN GeometryType(geom) = ''POINT'' '
        'THEN geom ELSE ST_PointOnSurface(geom) END AS p, %s AS category FROM %s WHERE (%s) AND %s) s0) s '
        'GROUP BY 2, 3, 4 '
        'ON CONFLICT ON CONSTRAINT tile_cells_pkey DO UPDATE SET n = c.n + EXCLUDED.n, '
        'sum_lon = c.sum_lon + EXCLUDED.sum_lon, sum_lat = c.sum_lat + EXCLUDED.sum_lat',
        tbl, cfg.cells, cfg.cells,
        CASE WHEN cfg.category_column IS NULL THEN '''''' ELSE format('coalesce(%I::text, '''')', cfg.category_column) END,
        tbl, rows_where,
        CASE WHEN cfg.not_counted_column IS NULL THEN 'true' ELSE format('%I IS NULL', cfg.not_counted_column) END);
    UPDATE tile_cell_config SET stale = false WHERE layer_table = tbl;
END $$;

CREATE OR REPLACE FUNCTION gis_ioc_track_cells() RETURNS trigger LANGUAGE plpgsql
    SET search_path = public, pg_temp AS $$
DECLARE
    tbl text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
    cfg tile_cell_config;
BEGIN
    SELECT * INTO cfg FROM tile_cell_config WHERE layer_table = tbl;
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

-- merging is audited on both features
ALTER TABLE audit_log DROP CONSTRAINT audit_log_operation_check;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_operation_check CHECK (operation IN (
    'create', 'replace', 'update', 'delete', 'import', 'create_layer', 'merge', 'merged', 'unmerge', 'unmerged'));
