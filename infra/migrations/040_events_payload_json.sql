-- The events' payload is the JSON the gateway validated against the contract, stored as it was
-- received (streams/db/events.py): `json` keeps that text after checking it is JSON, where
-- `jsonb` parsed every payload into its binary form on the worker's insert and printed it back
-- for every reader (each of them reads `payload::text` and parses it in Python; no query looks
-- inside an event's payload). Measured on this box over 50,000 bench events in batches of 3,600
-- (the database backend's CPU seconds per row, docs/benchmarks.md, sixth round): the insert
-- 26-28 us a row as it was, 19-23 us with COPY, 15-18 us with COPY into `json`.
ALTER TABLE events ALTER COLUMN payload TYPE json USING payload::json;
