-- Patient ids scoped by organisation (issue 16 item 4).
--
-- A patient is (org_id, patient_id): the same patient_id posted by two organisations is two
-- patients, each with its own events, alert state, alerts, ledger, rollups and claims. So
-- every patient-keyed table gets the organisation in its key, and event ids are unique per
-- organisation (another organisation reusing an event_id is a new event, not a duplicate).
-- There is no first-come claim any more: patient_orgs is the set of known patients.
--
-- Existing rows are migrated in place. Until now a patient belonged to exactly one
-- organisation (patient_orgs, first come; events of another organisation were refused), and
-- events.org_id, alerts.org_id and patient_rollups.org_id were already set from it, so each
-- new org_id column is filled from patient_orgs (a row of no known patient: 'default').
-- Written so that running it again changes nothing (guards on NULL / IF [NOT] EXISTS).

-- Each fill below joins patient_orgs on patient_id (still one row per patient_id: its key
-- changes at the end) and touches only rows whose org_id is still NULL.

-- Which patients a clinician id treats, per organisation.
ALTER TABLE patient_clinicians ADD COLUMN IF NOT EXISTS org_id text;
UPDATE patient_clinicians t SET org_id = po.org_id FROM patient_orgs po
WHERE t.org_id IS NULL AND po.patient_id = t.patient_id;
UPDATE patient_clinicians SET org_id = 'default' WHERE org_id IS NULL;
ALTER TABLE patient_clinicians ALTER COLUMN org_id SET NOT NULL;
ALTER TABLE patient_clinicians DROP CONSTRAINT IF EXISTS patient_clinicians_pkey;
ALTER TABLE patient_clinicians ADD PRIMARY KEY (org_id, clinician_id, patient_id);

-- Idempotency per organisation: (org_id, event_id).
ALTER TABLE event_ids ADD COLUMN IF NOT EXISTS org_id text;
UPDATE event_ids i SET org_id = e.org_id FROM events e
WHERE i.org_id IS NULL AND e.event_id = i.event_id AND e.occurred_at = i.occurred_at;
UPDATE event_ids SET org_id = 'default' WHERE org_id IS NULL;
ALTER TABLE event_ids ALTER COLUMN org_id SET NOT NULL;
ALTER TABLE event_ids DROP CONSTRAINT IF EXISTS event_ids_pkey;
ALTER TABLE event_ids ADD PRIMARY KEY (org_id, event_id);

-- Events (hypertable: a unique key must hold the time column).
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_event_id_occurred_at_key;
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_org_event_time_key;
ALTER TABLE events ADD CONSTRAINT events_org_event_time_key UNIQUE (org_id, event_id, occurred_at);
DROP INDEX IF EXISTS events_patient_time;
CREATE INDEX IF NOT EXISTS events_org_patient_time ON events (org_id, patient_id, occurred_at DESC);
-- A payload names its organisation (the gateway's stamp; an event written straight to Kafka
-- without one took its patient's): read back, it is keyed by the stored organisation.
UPDATE events SET payload = payload || jsonb_build_object('org_id', org_id)
WHERE org_id <> coalesce(payload->>'org_id', 'default');

-- Alerts: ids stay (they are the webhooks' idempotency keys); the snapshots name the
-- organisation like the ones written from now on.
UPDATE alerts SET payload = payload || jsonb_build_object('org_id', org_id)
WHERE org_id <> coalesce(payload->>'org_id', 'default');
DROP INDEX IF EXISTS alerts_patient;
CREATE INDEX IF NOT EXISTS alerts_org_patient ON alerts (org_id, patient_id, fired_at DESC);
UPDATE alert_deliveries
SET payload = jsonb_set(payload, '{alert,org_id}', to_jsonb(org_id))
WHERE org_id <> coalesce(payload->'alert'->>'org_id', 'default');
ALTER TABLE alert_publish ADD COLUMN IF NOT EXISTS org_id text;
UPDATE alert_publish t SET org_id = po.org_id FROM patient_orgs po
WHERE t.org_id IS NULL AND po.patient_id = t.patient_id;
UPDATE alert_publish SET org_id = 'default' WHERE org_id IS NULL;
ALTER TABLE alert_publish ALTER COLUMN org_id SET NOT NULL;
UPDATE alert_publish SET payload = jsonb_set(payload::jsonb, '{alert,org_id}', to_jsonb(org_id))::text
WHERE org_id <> coalesce(payload::jsonb->'alert'->>'org_id', 'default');

-- Rule states: (org_id, patient_id). The state names its organisation ("o", omitted for
-- 'default'); states written before this (version < 4) keep their alerts' ids
-- (alerts.state: legacy_ids). Their partition is recomputed by the worker from the new
-- Kafka key (<org>/<patient>) before it reads any (-1: not yet; streams/db/alerts.py).
ALTER TABLE alert_state ADD COLUMN IF NOT EXISTS org_id text;
UPDATE alert_state SET part = -1 WHERE org_id IS NULL;
UPDATE alert_state t SET org_id = po.org_id FROM patient_orgs po
WHERE t.org_id IS NULL AND po.patient_id = t.patient_id;
UPDATE alert_state SET org_id = 'default' WHERE org_id IS NULL;
ALTER TABLE alert_state ALTER COLUMN org_id SET NOT NULL;
UPDATE alert_state SET state = (state::jsonb || jsonb_build_object('o', org_id))::text
WHERE org_id <> 'default' AND NOT (state::jsonb ? 'o');
ALTER TABLE alert_state DROP CONSTRAINT IF EXISTS alert_state_pkey;
ALTER TABLE alert_state ADD PRIMARY KEY (org_id, patient_id);

-- Rollups (patient_rollups.org_id has been the patient's organisation since 010).
ALTER TABLE patient_rollups DROP CONSTRAINT IF EXISTS patient_rollups_pkey;
ALTER TABLE patient_rollups ADD PRIMARY KEY (org_id, patient_id);
ALTER TABLE patient_daily_adherence ADD COLUMN IF NOT EXISTS org_id text;
UPDATE patient_daily_adherence t SET org_id = po.org_id FROM patient_orgs po
WHERE t.org_id IS NULL AND po.patient_id = t.patient_id;
UPDATE patient_daily_adherence SET org_id = 'default' WHERE org_id IS NULL;
ALTER TABLE patient_daily_adherence ALTER COLUMN org_id SET NOT NULL;
ALTER TABLE patient_daily_adherence DROP CONSTRAINT IF EXISTS patient_daily_adherence_pkey;
ALTER TABLE patient_daily_adherence ADD PRIMARY KEY (org_id, patient_id, local_date);

-- The billing ledger (billing_data_days is a hypertable on local_date: in its key).
ALTER TABLE billing_data_days ADD COLUMN IF NOT EXISTS org_id text;
UPDATE billing_data_days t SET org_id = po.org_id FROM patient_orgs po
WHERE t.org_id IS NULL AND po.patient_id = t.patient_id;
UPDATE billing_data_days SET org_id = 'default' WHERE org_id IS NULL;
ALTER TABLE billing_data_days ALTER COLUMN org_id SET NOT NULL;
ALTER TABLE billing_data_days DROP CONSTRAINT IF EXISTS billing_data_days_pkey;
ALTER TABLE billing_data_days ADD PRIMARY KEY (org_id, patient_id, local_date, episode_id);

ALTER TABLE billing_time_logs ADD COLUMN IF NOT EXISTS org_id text;
UPDATE billing_time_logs t SET org_id = po.org_id FROM patient_orgs po
WHERE t.org_id IS NULL AND po.patient_id = t.patient_id;
UPDATE billing_time_logs SET org_id = 'default' WHERE org_id IS NULL;
ALTER TABLE billing_time_logs ALTER COLUMN org_id SET NOT NULL;
ALTER TABLE billing_time_logs DROP CONSTRAINT IF EXISTS billing_time_logs_pkey;
ALTER TABLE billing_time_logs ADD PRIMARY KEY (org_id, event_id);
DROP INDEX IF EXISTS billing_time_logs_patient;
CREATE INDEX IF NOT EXISTS billing_time_logs_org_patient
    ON billing_time_logs (org_id, patient_id, local_date);

ALTER TABLE billing_episode_events ADD COLUMN IF NOT EXISTS org_id text;
UPDATE billing_episode_events t SET org_id = po.org_id FROM patient_orgs po
WHERE t.org_id IS NULL AND po.patient_id = t.patient_id;
UPDATE billing_episode_events SET org_id = 'default' WHERE org_id IS NULL;
ALTER TABLE billing_episode_events ALTER COLUMN org_id SET NOT NULL;
ALTER TABLE billing_episode_events DROP CONSTRAINT IF EXISTS billing_episode_events_pkey;
ALTER TABLE billing_episode_events ADD PRIMARY KEY (org_id, event_id);
DROP INDEX IF EXISTS billing_episode_events_patient;
CREATE INDEX IF NOT EXISTS billing_episode_events_org_patient
    ON billing_episode_events (org_id, patient_id);

-- Recorded exports: each line names its organisation (the export's), and claim ids are
-- unique per organisation.
ALTER TABLE billing_export_lines ADD COLUMN IF NOT EXISTS org_id text;
UPDATE billing_export_lines l SET org_id = e.org_id FROM billing_exports e
WHERE l.org_id IS NULL AND e.export_id = l.export_id;
ALTER TABLE billing_export_lines ALTER COLUMN org_id SET NOT NULL;
DROP INDEX IF EXISTS billing_export_lines_patient;
CREATE INDEX IF NOT EXISTS billing_export_lines_org_patient
    ON billing_export_lines (org_id, patient_id, export_id);
ALTER TABLE billing_claims DROP CONSTRAINT IF EXISTS billing_claims_pkey;
ALTER TABLE billing_claims ADD PRIMARY KEY (org_id, claim_id);

-- Known patients: (org_id, patient_id), no longer one organisation per patient_id.
ALTER TABLE patient_orgs DROP CONSTRAINT IF EXISTS patient_orgs_pkey;
ALTER TABLE patient_orgs ADD PRIMARY KEY (org_id, patient_id);
DROP INDEX IF EXISTS patient_orgs_org;  -- the key's prefix
