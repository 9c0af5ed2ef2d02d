-- 009: loads keep the layer readable. A load no longer drops and rebuilds indexes (that held an ACCESS
-- EXCLUSIVE lock for the whole load); it rebuilds the tile cells inside its own transaction instead of
-- leaving them stale, so readers see the old rows and cells until it commits, then the new ones.
-- The cell functions are pure arithmetic: without a pinned search_path (008), and with each argument
-- used once (asinh(tan φ) = ln(tan φ + sec φ)), PostgreSQL inlines them, which makes a rebuild of 1M
-- points about eight times faster (8.6 s -> 1.1 s). The cells are rebuilt once with the new formula.
ALTER FUNCTION gis_ioc_cell_x(double precision, double precision) RESET search_path;
CREATE OR REPLACE FUNCTION gis_ioc_cell_y(lat double precision, cells double precision) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
    $$ SELECT floor((1 - asinh(tan(radians(lat))) / pi()) / 2 * cells)::integer $$;
UPDATE tile_cell_config SET stale = true;

CREATE OR REPLACE FUNCTION gis_ioc_rebuild_cells(tbl text) RETURNS void LANGUAGE plpgsql
    SET search_path = public, pg_temp AS $$
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
        'SELECT %L, gis_ioc_cell_x(x, %s), gis_ioc_cell_y(y, %s), category, count(*), sum(x), sum(y) '
        'FROM (SELECT ST_X(p) AS x, ST_Y(p) AS y, category FROM (SELECT CASE WHEN GeometryType(geom) = ''POINT'' '
        'THEN geom ELSE ST_PointOnSurface(geom) END AS p, %s AS category FROM %s) s0) s GROUP BY 2, 3, 4',
        tbl, cfg.cells, cfg.cells,
        CASE WHEN cfg.category_column IS NULL THEN '''''' ELSE format('coalesce(%I::text, '''')', cfg.category_column) END,
        tbl);
    UPDATE tile_cell_config SET stale = false WHERE layer_table = tbl;
END $$;

-- A load derives commune_code for a whole file at once (gis_ioc.ingest.derive, the same rule) and says so
-- with gis_ioc.derived; the row trigger then stays out of its way (50 µs a row, 50 s for a million rows).
DROP TRIGGER incident_commune ON incidents;
CREATE TRIGGER incident_commune BEFORE INSERT OR UPDATE OF geom, reported_at ON incidents
    FOR EACH ROW WHEN (NEW.commune_code IS NULL AND current_setting('gis_ioc.derived', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION gis_ioc_incident_commune();
