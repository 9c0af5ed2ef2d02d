-- 016: an incident made from another agency's CAP alert remembers the messages that made and changed it
-- ("sender,identifier", separated by spaces), so a later Update or Cancel that references any of them changes that
-- incident instead of adding another (gis_ioc.cap.linked). A GIN index finds the incident by any of them.
ALTER TABLE incidents ADD COLUMN cap_messages text;
CREATE INDEX incidents_cap_messages ON incidents USING gin ((string_to_array(cap_messages, ' ')))
    WHERE cap_messages IS NOT NULL;
