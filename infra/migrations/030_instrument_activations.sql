-- Licence activations of licence-gated instruments (issue 19 item 2; docs/pathways-and-outcomes.md,
-- Licences): `rtm instruments activate --org O --instrument I --licence-ref REF [--until TS]`
-- appends a row, audited. Append-only: a row is never changed or deleted (a renewal is a new
-- row); outcomes.licences.usable_as_primary reads the rows to answer whether an instrument may
-- be an organisation's pathway primary at an instant.
CREATE TABLE IF NOT EXISTS instrument_activations (
    activation_id  bigserial PRIMARY KEY,
    org_id         text NOT NULL REFERENCES orgs (org_id),
    instrument     text NOT NULL CHECK (instrument ~ '^[a-z0-9_]{1,32}$'),
    licence_ref    text NOT NULL CHECK (length(licence_ref) BETWEEN 1 AND 200),
    activated_at   timestamptz NOT NULL,
    valid_until    timestamptz CHECK (valid_until IS NULL OR valid_until > activated_at),
    activated_by   text NOT NULL
);
CREATE INDEX IF NOT EXISTS instrument_activations_org
    ON instrument_activations (org_id, instrument, activated_at);

CREATE OR REPLACE FUNCTION instrument_activations_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'instrument_activations is append-only';
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS instrument_activations_no_change ON instrument_activations;
CREATE TRIGGER instrument_activations_no_change BEFORE UPDATE OR DELETE ON instrument_activations
    FOR EACH ROW EXECUTE FUNCTION instrument_activations_append_only();
DROP TRIGGER IF EXISTS instrument_activations_no_truncate ON instrument_activations;
CREATE TRIGGER instrument_activations_no_truncate BEFORE TRUNCATE ON instrument_activations
    FOR EACH STATEMENT EXECUTE FUNCTION instrument_activations_append_only();
