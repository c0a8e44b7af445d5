-- Issue 20 item 4: each submitted line keeps its readiness (docs/billing-readiness.md), and
-- the overrides that let a blocked line out (streams/db/claims.py).

-- The readiness, checks ('+'-joined, sorted) and override of each recorded line as of its
-- submission; NULL on lines recorded before readiness existed and on voids.
ALTER TABLE billing_export_lines ADD COLUMN IF NOT EXISTS readiness text
    CHECK (readiness IN ('blocked', 'warn', 'ready'));
ALTER TABLE billing_export_lines ADD COLUMN IF NOT EXISTS checks text;
ALTER TABLE billing_export_lines ADD COLUMN IF NOT EXISTS override_id bigint;

-- An override: billing staff let a blocked line out, with a reason. Append-only (never
-- edited or deleted); each one has its audit row ('billing.override') written with it.
-- It lets its line out while the line's blocked codes are all among ``codes``.
CREATE TABLE IF NOT EXISTS billing_line_overrides (
    override_id     bigserial   PRIMARY KEY,
    org_id          text        NOT NULL,
    patient_id      text        NOT NULL,
    episode_id      text        NOT NULL,
    cpt             text        NOT NULL,
    date_of_service date        NOT NULL,
    codes           text[]      NOT NULL,
    reason          text        NOT NULL CHECK (length(btrim(reason)) >= 10),
    created_by      text        NOT NULL,
    created_at      timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS billing_line_overrides_org
    ON billing_line_overrides (org_id, patient_id);

CREATE OR REPLACE FUNCTION billing_line_overrides_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'billing_line_overrides is append-only';
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS billing_line_overrides_no_change ON billing_line_overrides;
CREATE TRIGGER billing_line_overrides_no_change BEFORE UPDATE OR DELETE ON billing_line_overrides
    FOR EACH ROW EXECUTE FUNCTION billing_line_overrides_append_only();
DROP TRIGGER IF EXISTS billing_line_overrides_no_truncate ON billing_line_overrides;
CREATE TRIGGER billing_line_overrides_no_truncate BEFORE TRUNCATE ON billing_line_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION billing_line_overrides_append_only();
