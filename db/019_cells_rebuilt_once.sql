-- 019: readers that find a layer's tile cells stale rebuild them once. With 10M incidents a rebuild takes ~11 s;
-- every tile request that had found the cells stale used to rebuild them again in turn, each after waiting for
-- the one before. gis_ioc_rebuild_stale_cells waits for the config row's lock, then rebuilds only if the cells
-- are still stale (gis_ioc_rebuild_cells itself still rebuilds whatever the flag: loads and restores use it).
CREATE FUNCTION gis_ioc_rebuild_stale_cells(tbl text) RETURNS void LANGUAGE plpgsql
    SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM 1 FROM tile_cell_config WHERE layer_table = tbl AND stale FOR UPDATE;
    IF FOUND THEN
        PERFORM gis_ioc_rebuild_cells(tbl);
    END IF;
END $$;
