-- 011: place search. Names are compared folded: lower case, diacritics removed (unaccent: Đ, đ and GADM's
-- Ð become d; no regular expression, which cost 4 µs a row in index rechecks); trigram indexes on the folded names
-- find them with a typo (a short name: one edit, levenshtein). Incidents are searched by title only while active (a partial index: loading years
-- of closed incidents does not maintain it).
CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS fuzzystrmatch;  -- levenshtein: a short name with a typo has too few trigrams

CREATE FUNCTION gis_ioc_fold(t text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    SET search_path = public, pg_temp AS
    $$ SELECT btrim(lower(unaccent('unaccent'::regdictionary, t))) $$;

CREATE INDEX admin_units_name_trgm ON admin_units USING gin (gis_ioc_fold(name) gin_trgm_ops);
CREATE INDEX infrastructure_name_trgm ON infrastructure USING gin (gis_ioc_fold(name) gin_trgm_ops);
-- cameras by their code (the first word of the name: CAM-00012), a prefix in a b-tree
CREATE INDEX cameras_code ON cameras (gis_ioc_fold(split_part(name, ' ', 1)) text_pattern_ops);
CREATE INDEX incidents_active_title_trgm ON incidents USING gin (gis_ioc_fold(title) gin_trgm_ops)
    WHERE status IN ('new', 'verified', 'dispatched', 'in_progress', 'reopened');
