-- 013: incidents may come from another agency's CAP alert (gis_ioc.cap): a source of their own.
ALTER TABLE incidents DROP CONSTRAINT incidents_source_check;
ALTER TABLE incidents ADD CONSTRAINT incidents_source_check
    CHECK (source = ANY (ARRAY['1022', '113', '114', '115', 'app', 'camera', 'operator', 'agency']));
