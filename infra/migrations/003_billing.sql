-- Billing ledger (maintained by streams/db/billing.py) and the record of claim exports.
-- Every table is a set keyed so that a re-delivered event cannot count twice:
-- writes are INSERT ... ON CONFLICT DO NOTHING. The ledger loads back into
-- billing.state.PatientBillingState exactly as the offline fold builds it.

-- Data days: (patient, patient-local date, episode named by the event or '').
-- Time-series and the largest table: a hypertable on the local date (the time column is
-- part of the key, as TimescaleDB requires for unique indexes).
CREATE TABLE IF NOT EXISTS billing_data_days (
    patient_id  text        NOT NULL,
    local_date  date        NOT NULL,
    episode_id  text        NOT NULL DEFAULT '',
    first_event_id text     NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (patient_id, local_date, episode_id)
);
SELECT create_hypertable('billing_data_days', by_range('local_date', INTERVAL '90 days'),
                         if_not_exists => TRUE);

-- Clinician time logs, one row per event_id (their minutes add up, so a set of dates
-- would not do). Small: a plain table keyed by event_id.
CREATE TABLE IF NOT EXISTS billing_time_logs (
    event_id       text        PRIMARY KEY,
    patient_id     text        NOT NULL,
    episode_id     text,
    local_date     date        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    utc_offset_s   integer     NOT NULL,  -- the producer's offset, to rebuild occurred_at exactly
    minutes        integer     NOT NULL,
    clinician_role text        NOT NULL,
    interactive    boolean     NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS billing_time_logs_patient ON billing_time_logs (patient_id, local_date);

-- episode.started / program.updated / episode.ended, as the contract JSON (without the
-- gateway's received_at, which billing does not use).
CREATE TABLE IF NOT EXISTS billing_episode_events (
    event_id    text        PRIMARY KEY,
    patient_id  text        NOT NULL,
    type        text        NOT NULL,
    episode_id  text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    payload     jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS billing_episode_events_patient ON billing_episode_events (patient_id);

-- What was exported for billing, when and by whom. Previews are not recorded.
CREATE TABLE IF NOT EXISTS billing_exports (
    export_id   bigserial   PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    as_of       timestamptz NOT NULL,
    date_from   date        NOT NULL,
    date_to     date        NOT NULL,
    format      text        NOT NULL,
    line_count  integer     NOT NULL,
    conventions text        NOT NULL
);

CREATE TABLE IF NOT EXISTS billing_export_lines (
    export_id       bigint  NOT NULL REFERENCES billing_exports (export_id),
    line_no         integer NOT NULL,
    patient_id      text    NOT NULL,
    episode_id      text    NOT NULL,
    cpt             text    NOT NULL,
    date_of_service date    NOT NULL,
    period_start    date    NOT NULL,
    status          text    NOT NULL,
    line            jsonb   NOT NULL,  -- the whole billing.rules.ClaimLine
    PRIMARY KEY (export_id, line_no)
);
CREATE INDEX IF NOT EXISTS billing_export_lines_patient ON billing_export_lines (patient_id, export_id);
