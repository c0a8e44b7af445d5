-- The application role, sign-in throttling, idle sessions, rate-limited denial audits
-- (issue 16, items 3 and 5).
--
-- Two roles: the owner (who runs these migrations and owns every object) and the
-- application role (gateway, worker, CLI at run time). The migrations runner
-- (streams/db/roles.py, after every run) grants the application role what it needs on
-- every table of the schema, and on audit_log only INSERT and SELECT: it may not UPDATE,
-- DELETE or TRUNCATE it, and only the owner can disable its triggers or drop it.

-- TRUNCATE skips row triggers: refuse it with a statement trigger too (the owner would
-- have to disable the trigger first, on purpose).
DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
REVOKE ALL ON audit_log FROM PUBLIC;

-- Sliding idle timeout: a session unused for RTM_SESSION_IDLE_S is over. last_seen is
-- written at most once a minute per session (not on every request).
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS last_seen timestamptz NOT NULL DEFAULT now();
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id, last_seen);

-- Sign-in throttle, shared by every gateway process: one row per account name and per
-- client address that tried to sign in (keyed by a keyed hash: no names or addresses).
CREATE TABLE IF NOT EXISTS sign_in_throttle (
    subject      bytea PRIMARY KEY,        -- HMAC of 'account:<name>' or 'client:<address>'
    attempts     int NOT NULL,             -- attempts in the current window
    window_start timestamptz NOT NULL,
    locked_until timestamptz,
    locks        int NOT NULL DEFAULT 0,   -- locks in a row (each one twice as long)
    refused      int NOT NULL DEFAULT 0,   -- attempts refused during the current lock
    updated_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS sign_in_throttle_updated ON sign_in_throttle (updated_at);

-- A per-installation key for those hashes and for the digest of an unknown username in
-- the audit log (so the log does not hold what someone typed, which may be a password,
-- and its readers cannot test guesses against it).
CREATE TABLE IF NOT EXISTS app_keys (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);
INSERT INTO app_keys (name, value)
VALUES ('sign_in', decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''),
                          'hex'))
ON CONFLICT DO NOTHING;

-- At most one 'denied' audit row per actor, route and target in a window: a script
-- probing patient ids leaves one row per target and minute, with the count of the
-- attempts in between.
CREATE TABLE IF NOT EXISTS audit_denials (
    subject    bytea PRIMARY KEY,          -- sha256 of actor, route and target
    logged_at  timestamptz NOT NULL,       -- when the last row was written
    suppressed int NOT NULL DEFAULT 0,     -- attempts since then without a row
    carried    int NOT NULL DEFAULT 0      -- the count the last row reported
);
CREATE INDEX IF NOT EXISTS audit_denials_logged ON audit_denials (logged_at);
