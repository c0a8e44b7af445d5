-- The scheduler role (issue 18 item 5): the front desk works the intake queue (reads the
-- organisation's waiting intakes, records first contacts) and sees no clinical alerts and
-- no billing (streams/access.py PERMISSIONS).
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_role_check;
ALTER TABLE users ADD CONSTRAINT users_role_check
    CHECK (role IN ('clinician', 'billing', 'admin', 'operator', 'scheduler'));

-- the queue page's live stream: an organisation's intakes changed since a time
CREATE INDEX IF NOT EXISTS intakes_org_updated ON intakes (org_id, updated_at);
