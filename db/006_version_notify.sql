-- 006: a layer's new version is announced on the channel gis_ioc_versions ('<table> <version>'), so each
-- server process keeps the versions in memory and answers a cached tile without asking the database.
-- NOTIFY is delivered at commit: a process learns of a version when readers can see the data.
CREATE FUNCTION gis_ioc_notify_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('gis_ioc_versions', NEW.table_name || ' ' || NEW.version);
    RETURN NULL;
END $$;

CREATE TRIGGER notify_version AFTER INSERT OR UPDATE ON layer_versions
    FOR EACH ROW EXECUTE FUNCTION gis_ioc_notify_version();
