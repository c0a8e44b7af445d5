-- The front door (issue 18): one row per intake (organisation, patient, intake), kept by the
-- worker in each batch's transaction. ``state`` is the intake engine's state (the version in
-- force, the first contact, the event ids folded: intake/engine.py); the other columns are
-- its routing under the rule set named by ``rules_version``, for the queue's order and
-- filters. A row whose intake has not arrived yet (only contacts) has no route.
CREATE TABLE IF NOT EXISTS intakes (
    org_id            text NOT NULL,
    patient_id        text NOT NULL,
    intake_id         text NOT NULL,
    state             jsonb NOT NULL,
    event_id          text,            -- the version in force
    route             text,
    reasons           text[],
    sbst              jsonb,
    body_region       text,
    referral_source   text,
    red_flags         text[],
    nprs              integer,
    timezone          text,
    submitted_at      timestamptz,
    due_at            timestamptz,
    first_contact_at  timestamptz,
    rules_version     text,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, patient_id, intake_id)
);

-- the queue: waiting intakes of an organisation by due time
CREATE INDEX IF NOT EXISTS intakes_waiting
    ON intakes (org_id, due_at)
    WHERE first_contact_at IS NULL AND route IS NOT NULL;
