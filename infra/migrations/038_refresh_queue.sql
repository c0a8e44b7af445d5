-- Views derived off the ingest path (issues 19 and 20): a batch marks the patients its new
-- events touched in refresh_queue, in its own transaction (one statement); the worker's
-- refresh timer claims marked patients whose marks have settled, assesses their claim lines
-- (billing_line_readiness) and folds their care-pathway episodes (episode_outcomes), then
-- removes the marks it served. A mark made while its patient was being refreshed clears
-- ``claimed_at``, so the patient is refreshed again. See streams/services/refresh.py.
CREATE TABLE IF NOT EXISTS refresh_queue (
    org_id        text NOT NULL,
    patient_id    text NOT NULL,
    first_marked  timestamptz NOT NULL,
    last_marked   timestamptz NOT NULL,
    claimed_at    timestamptz,  -- set while a refresher works on it; NULL: to do
    PRIMARY KEY (org_id, patient_id)
);
CREATE INDEX IF NOT EXISTS refresh_queue_due ON refresh_queue (first_marked);

-- episode_outcomes: one row per episode as `rtm outcomes episodes` prints it as of
-- ``as_of`` (exact values as fractions 'n/d'), with its tasks and decisions as `rtm pathways
-- evaluate` prints them. The outcome report (/ui/outcomes, its exports) groups these rows.
CREATE TABLE IF NOT EXISTS episode_outcomes (
    org_id        text NOT NULL,
    episode_id    text NOT NULL,
    patient_id    text NOT NULL,
    clinician_id  text NOT NULL,
    body_region   text NOT NULL,
    pathway       text NOT NULL,
    version       integer NOT NULL,
    instrument    text NOT NULL,
    start_date    date NOT NULL,
    end_date      date,
    exit_reason   text,
    baseline      text,
    final         text,
    change        text,
    mcid_reached  boolean,
    visits        integer NOT NULL,
    dropped_out   boolean NOT NULL,
    adherence     text,
    tasks         jsonb NOT NULL,
    decisions     jsonb NOT NULL,
    as_of         timestamptz NOT NULL,
    PRIMARY KEY (org_id, episode_id)
);
CREATE INDEX IF NOT EXISTS episode_outcomes_patient ON episode_outcomes (org_id, patient_id);
CREATE INDEX IF NOT EXISTS episode_outcomes_open ON episode_outcomes (as_of) WHERE end_date IS NULL;

-- the episodes' pathway views were never kept before: every patient the log knows is to do
INSERT INTO refresh_queue (org_id, patient_id, first_marked, last_marked)
SELECT DISTINCT org_id, patient_id, now(), now() FROM events
ON CONFLICT DO NOTHING;
