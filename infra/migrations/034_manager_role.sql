-- The manager role (issue 19 item 5): a clinic manager reads the organisation's outcome
-- report (by pathway version, clinician, body region), exports it, and replays a draft
-- pathway version over past episodes (the pathway-diff page). No patient pages, no alerts,
-- no billing (streams/access.py PERMISSIONS).
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_role_check;
ALTER TABLE users ADD CONSTRAINT users_role_check
    CHECK (role IN ('clinician', 'billing', 'admin', 'operator', 'scheduler', 'manager'));
