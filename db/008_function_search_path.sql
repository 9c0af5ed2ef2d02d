-- 008: gis-ioc's functions and triggers name tables and PostGIS functions without a schema; pin their
-- search_path so they work whoever calls them (pg_restore runs with an empty search_path, and a role
-- with another search_path must not change what a trigger writes).
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'public' AND p.proname LIKE 'gis\_ioc\_%'
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = public, pg_temp', f);
    END LOOP;
END $$;
