-- Per-organisation intake rule sets (issue 18 item 2: "the rule set is versioned data per
-- organisation"). A version, once stored, is immutable: `rtm intake rules set` refuses a
-- version of the organisation stored with other content. The organisation's rule set in
-- force is its newest; an organisation with none uses the worker's (RTM_INTAKE_RULES_FILE,
-- else the built-in intake-v1). Every routing records the version it used (intakes).
CREATE TABLE IF NOT EXISTS intake_rule_sets (
    org_id      text NOT NULL REFERENCES orgs (org_id),
    version     text NOT NULL,
    rules       jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL,
    PRIMARY KEY (org_id, version)
);
CREATE INDEX IF NOT EXISTS intake_rule_sets_newest ON intake_rule_sets (org_id, created_at DESC);
