-- 025: the counts of migrations 018 and 022 per commune alone too, by hour and by day. Statistics by commune
-- without a breakdown (the wall's 24 hours, "the last seven days") summed every (type, severity, status) counter
-- of the window: ~90,000 of them for seven days at ten million incidents (31 ms), where the communes' own
-- counters are ~300 (7 days x 39 communes, and the hours at the ends). Kept in the same statement as the others.

CREATE TABLE incident_unit_counts (
    period     text NOT NULL CHECK (period IN ('hour', 'day')),
    at         timestamptz NOT NULL,           -- the hour, or the day's midnight (UTC)
    unit_code  text NOT NULL,
    n          bigint NOT NULL,
    PRIMARY KEY (period, at, unit_code) INCLUDE (n)  -- a window's counters are read from the index alone
);

CREATE OR REPLACE FUNCTION gis_ioc_counts_statement(delta text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT
        'WITH delta AS (' || delta || '), '
        'hourly AS ('
        '    INSERT INTO incident_counts AS c (unit_code, type, severity, status, hour, n) '
        '    SELECT unit_code, type, severity, status, hour, n FROM delta ORDER BY 1, 2, 3, 4, 5 '
        '    ON CONFLICT (unit_code, type, severity, status, hour) DO UPDATE SET n = c.n + EXCLUDED.n), '
        'daily AS ('
        '    INSERT INTO incident_counts_daily AS c (unit_code, type, severity, status, day, n) '
        '    SELECT unit_code, type, severity, status, date_trunc(''day'', hour, ''UTC''), sum(n) FROM delta '
        '    GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0 ORDER BY 1, 2, 3, 4, 5 '
        '    ON CONFLICT (unit_code, type, severity, status, day) DO UPDATE SET n = c.n + EXCLUDED.n), '
        'units AS ('
        '    INSERT INTO incident_unit_counts AS c (period, at, unit_code, n) '
        '    SELECT * FROM ('
        '        SELECT ''hour'' AS period, hour AS at, unit_code, sum(n) AS n FROM delta GROUP BY 2, 3 '
        '        UNION ALL '
        '        SELECT ''day'', date_trunc(''day'', hour, ''UTC''), unit_code, sum(n) FROM delta GROUP BY 2, 3) u '
        '    WHERE n <> 0 ORDER BY 1, 2, 3 '
        '    ON CONFLICT (period, at, unit_code) DO UPDATE SET n = c.n + EXCLUDED.n) '
        'INSERT INTO incident_totals AS c (unit_code, type, severity, status, n) '
        'SELECT unit_code, type, severity, status, sum(n) FROM delta GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0 '
        'ORDER BY 1, 2, 3, 4 '
        'ON CONFLICT (unit_code, type, severity, status) DO UPDATE SET n = c.n + EXCLUDED.n'
$$;

CREATE OR REPLACE FUNCTION gis_ioc_recount_incidents(on_date date DEFAULT current_date) RETURNS void
    LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
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
    DELETE FROM incident_counts_daily;
    INSERT INTO incident_counts_daily (unit_code, type, severity, status, day, n)
    SELECT unit_code, type, severity, status, date_trunc('day', hour, 'UTC'), sum(n) FROM incident_counts
    GROUP BY 1, 2, 3, 4, 5;
    DELETE FROM incident_unit_counts;
    INSERT INTO incident_unit_counts (period, at, unit_code, n)
    SELECT 'hour', hour, unit_code, sum(n) FROM incident_counts GROUP BY 2, 3 UNION ALL
    SELECT 'day', day, unit_code, sum(n) FROM incident_counts_daily GROUP BY 2, 3;
    DELETE FROM incident_totals;
    INSERT INTO incident_totals (unit_code, type, severity, status, n)
    SELECT unit_code, type, severity, status, sum(n) FROM incident_counts GROUP BY 1, 2, 3, 4;
    UPDATE incident_counts_state SET units_key = gis_ioc_units_key(on_date), units_on = on_date, counted_at = now();
END $$;

CREATE OR REPLACE FUNCTION gis_ioc_recount_on_truncate() RETURNS trigger LANGUAGE plpgsql
SET search_path = public, pg_temp AS $$
BEGIN
    DELETE FROM incident_counts;
    DELETE FROM incident_counts_daily;
    DELETE FROM incident_unit_counts;
    DELETE FROM incident_totals;
    RETURN NULL;
END $$;

INSERT INTO incident_unit_counts (period, at, unit_code, n)
SELECT 'hour', hour, unit_code, sum(n) FROM incident_counts GROUP BY 2, 3 HAVING sum(n) <> 0 UNION ALL
SELECT 'day', day, unit_code, sum(n) FROM incident_counts_daily GROUP BY 2, 3 HAVING sum(n) <> 0;
