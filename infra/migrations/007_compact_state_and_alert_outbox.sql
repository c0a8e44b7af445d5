-- The alert engine's state is now compact and bounded (alerts.state, version 2): states
-- written by the previous engine are not readable by it. The event log is the truth:
-- they are dropped, and a replay of rtm.events under a new consumer group (RTM_APP_ID)
-- derives them again. (Pre-release: no deployment carries such states yet.)
DELETE FROM alert_state;

-- Outbox for rtm.alerts: alert changes are queued in the batch's transaction and published
-- after the commit (and, after a crash, by the worker's timer), so a kill between commit
-- and publish never loses one. Rows are deleted once Kafka acknowledged them.
CREATE TABLE IF NOT EXISTS alert_publish (
    seq        bigserial PRIMARY KEY,
    patient_id text NOT NULL,
    payload    text NOT NULL,
    queued_at  timestamptz NOT NULL DEFAULT now()
);
