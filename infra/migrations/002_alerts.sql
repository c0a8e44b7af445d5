-- Alerts: one row per alert id (deterministic, so a replay upserts instead of firing again).
CREATE TABLE IF NOT EXISTS alerts (
    id                   text PRIMARY KEY,
    patient_id           text NOT NULL,
    episode_id           text NOT NULL,
    clinician_id         text NOT NULL,
    kind                 text NOT NULL,
    severity             text NOT NULL,
    status               text NOT NULL,
    -- open < acknowledged < resolved: an upsert never moves an alert backwards
    status_rank          smallint NOT NULL,
    event_ids            text[] NOT NULL DEFAULT '{}',
    value                double precision,
    threshold            double precision,
    fired_at             timestamptz NOT NULL,
    acknowledged_at      timestamptz,
    acknowledged_by      text,
    resolved_at          timestamptz,
    resolved_by_event_id text,
    payload              jsonb NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS alerts_clinician ON alerts (clinician_id, fired_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_patient ON alerts (patient_id, fired_at DESC);

-- Where a clinician (or a clinic, as a catch-all clinician_id '*') receives alerts.
CREATE TABLE IF NOT EXISTS clinician_webhooks (
    clinician_id text PRIMARY KEY,
    url          text NOT NULL,
    secret       text NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- One delivery per (alert, change); failures stay visible and are retried by a timer.
CREATE TABLE IF NOT EXISTS alert_deliveries (
    alert_id     text NOT NULL,
    change       text NOT NULL,
    clinician_id text NOT NULL,
    status       text NOT NULL,            -- pending | delivered | failed | no_webhook
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text,
    payload      jsonb NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (alert_id, change)
);
CREATE INDEX IF NOT EXISTS alert_deliveries_failed ON alert_deliveries (status) WHERE status = 'failed';
