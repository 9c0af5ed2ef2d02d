-- 024: changes of infrastructure are announced on gis_ioc_changes too (as 004 does for incidents and cameras):
-- a fire station opened or a road closed changes what the wall draws and which station reaches an incident
-- soonest, so the wall redraws its base tiles and reach areas, and an incident's view is made again. A bulk
-- load is one 'reload', as for the other layers.
CREATE TRIGGER notify_change AFTER INSERT OR UPDATE OR DELETE ON infrastructure FOR EACH ROW
    WHEN (current_setting('gis_ioc.bulk', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION gis_ioc_notify_change('infrastructure');
CREATE TRIGGER notify_reload AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON infrastructure FOR EACH STATEMENT
    EXECUTE FUNCTION gis_ioc_notify_reload('infrastructure');
