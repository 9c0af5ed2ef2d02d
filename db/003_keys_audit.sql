-- 003: API keys (stored hashed) and the audit trail of every write.

CREATE TABLE api_keys (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    role          text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    key_hash      text NOT NULL UNIQUE,
    key_prefix    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
COMMENT ON COLUMN api_keys.key_hash IS 'SHA-256 of the key; keys are 256-bit random tokens, shown once';

CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    key_name    text,
    role        text,
    layer_id    text NOT NULL,
    feature_id  text,
    operation   text NOT NULL CHECK (operation IN ('create', 'replace', 'update', 'delete', 'import', 'create_layer')),
    before      jsonb,
    after       jsonb
);
CREATE INDEX audit_log_feature_idx ON audit_log (layer_id, feature_id);
CREATE INDEX audit_log_at_idx ON audit_log (at);
