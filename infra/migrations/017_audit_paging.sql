-- The audit page (issue 17: "the audit filters match exactly only, and 102 rows make a
-- 389 KB page"): one page of an organisation's rows newest first, paged by audit_id
-- (streams.db.access.audit_page), walks this index instead of the whole table.
CREATE INDEX IF NOT EXISTS audit_log_org_id_desc ON audit_log (org_id, audit_id DESC);
