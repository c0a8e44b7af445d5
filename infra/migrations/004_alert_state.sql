-- Per-patient rule state of the alerts agent, written in the same transaction as the
-- alerts it produced (so a replay after a crash can neither lose nor repeat an alert).
-- `part` is the rtm.events partition of the patient: a timer tick on partition p
-- evaluates exactly the patients of p.
CREATE TABLE IF NOT EXISTS alert_state (
    patient_id text PRIMARY KEY,
    part       integer NOT NULL,
    rev        bigint NOT NULL,
    state      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS alert_state_part ON alert_state (part);
