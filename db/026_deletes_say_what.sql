-- 026: a delete is announced with the feature as it was (004 sent its id only). A listener can then tell what
-- went: an incident's view ignores a school deleted far away, as it ignores one added there, where before it
-- had to assume the worst and be made again. The message stays under NOTIFY's limit as before (the id only
-- when the feature would pass it).
CREATE OR REPLACE FUNCTION gis_ioc_notify_change() RETURNS trigger LANGUAGE plpgsql
    SET search_path = public, pg_temp AS $$
DECLARE
    message text;
    changed record;
BEGIN
    IF TG_OP = 'DELETE' THEN
        changed := OLD;
    ELSE
        changed := NEW;
    END IF;
    message := json_build_object('layer', TG_ARGV[0], 'id', changed.id, 'op', lower(TG_OP),
        'feature', json_build_object('type', 'Feature', 'id', changed.id,
            'geometry', ST_AsGeoJSON(changed.geom, 7)::json,
            'properties', to_jsonb(changed) - 'geom' - 'id'))::text;
    IF octet_length(message) > 7900 THEN
        message := json_build_object('layer', TG_ARGV[0], 'id', changed.id, 'op', lower(TG_OP))::text;
    END IF;
    PERFORM pg_notify('gis_ioc_changes', message);
    RETURN NULL;
END $$;
