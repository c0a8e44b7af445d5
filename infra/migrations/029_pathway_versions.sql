-- Published care pathway versions (issue 19 item 3; docs/pathways-and-outcomes.md): an
-- organisation's versions beside the built-in msk-default@1, stored by `rtm pathways
-- publish` (audited). A published version is immutable: publishing the same id and version
-- with other content is refused, and no row is ever updated or deleted (the trigger below
-- refuses it, the application role included). Each episode keeps the version it started on.
CREATE TABLE IF NOT EXISTS pathway_versions (
    org_id        text NOT NULL REFERENCES orgs (org_id),
    pathway_id    text NOT NULL,
    version       integer NOT NULL CHECK (version >= 1),
    content       jsonb NOT NULL,
    published_by  text NOT NULL,
    published_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, pathway_id, version)
);

CREATE OR REPLACE FUNCTION pathway_versions_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'a published pathway version is immutable (publish a new version)';
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS pathway_versions_no_change ON pathway_versions;
CREATE TRIGGER pathway_versions_no_change BEFORE UPDATE OR DELETE ON pathway_versions
    FOR EACH ROW EXECUTE FUNCTION pathway_versions_immutable();
