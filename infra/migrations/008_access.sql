-- Identity, tenancy and audit (issue 9).
--
-- Every key and user belongs to one organisation. The gateway stamps the key's
-- organisation on each event it accepts (events.org_id and the payload's org_id); the
-- worker records which organisation a patient belongs to (patient_orgs, first come) and
-- refuses an event for a patient of another organisation. Alerts and exports carry
-- org_id; the billing ledger is scoped through patient_orgs.

CREATE TABLE IF NOT EXISTS orgs (
    org_id     text PRIMARY KEY,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Events written before tenancy, or straight to Kafka without an org_id, belong here.
INSERT INTO orgs (org_id, name) VALUES ('default', 'Default organisation')
ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS users (
    user_id       bigserial PRIMARY KEY,
    org_id        text NOT NULL REFERENCES orgs,
    username      text NOT NULL UNIQUE,
    role          text NOT NULL CHECK (role IN ('clinician', 'billing', 'admin', 'operator')),
    -- the clinician id episodes name (clinician role): what the clinician may see
    clinician_id  text,
    password_hash text NOT NULL,            -- argon2id
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS sessions (
    token_hash bytea PRIMARY KEY,           -- sha256 of the cookie value (256 random bits)
    user_id    bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

-- Machine keys: "rtm_<key_id>_<secret>"; only a salted hash of the secret is stored.
CREATE TABLE IF NOT EXISTS api_keys (
    key_id     text PRIMARY KEY,
    org_id     text NOT NULL REFERENCES orgs,
    scopes     text[] NOT NULL CHECK (scopes <@ ARRAY['producer', 'integration', 'reader']
                                      AND cardinality(scopes) > 0),
    label      text NOT NULL DEFAULT '',
    salt       bytea NOT NULL,
    key_hash   bytea NOT NULL,              -- sha256(salt || secret)
    disabled   boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Care teams: a clinician sees the patients of episodes where they, or a member of a
-- team they are on, is the episode's clinician.
CREATE TABLE IF NOT EXISTS care_team_members (
    org_id       text NOT NULL REFERENCES orgs,
    team         text NOT NULL,
    clinician_id text NOT NULL,
    PRIMARY KEY (org_id, team, clinician_id)
);

CREATE TABLE IF NOT EXISTS patient_orgs (
    patient_id text PRIMARY KEY,
    org_id     text NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS patient_orgs_org ON patient_orgs (org_id);
-- Patients stored before tenancy belong to the default organisation.
INSERT INTO patient_orgs (patient_id, org_id)
SELECT DISTINCT patient_id, 'default' FROM events ON CONFLICT DO NOTHING;

-- Which patients a clinician id treats (episode.started names the clinician).
CREATE TABLE IF NOT EXISTS patient_clinicians (
    patient_id   text NOT NULL,
    clinician_id text NOT NULL,
    PRIMARY KEY (clinician_id, patient_id)
);
INSERT INTO patient_clinicians (patient_id, clinician_id)
SELECT DISTINCT patient_id, payload->>'clinician_id' FROM billing_episode_events
WHERE type = 'episode.started' ON CONFLICT DO NOTHING;

ALTER TABLE events ADD COLUMN IF NOT EXISTS org_id text NOT NULL DEFAULT 'default';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS org_id text NOT NULL DEFAULT 'default';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS ack_note text;
CREATE INDEX IF NOT EXISTS alerts_org_status ON alerts (org_id, status_rank, severity);
ALTER TABLE billing_exports ADD COLUMN IF NOT EXISTS org_id text NOT NULL DEFAULT 'default';

-- Append-only: every read of patient data, acknowledgement, export and access change.
CREATE TABLE IF NOT EXISTS audit_log (
    audit_id    bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    org_id      text NOT NULL,
    actor       text NOT NULL,              -- user:<username> | key:<key_id> | cli:<os user>
    role        text NOT NULL,              -- the user's role or the key's scopes
    action      text NOT NULL,              -- e.g. read, acknowledge, export, access.key_add
    resource    text NOT NULL,              -- route or command
    patient_ids text[] NOT NULL DEFAULT '{}',
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_log_org_at ON audit_log (org_id, at DESC);
CREATE INDEX IF NOT EXISTS audit_log_patients ON audit_log USING gin (patient_ids);

CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS audit_log_no_change ON audit_log;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
