-- Issue 20 items 5-6: loaded 835 remittances, each claim's outcome (the month-end queue's
-- Paid / Denied) and each denied service line with its escaped-denial outcome
-- (docs/billing-readiness.md, "835: escaped denials"; streams/db/remits.py).

-- One row per 835 file loaded for an organisation; the same file again is not stored twice.
CREATE TABLE IF NOT EXISTS billing_remits (
    remit_id    bigserial   PRIMARY KEY,
    org_id      text        NOT NULL,
    file_name   text        NOT NULL,
    sha256      text        NOT NULL,
    loaded_by   text        NOT NULL,
    loaded_at   timestamptz NOT NULL,
    UNIQUE (org_id, sha256)
);

-- Each CLP of a loaded 835 that names a claim the organisation submitted.
CREATE TABLE IF NOT EXISTS billing_remit_claims (
    remit_id    bigint      NOT NULL REFERENCES billing_remits (remit_id),
    org_id      text        NOT NULL,
    claim_id    text        NOT NULL,
    status      text        NOT NULL,          -- CLP02
    charge      numeric     NOT NULL,          -- CLP03
    paid        numeric     NOT NULL,          -- CLP04
    denied      boolean     NOT NULL,
    PRIMARY KEY (remit_id, claim_id)
);
CREATE INDEX IF NOT EXISTS billing_remit_claims_org ON billing_remit_claims (org_id, claim_id);

-- Each denied service line (one row per reason code) matched to the submitted line.
CREATE TABLE IF NOT EXISTS billing_remit_denials (
    remit_id        bigint  NOT NULL REFERENCES billing_remits (remit_id),
    org_id          text    NOT NULL,
    claim_id        text    NOT NULL,
    patient_id      text    NOT NULL,
    episode_id      text    NOT NULL,
    cpt             text    NOT NULL,
    date_of_service date    NOT NULL,
    carc            text    NOT NULL,   -- group and reason: CO-50
    rarc            text    NOT NULL,   -- '+'-joined
    gates           text    NOT NULL,   -- '+'-joined
    checks          text    NOT NULL,   -- the line's checks at submission, '+'-joined
    outcome         text    NOT NULL CHECK (outcome IN ('caught', 'escaped', 'uncovered'))
);
CREATE INDEX IF NOT EXISTS billing_remit_denials_org
    ON billing_remit_denials (org_id, date_of_service);
