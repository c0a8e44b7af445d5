-- Home exercise program templates (issue 17 item 3): an organisation's library of programs
-- (name, exercises with dosage, sessions per week). Immutable per version: an edit stores
-- the next version (`rtm programs templates add` with an existing template_id); rows are
-- never updated. A patient's program.updated names the template and version it came from.
CREATE TABLE IF NOT EXISTS program_templates (
    org_id             text NOT NULL REFERENCES orgs (org_id),
    template_id        text NOT NULL,
    version            integer NOT NULL CHECK (version >= 1),
    name               text NOT NULL,
    exercises          jsonb NOT NULL,
    sessions_per_week  integer NOT NULL CHECK (sessions_per_week BETWEEN 0 AND 28),
    created_by         text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, template_id, version)
);
