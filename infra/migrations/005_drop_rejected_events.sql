-- Refused events live on the dead-letter topic with their reason; this table was never written.
DROP TABLE IF EXISTS rejected_events;
