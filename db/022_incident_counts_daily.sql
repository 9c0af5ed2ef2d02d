-- 022: the counts of migration 018 by day too (UTC days, each the sum of its hours). At ten million incidents
-- the hourly counts hold 3.6M rows (~15,000 a day); the last seven days' statistics read 219,000 of them
-- (320 ms; 50 ms so, with indexes that cover what it reads). A window now takes its whole days from
-- incident_counts_daily, the hours at its ends from incident_counts and only its ragged ends from the rows.
-- Every function that keeps the hourly counts keeps the daily ones in the same statement.

CREATE TABLE incident_counts_daily (
    unit_code  text NOT NULL,
    type       text NOT NULL,
    severity   text NOT NULL,
    status     text NOT NULL,
    day        timestamptz NOT NULL,           -- midnight UTC
    n          bigint NOT NULL,
    PRIMARY KEY (unit_code, type, severity, status, day)
);
-- covering: a window's days and hours are read from the index alone (no heap visit per counter)
CREATE INDEX incident_counts_daily_day_idx ON incident_counts_daily (day)
    INCLUDE (unit_code, type, severity, status, n);
DROP INDEX incident_counts_hour_idx;
CREATE INDEX incident_counts_hour_idx ON incident_counts (hour) INCLUDE (unit_code, type, severity, status, n);

-- The one statement that adds a delta (unit_code, type, severity, status, hour, n) to the hourly, daily and
-- total counts; `delta` is the text of a SELECT returning those columns. Rows go in a fixed order (two writers
-- take the counters' locks alike). A trigger EXECUTEs it itself: its transition tables are visible only there.
CREATE FUNCTION gis_ioc_counts_statement(delta text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
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
        '    ON CONFLICT (unit_code, type, severity, status, day) DO UPDATE SET n = c.n + EXCLUDED.n) '
        'INSERT INTO incident_totals AS c (unit_code, type, severity, status, n) '
        'SELECT unit_code, type, severity, status, sum(n) FROM delta GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0 '
        'ORDER BY 1, 2, 3, 4 '
        'ON CONFLICT (unit_code, type, severity, status) DO UPDATE SET n = c.n + EXCLUDED.n'
$$;

-- The statement triggers of 018, daily counts too.
CREATE OR REPLACE FUNCTION gis_ioc_count_incidents() RETURNS trigger LANGUAGE plpgsql
SET search_path = public, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE gis_ioc_counts_statement(
            'SELECT gis_ioc_count_unit(geom) AS unit_code, type, severity, status, '
            'date_trunc(''hour'', reported_at, ''UTC'') AS hour, count(*) AS n '
            'FROM new_rows WHERE merged_into IS NULL GROUP BY 1, 2, 3, 4, 5');
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE gis_ioc_counts_statement(
            'SELECT gis_ioc_count_unit(geom) AS unit_code, type, severity, status, '
            'date_trunc(''hour'', reported_at, ''UTC'') AS hour, -count(*) AS n '
            'FROM old_rows WHERE merged_into IS NULL GROUP BY 1, 2, 3, 4, 5');
    ELSE
        EXECUTE gis_ioc_counts_statement(
            'SELECT gis_ioc_count_unit(geom) AS unit_code, type, severity, status, '
            'date_trunc(''hour'', reported_at, ''UTC'') AS hour, sum(n) AS n FROM ('
            '    SELECT geom, type, severity, status, reported_at, -1 AS n FROM old_rows WHERE merged_into IS NULL '
            '    UNION ALL '
            '    SELECT geom, type, severity, status, reported_at, 1 FROM new_rows WHERE merged_into IS NULL) r '
            'GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0');
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION gis_ioc_count_rows(tbl regclass, sign integer) RETURNS void LANGUAGE plpgsql
    SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(72010002);
    EXECUTE gis_ioc_counts_statement(format(
        'SELECT gis_ioc_count_unit(geom) AS unit_code, type, severity, status, '
        'date_trunc(''hour'', reported_at, ''UTC'') AS hour, %s * count(*) AS n '
        'FROM %s WHERE merged_into IS NULL GROUP BY 1, 2, 3, 4, 5', sign, tbl));
END $$;

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
    DELETE FROM incident_totals;
    RETURN NULL;
END $$;

INSERT INTO incident_counts_daily (unit_code, type, severity, status, day, n)
SELECT unit_code, type, severity, status, date_trunc('day', hour, 'UTC'), sum(n) FROM incident_counts
GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0;
