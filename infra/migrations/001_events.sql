-- Raw events: the event log is the truth; every derived number is recomputable from it.
CREATE EXTENSION IF NOT EXISTS timescaledb;

-- Idempotency ledger. A hypertable's unique keys must include its time column, so the
-- "each event_id stored exactly once" rule lives in this plain table.
CREATE TABLE IF NOT EXISTS event_ids (
    event_id    text PRIMARY KEY,
    occurred_at timestamptz NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS events (
    event_id     text        NOT NULL,
    type         text        NOT NULL,
    patient_id   text        NOT NULL,
    episode_id   text,
    occurred_at  timestamptz NOT NULL,
    -- patient-local date and the producer's own offset (occurred_at is stored in UTC)
    local_date   date        NOT NULL,
    utc_offset_s integer     NOT NULL,
    received_at  timestamptz,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    payload      jsonb       NOT NULL,
    UNIQUE (event_id, occurred_at)
);
SELECT create_hypertable('events', by_range('occurred_at', INTERVAL '7 days'), if_not_exists => TRUE);
CREATE INDEX IF NOT EXISTS events_patient_time ON events (patient_id, occurred_at DESC);
CREATE INDEX IF NOT EXISTS events_type_time ON events (type, occurred_at DESC);

-- Events the worker refused after they reached Kafka (e.g. a second active episode).
CREATE TABLE IF NOT EXISTS rejected_events (
    event_id    text PRIMARY KEY,
    patient_id  text,
    reason      text NOT NULL,
    payload     jsonb NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now()
);
