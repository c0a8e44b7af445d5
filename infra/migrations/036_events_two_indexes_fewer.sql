-- Every index of events is maintained by the worker's insert, one batch at a time; two are
-- never read (docs/benchmarks.md, "Worker CPU and the events insert"):
-- * events_org_event_time_key repeats the idempotency ledger: event_ids' primary key
--   (org_id, event_id) is what the insert consults, in the same statement, before it adds a
--   row here, so a second copy of an event cannot reach this table;
-- * events_occurred_at_idx (TimescaleDB's default) serves no query: reads go by organisation
--   and patient or by type (the two indexes kept), and time ranges by chunk exclusion.
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_org_event_time_key;
DROP INDEX IF EXISTS events_occurred_at_idx;
