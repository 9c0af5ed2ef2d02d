-- 018: counts of incidents kept by the database, so statistics and KPIs need not read every row.
-- Each event (an incident not merged into another) counts once, in the commune of today's units that holds it
-- (its point on surface; on a shared boundary the smallest code, as gis_ioc.analysis.stats places it), per type,
-- severity, status and hour of report (UTC). incident_totals is the same without the hour. Statement triggers
-- over the transition tables keep both: a load of a million rows adds one grouped upsert per statement, an API
-- write one row. A load swapped in through a shadow table (gis_ioc.ingest.shadow) and any change to the
-- administrative units count again (gis_ioc_recount_incidents). incident_counts_state.units_key says for which
-- set of communes the counts were made; statistics read them only when it is the set in force on their date.

CREATE TABLE incident_count_pieces (           -- today's communes cut into small pieces: cheap point-in-polygon
    code  text NOT NULL,
    geom  geometry(Polygon, 4326) NOT NULL
);
CREATE INDEX incident_count_pieces_geom_idx ON incident_count_pieces USING gist (geom);

CREATE TABLE incident_counts (
    unit_code  text NOT NULL,                  -- '' outside every commune
    type       text NOT NULL,
    severity   text NOT NULL,
    status     text NOT NULL,
    hour       timestamptz NOT NULL,
    n          bigint NOT NULL,
    PRIMARY KEY (unit_code, type, severity, status, hour)
);
CREATE INDEX incident_counts_hour_idx ON incident_counts (hour);

CREATE TABLE incident_totals (
    unit_code  text NOT NULL,
    type       text NOT NULL,
    severity   text NOT NULL,
    status     text NOT NULL,
    n          bigint NOT NULL,
    PRIMARY KEY (unit_code, type, severity, status)
);

CREATE TABLE incident_counts_state (
    one         boolean PRIMARY KEY DEFAULT true CHECK (one),
    units_key   text,                          -- gis_ioc_units_key of the communes counted in
    units_on    date,
    counted_at  timestamptz
);
INSERT INTO incident_counts_state DEFAULT VALUES;

-- Which communes are in force on a date, as one short text (their codes and versions).
CREATE FUNCTION gis_ioc_units_key(on_date date) RETURNS text LANGUAGE sql STABLE
SET search_path = public, pg_temp AS $$
    SELECT md5(coalesce(string_agg(code || '@' || valid_from, ',' ORDER BY code, valid_from), ''))
    FROM admin_units WHERE level = 'commune' AND valid_from <= on_date AND (valid_to IS NULL OR valid_to > on_date)
$$;

-- The commune piece holding a geometry's point on surface (smallest code first); '' when none does.
CREATE FUNCTION gis_ioc_count_unit(g geometry) RETURNS text LANGUAGE sql STABLE
SET search_path = public, pg_temp AS $$
    SELECT coalesce((SELECT p.code FROM incident_count_pieces p
                     WHERE p.geom && g AND ST_Intersects(p.geom, ST_PointOnSurface(g)) ORDER BY p.code LIMIT 1), '')
$$;

-- One statement per change (data-modifying WITH), rows in a fixed order so that two writers take the counters'
-- locks in the same order; an update that moves nothing counted (a title) sums to zero and writes nothing.
CREATE FUNCTION gis_ioc_count_incidents() RETURNS trigger LANGUAGE plpgsql
SET search_path = public, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        WITH delta AS (
            SELECT gis_ioc_count_unit(geom) AS unit_code, type, severity, status,
                   date_trunc('hour', reported_at, 'UTC') AS hour, count(*) AS n
            FROM new_rows WHERE merged_into IS NULL GROUP BY 1, 2, 3, 4, 5),
        hourly AS (
            INSERT INTO incident_counts AS c (unit_code, type, severity, status, hour, n)
            SELECT * FROM delta ORDER BY 1, 2, 3, 4, 5
            ON CONFLICT (unit_code, type, severity, status, hour) DO UPDATE SET n = c.n + EXCLUDED.n)
        INSERT INTO incident_totals AS c (unit_code, type, severity, status, n)
        SELECT unit_code, type, severity, status, sum(n) FROM delta GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT (unit_code, type, severity, status) DO UPDATE SET n = c.n + EXCLUDED.n;
    ELSIF TG_OP = 'DELETE' THEN
        WITH delta AS (
            SELECT gis_ioc_count_unit(geom) AS unit_code, type, severity, status,
                   date_trunc('hour', reported_at, 'UTC') AS hour, -count(*) AS n
            FROM old_rows WHERE merged_into IS NULL GROUP BY 1, 2, 3, 4, 5),
        hourly AS (
            INSERT INTO incident_counts AS c (unit_code, type, severity, status, hour, n)
            SELECT * FROM delta ORDER BY 1, 2, 3, 4, 5
            ON CONFLICT (unit_code, type, severity, status, hour) DO UPDATE SET n = c.n + EXCLUDED.n)
        INSERT INTO incident_totals AS c (unit_code, type, severity, status, n)
        SELECT unit_code, type, severity, status, sum(n) FROM delta GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT (unit_code, type, severity, status) DO UPDATE SET n = c.n + EXCLUDED.n;
    ELSE
        WITH rows AS (
            SELECT geom, type, severity, status, reported_at, -1 AS n FROM old_rows WHERE merged_into IS NULL
            UNION ALL
            SELECT geom, type, severity, status, reported_at, 1 FROM new_rows WHERE merged_into IS NULL),
        delta AS (
            SELECT gis_ioc_count_unit(geom) AS unit_code, type, severity, status,
                   date_trunc('hour', reported_at, 'UTC') AS hour, sum(n) AS n
            FROM rows GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0),
        hourly AS (
            INSERT INTO incident_counts AS c (unit_code, type, severity, status, hour, n)
            SELECT * FROM delta ORDER BY 1, 2, 3, 4, 5
            ON CONFLICT (unit_code, type, severity, status, hour) DO UPDATE SET n = c.n + EXCLUDED.n)
        INSERT INTO incident_totals AS c (unit_code, type, severity, status, n)
        SELECT unit_code, type, severity, status, sum(n) FROM delta GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0
        ORDER BY 1, 2, 3, 4
        ON CONFLICT (unit_code, type, severity, status) DO UPDATE SET n = c.n + EXCLUDED.n;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER count_incidents_insert AFTER INSERT ON incidents REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION gis_ioc_count_incidents();
CREATE TRIGGER count_incidents_update AFTER UPDATE ON incidents REFERENCING OLD TABLE AS old_rows
    NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION gis_ioc_count_incidents();
CREATE TRIGGER count_incidents_delete AFTER DELETE ON incidents REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION gis_ioc_count_incidents();

-- Count everything again: today's communes (or those of on_date), every event. One at a time.
CREATE FUNCTION gis_ioc_recount_incidents(on_date date DEFAULT current_date) RETURNS void LANGUAGE plpgsql
SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(72010002);
    DELETE FROM incident_count_pieces;
    INSERT INTO incident_count_pieces (code, geom)
    SELECT code, ST_Subdivide(geom, 32) FROM admin_units
    WHERE level = 'commune' AND valid_from <= on_date AND (valid_to IS NULL OR valid_to > on_date);
    ANALYZE incident_count_pieces;
    DELETE FROM incident_counts;
    INSERT INTO incident_counts (unit_code, type, severity, status, hour, n)
    SELECT gis_ioc_count_unit(geom), type, severity, status, date_trunc('hour', reported_at, 'UTC'), count(*)
    FROM incidents WHERE merged_into IS NULL GROUP BY 1, 2, 3, 4, 5;
    DELETE FROM incident_totals;
    INSERT INTO incident_totals (unit_code, type, severity, status, n)
    SELECT unit_code, type, severity, status, sum(n) FROM incident_counts GROUP BY 1, 2, 3, 4;
    UPDATE incident_counts_state SET units_key = gis_ioc_units_key(on_date), units_on = on_date, counted_at = now();
END $$;

CREATE FUNCTION gis_ioc_recount_on_truncate() RETURNS trigger LANGUAGE plpgsql
SET search_path = public, pg_temp AS $$
BEGIN
    DELETE FROM incident_counts;
    DELETE FROM incident_totals;
    RETURN NULL;
END $$;
CREATE TRIGGER count_incidents_truncate AFTER TRUNCATE ON incidents
    FOR EACH STATEMENT EXECUTE FUNCTION gis_ioc_recount_on_truncate();

-- New or changed administrative units: the communes counts are placed in may have moved.
CREATE FUNCTION gis_ioc_recount_after_units() RETURNS trigger LANGUAGE plpgsql
SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM gis_ioc_recount_incidents(current_date);
    RETURN NULL;
END $$;
CREATE TRIGGER recount_after_units AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON admin_units
    FOR EACH STATEMENT EXECUTE FUNCTION gis_ioc_recount_after_units();

SELECT gis_ioc_recount_incidents(current_date);
