-- Issue 12: claims a clearinghouse takes (maintained by streams/db/billing.py).

-- Billing profile per organisation and billing NPI (billing.profile.BillingProfile as JSON).
CREATE TABLE IF NOT EXISTS billing_profiles (
    org_id      text        NOT NULL,
    billing_npi text        NOT NULL,
    profile     jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text        NOT NULL,
    PRIMARY KEY (org_id, billing_npi)
);

-- Demographics for claims (PHI), loaded by billing staff; read only by the 837P export.
CREATE TABLE IF NOT EXISTS billing_demographics (
    org_id       text        NOT NULL,
    patient_id   text        NOT NULL,
    demographics jsonb       NOT NULL,  -- billing.demographics.Demographics
    loaded_at    timestamptz NOT NULL DEFAULT now(),
    loaded_by    text        NOT NULL,
    PRIMARY KEY (org_id, patient_id)
);

-- The versioned fee schedule (billing.fees); a correction is a new version, never an update.
CREATE TABLE IF NOT EXISTS billing_fee_schedule (
    version        text          NOT NULL,
    cpt            text          NOT NULL,
    locality       text          NOT NULL,
    effective_from date          NOT NULL,
    effective_to   date,
    amount         numeric(10,2) NOT NULL CHECK (amount >= 0),
    loaded_at      timestamptz   NOT NULL DEFAULT now(),
    loaded_by      text          NOT NULL,
    PRIMARY KEY (version, cpt, locality, effective_from)
);

-- ISA13 / GS06 / ST02: allocated here, never reused (a sequence does not roll back).
CREATE SEQUENCE IF NOT EXISTS billing_x12_control_seq MINVALUE 1 MAXVALUE 999999999 NO CYCLE;

-- A submission is a recorded export that keeps its file (download it again).
ALTER TABLE billing_exports ADD COLUMN IF NOT EXISTS usage text;           -- P / T (X12)
ALTER TABLE billing_exports ADD COLUMN IF NOT EXISTS control_number bigint UNIQUE;
ALTER TABLE billing_exports ADD COLUMN IF NOT EXISTS claim_count integer;
ALTER TABLE billing_exports ADD COLUMN IF NOT EXISTS file_name text;
ALTER TABLE billing_exports ADD COLUMN IF NOT EXISTS file_body text;
ALTER TABLE billing_exports ADD COLUMN IF NOT EXISTS file_sha256 text;
ALTER TABLE billing_exports ADD COLUMN IF NOT EXISTS problems jsonb NOT NULL DEFAULT '[]';
ALTER TABLE billing_export_lines ADD COLUMN IF NOT EXISTS claim_id text;

-- Every claim ever submitted (CLM01), its latest frequency and the payer's claim control
-- number (REF*F8 of its replacements and voids), set by billing staff or from an 835 CLP07.
CREATE TABLE IF NOT EXISTS billing_claims (
    claim_id            text        PRIMARY KEY,
    org_id              text        NOT NULL,
    patient_id          text        NOT NULL,
    billing_npi         text        NOT NULL,
    payer               text        NOT NULL,
    first_export_id     bigint      NOT NULL REFERENCES billing_exports (export_id),
    last_export_id      bigint      NOT NULL REFERENCES billing_exports (export_id),
    last_frequency      text        NOT NULL,
    payer_claim_number  text,
    payer_claim_number_source text,
    payer_claim_number_at timestamptz
);
CREATE INDEX IF NOT EXISTS billing_claims_org ON billing_claims (org_id, patient_id);
