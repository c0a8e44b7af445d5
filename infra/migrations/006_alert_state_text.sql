-- The alert state is written whole, for every touched patient, every batch, and only ever
-- read back whole by the worker: store the JSON as text, uncompressed, so PostgreSQL
-- neither parses it into jsonb nor pglz-compresses it on each write (profiled: rtm bench).
ALTER TABLE alert_state ALTER COLUMN state TYPE text USING state::text;
ALTER TABLE alert_state ALTER COLUMN state SET STORAGE EXTERNAL;
