-- Webhook delivery that one bad endpoint cannot stall (issue 9, part 3).
--
-- Each webhook is an endpoint with its own queue. A delivery is routed to an endpoint when
-- it is queued (in the batch transaction, streams/db/alerts.py: queue_deliveries): the
-- clinician's own webhook in the patient's organisation, else that organisation's
-- clinic-wide '*' one. A webhook added later therefore receives only the changes queued
-- after it exists, never the history (adding a '*' webhook once flooded it with 1,340 old
-- changes). The worker keeps at most one attempt in flight per endpoint, takes each
-- endpoint's most severe, oldest due delivery first, and backs off per endpoint, so a
-- failing receiver only ever waits on itself.

-- Endpoints: per organisation, a surrogate id that deliveries point at (a webhook removed
-- and added again is a new endpoint: it does not inherit the old one's queue), and the
-- endpoint's failure streak for the backoff.
ALTER TABLE clinician_webhooks ADD COLUMN IF NOT EXISTS org_id text NOT NULL DEFAULT 'default';
ALTER TABLE clinician_webhooks ADD COLUMN IF NOT EXISTS webhook_id bigserial;
ALTER TABLE clinician_webhooks ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();
-- consecutive failed attempts; 0 = healthy
ALTER TABLE clinician_webhooks ADD COLUMN IF NOT EXISTS failures integer NOT NULL DEFAULT 0;
-- after a failure: when the endpoint may be tried again, by severity rank of the delivery
-- at the head of its queue (index rank + 1), so a critical alert waits at most its cap
-- even when the endpoint backs off further for low-severity ones
ALTER TABLE clinician_webhooks ADD COLUMN IF NOT EXISTS retry_at timestamptz[];
ALTER TABLE clinician_webhooks DROP CONSTRAINT IF EXISTS clinician_webhooks_pkey;
ALTER TABLE clinician_webhooks ADD PRIMARY KEY (org_id, clinician_id);
CREATE UNIQUE INDEX IF NOT EXISTS clinician_webhooks_id ON clinician_webhooks (webhook_id);
ALTER TABLE clinician_webhooks ADD CONSTRAINT clinician_webhooks_org
    FOREIGN KEY (org_id) REFERENCES orgs;
-- The CLI validates URLs with a clear message; this is the backstop for other writers.
-- NOT VALID: rows written before the check are left as they are.
ALTER TABLE clinician_webhooks ADD CONSTRAINT clinician_webhooks_url
    CHECK (url ~* '^https?://[^/?#[:space:]]+([/?#]|$)') NOT VALID;

-- Deliveries: organisation, endpoint, severity rank (0 critical .. 3 low), queue order,
-- and when the row may next be attempted (for status 'sending': until when the claim of a
-- worker holds; a claim of a worker that died expires and the row is taken again).
ALTER TABLE alert_deliveries ADD COLUMN IF NOT EXISTS org_id text NOT NULL DEFAULT 'default';
ALTER TABLE alert_deliveries ADD COLUMN IF NOT EXISTS webhook_id bigint;
ALTER TABLE alert_deliveries ADD COLUMN IF NOT EXISTS severity_rank smallint NOT NULL DEFAULT 3;
ALTER TABLE alert_deliveries ADD COLUMN IF NOT EXISTS seq bigserial;
ALTER TABLE alert_deliveries ADD COLUMN IF NOT EXISTS queued_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE alert_deliveries ADD COLUMN IF NOT EXISTS next_attempt_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE alert_deliveries ADD COLUMN IF NOT EXISTS delivered_at timestamptz;

UPDATE alert_deliveries SET severity_rank = CASE payload->'alert'->>'severity'
    WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END;
UPDATE alert_deliveries d SET org_id = po.org_id
FROM patient_orgs po WHERE po.patient_id = d.payload->'alert'->>'patient_id';
-- Undelivered rows go on to the webhook that would have taken them; 'no_webhook' rows stay
-- as they are: a webhook added from now on starts with an empty queue.
UPDATE alert_deliveries d SET webhook_id = (
    SELECT w.webhook_id FROM clinician_webhooks w
    WHERE w.org_id = d.org_id AND w.clinician_id IN (d.clinician_id, '*')
    ORDER BY w.clinician_id = '*' LIMIT 1)
WHERE d.status IN ('pending', 'failed', 'sending');
UPDATE alert_deliveries SET status = 'no_webhook', last_error = 'no webhook configured'
WHERE status IN ('pending', 'failed', 'sending') AND webhook_id IS NULL;
UPDATE alert_deliveries SET status = 'pending' WHERE status = 'sending';

-- The queue: only undelivered rows are indexed (delivered ones are the bulk and are never
-- claimed again).
CREATE INDEX IF NOT EXISTS alert_deliveries_queue
    ON alert_deliveries (webhook_id, severity_rank, seq)
    WHERE status IN ('pending', 'failed', 'sending');
DROP INDEX IF EXISTS alert_deliveries_failed;
