-- Per-patient rollups for the clinician worklist (issue 10), written by the worker in each
-- batch's transaction (streams/db/rollups.py, computed by alerts/rollup.py), so the first
-- page for thousands of patients reads these indexed tables, not the raw events.

CREATE TABLE IF NOT EXISTS patient_rollups (
    patient_id           text PRIMARY KEY,
    org_id               text NOT NULL DEFAULT 'default',
    last_activity_at     timestamptz,          -- newest patient-data event (occurred_at)
    latest_pain          smallint,
    latest_pain_at       timestamptz,
    pain_baseline        real,                 -- median of the reports before it (7 days)
    open_critical        integer NOT NULL DEFAULT 0,
    open_high            integer NOT NULL DEFAULT 0,
    open_medium          integer NOT NULL DEFAULT 0,
    open_low             integer NOT NULL DEFAULT 0,
    open_adherence_low   integer NOT NULL DEFAULT 0,
    open_inactivity      integer NOT NULL DEFAULT 0,
    open_billing_at_risk integer NOT NULL DEFAULT 0,
    open_alerts          integer NOT NULL DEFAULT 0,
    oldest_open          timestamptz,
    open_kinds           text[] NOT NULL DEFAULT '{}',
    updated_at           timestamptz NOT NULL DEFAULT now()
);
-- The need order of the worklist (and of GET /v1/worklist): an index scan in this order
-- with the scope as a filter stops after the first page.
CREATE INDEX IF NOT EXISTS patient_rollups_need ON patient_rollups
    (org_id, open_critical DESC, open_high DESC, open_adherence_low DESC,
     open_inactivity DESC, open_billing_at_risk DESC, oldest_open, patient_id);

-- Trailing 7-day adherence by patient-local day (the sparkline and the patient chart).
CREATE TABLE IF NOT EXISTS patient_daily_adherence (
    patient_id   text NOT NULL,
    local_date   date NOT NULL,
    prescribed   real NOT NULL,
    completed    integer NOT NULL,
    adherence_7d real,
    PRIMARY KEY (patient_id, local_date)
);

-- The live stream (server-sent events) polls alerts changed since its cursor.
CREATE INDEX IF NOT EXISTS alerts_updated ON alerts (updated_at);

-- Patients stored before this migration: open alerts and last activity from what is
-- stored (once); the stream keeps them from here on.
INSERT INTO patient_rollups (patient_id, org_id, open_critical, open_high, open_medium,
                             open_low, open_adherence_low, open_inactivity,
                             open_billing_at_risk, open_alerts, oldest_open, open_kinds)
SELECT a.patient_id, min(a.org_id),
       count(*) FILTER (WHERE a.severity = 'critical'),
       count(*) FILTER (WHERE a.severity = 'high'),
       count(*) FILTER (WHERE a.severity = 'medium'),
       count(*) FILTER (WHERE a.severity = 'low'),
       count(*) FILTER (WHERE a.kind = 'adherence_low'),
       count(*) FILTER (WHERE a.kind = 'inactivity'),
       count(*) FILTER (WHERE a.kind = 'billing_at_risk'),
       count(*), min(a.fired_at), array_agg(DISTINCT a.kind ORDER BY a.kind)
FROM alerts a WHERE a.status = 'open' GROUP BY a.patient_id
ON CONFLICT DO NOTHING;
INSERT INTO patient_rollups (patient_id, org_id)
SELECT patient_id, org_id FROM patient_orgs ON CONFLICT DO NOTHING;
UPDATE patient_rollups r SET last_activity_at = e.last
FROM (SELECT patient_id, max(occurred_at) AS last FROM events
      WHERE type IN ('exercise.completed', 'pain.reported', 'symptom.reported')
      GROUP BY patient_id) e
WHERE e.patient_id = r.patient_id;
