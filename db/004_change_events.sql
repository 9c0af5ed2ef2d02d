-- 004: every change of incidents and cameras is announced on the channel gis_ioc_changes, so each server
-- process can stream it to the wall. Bulk loads set gis_ioc.bulk = 'on' for their transaction and announce
-- one 'reload' per table instead of a message per row.

-- The message carries the new row as a GeoJSON Feature (the state at the change, not when it is read),
-- unless that would pass NOTIFY's 8000-byte limit: then listeners fetch the feature themselves.
CREATE FUNCTION gis_ioc_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    message text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        message := json_build_object('layer', TG_ARGV[0], 'id', OLD.id, 'op', 'delete')::text;
    ELSE
        message := json_build_object('layer', TG_ARGV[0], 'id', NEW.id, 'op', lower(TG_OP),
            'feature', json_build_object('type', 'Feature', 'id', NEW.id,
                'geometry', ST_AsGeoJSON(NEW.geom, 7)::json,
                'properties', to_jsonb(NEW) - 'geom' - 'id'))::text;
        IF octet_length(message) > 7900 THEN
            message := json_build_object('layer', TG_ARGV[0], 'id', NEW.id, 'op', lower(TG_OP))::text;
        END IF;
    END IF;
    PERFORM pg_notify('gis_ioc_changes', message);
    RETURN NULL;
END $$;

CREATE FUNCTION gis_ioc_notify_reload() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('gis_ioc.bulk', true) = 'on' OR TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('gis_ioc_changes', json_build_object('layer', TG_ARGV[0], 'op', 'reload')::text);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER notify_change AFTER INSERT OR UPDATE OR DELETE ON incidents FOR EACH ROW
    WHEN (current_setting('gis_ioc.bulk', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION gis_ioc_notify_change('incidents');
CREATE TRIGGER notify_change AFTER INSERT OR UPDATE OR DELETE ON cameras FOR EACH ROW
    WHEN (current_setting('gis_ioc.bulk', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION gis_ioc_notify_change('cameras');
CREATE TRIGGER notify_reload AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON incidents FOR EACH STATEMENT
    EXECUTE FUNCTION gis_ioc_notify_reload('incidents');
CREATE TRIGGER notify_reload AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON cameras FOR EACH STATEMENT
    EXECUTE FUNCTION gis_ioc_notify_reload('cameras');
