-- Issue 20 items 1-2 (docs/billing-readiness.md): the per-organisation stream switch, the
-- fact streams each organisation has sent, and each claim line's readiness as the worker
-- streams it.

-- `rtm billing streams set --org O --stream S --mode M`: one row per organisation and
-- stream; no row is `auto` (the default). Read by the worker (each batch) and by exports
-- and submissions. Each change has its audit row ('billing.streams_set').
CREATE TABLE IF NOT EXISTS billing_stream_modes (
    org_id     text        NOT NULL REFERENCES orgs (org_id),
    stream     text        NOT NULL CHECK (stream IN ('consent', 'poc', 'procedures', 'rpm', 'spend')),
    mode       text        NOT NULL CHECK (mode IN ('auto', 'sent', 'not_sent')),
    set_by     text        NOT NULL,
    set_at     timestamptz NOT NULL,
    PRIMARY KEY (org_id, stream)
);

-- The fact streams an organisation has sent (`auto`: sent once any counting event of the
-- stream carries its org_id): written by the worker with the first such event.
CREATE TABLE IF NOT EXISTS billing_streams_seen (
    org_id         text NOT NULL,
    stream         text NOT NULL,
    first_event_id text NOT NULL,
    PRIMARY KEY (org_id, stream)
);

-- Each claim line's readiness and checks as of the worker's last batch that touched its
-- patient (open periods too; status is not kept, it follows the clock: closes_at). The
-- rows of a patient are replaced whole; `billing.readiness.assess` over the event log
-- recomputes them as of any date.
CREATE TABLE IF NOT EXISTS billing_line_readiness (
    org_id          text        NOT NULL,
    patient_id      text        NOT NULL,
    episode_id      text        NOT NULL,
    cpt             text        NOT NULL,
    date_of_service date        NOT NULL,
    period_start    date        NOT NULL,
    period_end      date        NOT NULL,
    line            jsonb       NOT NULL,   -- the claim line (KX in its modifiers)
    readiness       text        NOT NULL CHECK (readiness IN ('blocked', 'warn', 'ready')),
    checks          text        NOT NULL,   -- sorted, '+'-joined ('' for none)
    price           numeric(12, 2),
    year_to_date    numeric(12, 2),
    closes_at       timestamptz NOT NULL,   -- when its period/month closes (billable)
    computed_at     timestamptz NOT NULL,
    PRIMARY KEY (org_id, patient_id, episode_id, cpt, date_of_service)
);
CREATE INDEX IF NOT EXISTS billing_line_readiness_month
    ON billing_line_readiness (org_id, date_of_service);
