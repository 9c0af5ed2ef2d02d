-- 005: pre-aggregated cells for low-zoom clusters. For each clustered layer (tile_cell_config, written by
-- the app from layers/*.yaml) the features are counted per cell of its finest cluster grid, with the sums
-- of their coordinates and one row per style category. Row changes keep the cells exact; bulk loads and
-- TRUNCATE only mark them stale, and the first low-zoom tile rebuilds them (a load stays fast).

CREATE TABLE tile_cell_config (
    layer_table      text PRIMARY KEY,
    cells            double precision NOT NULL,  -- grid cells per world axis at the finest cluster zoom
    category_column  text,
    stale            boolean NOT NULL DEFAULT true
);

CREATE TABLE tile_cells (
    layer_table  text NOT NULL,
    cx           integer NOT NULL,
    cy           integer NOT NULL,
    category     text NOT NULL DEFAULT '',
    n            bigint NOT NULL,
    sum_lon      double precision NOT NULL,
    sum_lat      double precision NOT NULL,
    PRIMARY KEY (layer_table, cx, cy, category)
);

CREATE FUNCTION gis_ioc_cell_x(lon double precision, cells double precision) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT floor((lon + 180) / 360 * cells)::integer $$;
CREATE FUNCTION gis_ioc_cell_y(lat double precision, cells double precision) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
    $$ SELECT floor((1 - ln(tan(radians(lat)) + 1 / cos(radians(lat))) / pi()) / 2 * cells)::integer $$;

CREATE FUNCTION gis_ioc_cell_add(tbl text, cfg tile_cell_config, g geometry, cat text, delta integer)
    RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    p geometry := ST_PointOnSurface(g);
    lon double precision := ST_X(p);
    lat double precision := ST_Y(p);
BEGIN
    INSERT INTO tile_cells AS c (layer_table, cx, cy, category, n, sum_lon, sum_lat)
    VALUES (tbl, gis_ioc_cell_x(lon, cfg.cells), gis_ioc_cell_y(lat, cfg.cells), coalesce(cat, ''),
            delta, delta * lon, delta * lat)
    ON CONFLICT ON CONSTRAINT tile_cells_pkey DO UPDATE
        SET n = c.n + EXCLUDED.n, sum_lon = c.sum_lon + EXCLUDED.sum_lon, sum_lat = c.sum_lat + EXCLUDED.sum_lat;
END $$;

CREATE FUNCTION gis_ioc_track_cells() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    tbl text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
    cfg tile_cell_config;
BEGIN
    SELECT * INTO cfg FROM tile_cell_config WHERE layer_table = tbl;
    IF NOT FOUND OR cfg.stale THEN
        RETURN NULL;  -- no cells kept, or they will be rebuilt anyway
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM gis_ioc_cell_add(tbl, cfg, OLD.geom, to_jsonb(OLD) ->> cfg.category_column, -1);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        PERFORM gis_ioc_cell_add(tbl, cfg, NEW.geom, to_jsonb(NEW) ->> cfg.category_column, 1);
    END IF;
    DELETE FROM tile_cells WHERE layer_table = tbl AND n <= 0;
    RETURN NULL;
END $$;

CREATE FUNCTION gis_ioc_cells_stale() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('gis_ioc.bulk', true) = 'on' OR TG_OP = 'TRUNCATE' THEN
        UPDATE tile_cell_config SET stale = true WHERE layer_table = TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END $$;

-- Rebuild one layer's cells from its rows (called by the tile code when they are stale).
CREATE FUNCTION gis_ioc_rebuild_cells(tbl text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    cfg tile_cell_config;
BEGIN
    SELECT * INTO cfg FROM tile_cell_config WHERE layer_table = tbl FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    DELETE FROM tile_cells WHERE layer_table = tbl;
    EXECUTE format(
        'INSERT INTO tile_cells (layer_table, cx, cy, category, n, sum_lon, sum_lat) '
        'SELECT %L, gis_ioc_cell_x(ST_X(p), %s), gis_ioc_cell_y(ST_Y(p), %s), category, count(*), '
        'sum(ST_X(p)), sum(ST_Y(p)) FROM (SELECT ST_PointOnSurface(geom) AS p, %s AS category FROM %s) s '
        'GROUP BY 2, 3, 4',
        tbl, cfg.cells, cfg.cells,
        CASE WHEN cfg.category_column IS NULL THEN '''''' ELSE format('coalesce(%I::text, '''')', cfg.category_column) END,
        tbl);
    UPDATE tile_cell_config SET stale = false WHERE layer_table = tbl;
END $$;

CREATE TRIGGER track_cells AFTER INSERT OR UPDATE OR DELETE ON incidents FOR EACH ROW
    WHEN (current_setting('gis_ioc.bulk', true) IS DISTINCT FROM 'on') EXECUTE FUNCTION gis_ioc_track_cells();
CREATE TRIGGER track_cells AFTER INSERT OR UPDATE OR DELETE ON cameras FOR EACH ROW
    WHEN (current_setting('gis_ioc.bulk', true) IS DISTINCT FROM 'on') EXECUTE FUNCTION gis_ioc_track_cells();
CREATE TRIGGER cells_stale AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON incidents FOR EACH STATEMENT
    EXECUTE FUNCTION gis_ioc_cells_stale();
CREATE TRIGGER cells_stale AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON cameras FOR EACH STATEMENT
    EXECUTE FUNCTION gis_ioc_cells_stale();
