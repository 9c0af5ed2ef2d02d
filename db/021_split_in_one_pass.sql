-- 021: the default partition of a table with no triggers yet (a load's shadow table) is split in one pass: the
-- months' partitions are attached empty and the rows routed through the parent (020 copied them month by month,
-- one scan of the default per month: a load of a million incidents into an empty layer spent 6 s there). A
-- table with triggers (the live layer, whose default holds strays only) is still split month by month, so no
-- row trigger runs and nothing is counted twice.
CREATE OR REPLACE FUNCTION gis_ioc_split_default(parent regclass, col text, tz text) RETURNS integer
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
    in_one_pass boolean := NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = parent AND NOT tgisinternal);
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
        IF in_one_pass THEN
            EXECUTE format('CREATE TABLE %s PARTITION OF %s FOR VALUES FROM (%L) TO (%L)', part, parent,
                           month AT TIME ZONE tz, (month + interval '1 month') AT TIME ZONE tz);
        ELSE
            EXECUTE format('CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part, parent);
            EXECUTE format('INSERT INTO %s SELECT * FROM %s WHERE %I >= %L AND %I < %L', part, dflt,
                           col, month AT TIME ZONE tz, col, (month + interval '1 month') AT TIME ZONE tz);
            EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)', parent, part,
                           month AT TIME ZONE tz, (month + interval '1 month') AT TIME ZONE tz);
        END IF;
        months := months + 1;
    END LOOP;
    IF in_one_pass THEN
        EXECUTE format('INSERT INTO %s OVERRIDING SYSTEM VALUE SELECT * FROM %s', parent, dflt);
    END IF;
    EXECUTE format('DROP TABLE %s', dflt);
    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s DEFAULT', sch, dflt_name, parent);
    RETURN months;
END $$;
