-- 010: an append adds its own rows to the tile cells instead of rebuilding them from the whole layer.
-- A load of 1,000 incidents into a layer of a million rebuilt all its cells (2 s) inside the load; the rows a
-- transaction inserted are those whose xmin is its own transaction id, and their cells are added in one
-- statement (a scan of xmin, ~0.1 s at a million rows). One function adds the cells of the rows that meet a
-- condition; a rebuild is "delete the layer's cells, add those of every row".
CREATE FUNCTION gis_ioc_add_cells(tbl text, cfg tile_cell_config, rows_where text) RETURNS void LANGUAGE plpgsql
    SET search_path = public, pg_temp AS $$
BEGIN
    EXECUTE format(
        'INSERT INTO tile_cells AS c (layer_table, cx, cy, category, n, sum_lon, sum_lat) '
        'SELECT %L, gis_ioc_cell_x(x, %s), gis_ioc_cell_y(y, %s), category, count(*), sum(x), sum(y) '
        'FROM (SELECT ST_X(p) AS x, ST_Y(p) AS y, category FROM (SELECT CASE WHEN GeometryType(geom) = ''POINT'' '
        'THEN geom ELSE ST_PointOnSurface(geom) END AS p, %s AS category FROM %s WHERE %s) s0) s GROUP BY 2, 3, 4 '
        'ON CONFLICT ON CONSTRAINT tile_cells_pkey DO UPDATE SET n = c.n + EXCLUDED.n, '
        'sum_lon = c.sum_lon + EXCLUDED.sum_lon, sum_lat = c.sum_lat + EXCLUDED.sum_lat',
        tbl, cfg.cells, cfg.cells,
        CASE WHEN cfg.category_column IS NULL THEN '''''' ELSE format('coalesce(%I::text, '''')', cfg.category_column) END,
        tbl, rows_where);
    UPDATE tile_cell_config SET stale = false WHERE layer_table = tbl;
END $$;

CREATE OR REPLACE FUNCTION gis_ioc_rebuild_cells(tbl text) RETURNS void LANGUAGE plpgsql
    SET search_path = public, pg_temp AS $$
DECLARE
    cfg tile_cell_config;
BEGIN
    SELECT * INTO cfg FROM tile_cell_config WHERE layer_table = tbl FOR UPDATE;
    IF FOUND THEN
        DELETE FROM tile_cells WHERE layer_table = tbl;
        PERFORM gis_ioc_add_cells(tbl, cfg, 'true');
    END IF;
END $$;

CREATE FUNCTION gis_ioc_add_cells_of_this_transaction(tbl text) RETURNS void LANGUAGE plpgsql
    SET search_path = public, pg_temp AS $$
DECLARE
    cfg tile_cell_config;
BEGIN
    SELECT * INTO cfg FROM tile_cell_config WHERE layer_table = tbl FOR UPDATE;
    IF FOUND THEN
        PERFORM gis_ioc_add_cells(tbl, cfg, 'xmin = (pg_current_xact_id()::text::bigint % 4294967296)::text::xid');
    END IF;
END $$;
