-- The clinic's time zone (issue 17 item 1, one time convention): every time the dashboard
-- shows is in its organisation's zone, with a relative age. Set with
-- `rtm orgs add ORG --name N --timezone ZONE` or `rtm orgs timezone ORG ZONE`; an
-- organisation that never set one reads UTC (and the pages say "UTC").
ALTER TABLE orgs ADD COLUMN IF NOT EXISTS timezone text NOT NULL DEFAULT 'UTC';
