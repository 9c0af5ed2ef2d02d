-- 010: an append adds its own rows to the tile cells instead of rebuilding them from the whole layer.
-- A load of 1,000 incidents into a layer of a million rebuilt all its cells (2 s) inside the load; the rows a
-- transaction inserted are those whose xmin is its own transaction id, and their cells are added in one
-- statement (a scan of xmin, ~0.1 s at a million rows). Cells that are stale for another reason are rebuilt.
CREATE FUNCTION gis_ioc_add_cells_of_this_transaction(tbl text) RETURNS void LANGUAGE plpgsql
    SET search_path = public, pg_temp AS $$
DECLARE
    cfg tile_cell_config;
BEGIN
    SELECT * INTO cfg FROM tile_cell_config WHERE layer_table = tbl FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    EXECUTE format(
        'INSERT INTO tile_cells AS c (layer_table, cx, cy, category, n, sum_lon, sum_lat) '
        'SELECT %L, gis_ioc_cell_x(x, %s), gis_ioc_cell_y(y, %s), category, count(*), sum(x), sum(y) '
        'FROM (SELECT ST_X(p) AS x, ST_Y(p) AS y, category FROM (SELECT CASE WHEN GeometryType(geom) = ''POINT'' '
        'THEN geom ELSE ST_PointOnSurface(geom) END AS p, %s AS category FROM %s '
        'WHERE xmin = (pg_current_xact_id()::text::bigint %% 4294967296)::text::xid) s0) s GROUP BY 2, 3, 4 '
        'ON CONFLICT ON CONSTRAINT tile_cells_pkey DO UPDATE SET n = c.n + EXCLUDED.n, '
        'sum_lon = c.sum_lon + EXCLUDED.sum_lon, sum_lat = c.sum_lat + EXCLUDED.sum_lat',
        tbl, cfg.cells, cfg.cells,
        CASE WHEN cfg.category_column IS NULL THEN '''''' ELSE format('coalesce(%I::text, '''')', cfg.category_column) END,
        tbl);
    UPDATE tile_cell_config SET stale = false WHERE layer_table = tbl;
END $$;
